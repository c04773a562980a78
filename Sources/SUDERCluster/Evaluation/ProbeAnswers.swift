import Foundation
import Model
import World

extension UnifiedModelTasks {
    /// log p("yes") and log p("no") as the next word after `BOS BOI <image> EOI <question>`: how
    /// POPE-mini answers a probe (yes when it is the likelier of the two).
    func probeAnswerLogProbabilities(images: [[Int32]], questions: [[Int32]]) throws -> [(yes: Double, no: Double)] {
        let yes = try vocabulary.id(of: "yes"), no = try vocabulary.id(of: "no")
        let contexts = zip(images, questions).map { vocabulary.probePrefix(image: $0) + $1 }
        let yesScores = model.score(contexts: contexts, targets: contexts.map { _ in [yes] })
        let noScores = model.score(contexts: contexts, targets: contexts.map { _ in [no] })
        return zip(yesScores, noScores).map { ($0.sum, $1.sum) }
    }
}
