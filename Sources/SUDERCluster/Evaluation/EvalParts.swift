import ClusterRuntime
import Foundation
import World

/// What the eval stage finished for one model, kept in `<run-dir>/eval/parts/<model>.json` so a
/// stopped eval (SIGUSR1 / SIGTERM, exit 85) resumes after its last finished part. The sample
/// folders of a model's GenEval-mini are written before its part records them.
struct EvalPart: Codable, Equatable {
    /// The checkpoint evaluated: a part of another checkpoint is not reused.
    var checkpoint: String
    /// Correct images per scored prompt, once GenEval-mini is done.
    var correctPerRecord: [Int]?
    /// Captions and POPE-mini, once done.
    var understanding: UnderstandingScores?
    /// Time spent on the parts so far.
    var seconds = 0.0
}

/// Caption accuracy and POPE-mini of one model, as the summary records them.
struct UnderstandingScores: Codable, Equatable {
    var captionAccuracy: Double
    var captionImages: Int
    /// By POPE split.
    var pope: [String: PopeScores]

    init(_ run: UnderstandingRun) {
        captionAccuracy = run.captionAccuracy
        captionImages = run.captionCount
        var pope: [String: PopeScores] = [:]
        for (split, metrics) in run.pope {
            pope[split.rawValue] = PopeScores(
                probes: metrics.count, accuracy: metrics.accuracy, precision: metrics.precision,
                recall: metrics.recall, f1: metrics.f1, yesRatio: metrics.yesRatio)
        }
        self.pope = pope
    }
}

/// The parts directory. Rank 0 reads and writes; every rank learns what is done.
struct EvalParts {
    static let directoryName = "parts"
    let directory: URL
    let comm: Communicator

    private func file(_ model: EvaluatedModel) -> URL { directory.appendingPathComponent("\(model.rawValue).json") }

    /// The finished parts of `model` for `checkpoint`; none if there are none, they belong to
    /// another checkpoint, or the file cannot be read (the parts are then redone). Collective.
    func read(_ model: EvaluatedModel, checkpoint: String) throws -> EvalPart {
        let url = file(model)
        let bytes = try comm.rootDecides { () -> [UInt8] in
            guard let data = try? Data(contentsOf: url) else { return [] }
            return Array(data)
        }
        let fresh = EvalPart(checkpoint: checkpoint)
        guard !bytes.isEmpty, let part = try? JSONDecoder().decode(EvalPart.self, from: Data(bytes)), part.checkpoint == checkpoint else {
            return fresh
        }
        return part
    }

    /// Rank 0 writes `part` atomically. Collective.
    func write(_ part: EvalPart, for model: EvaluatedModel) throws {
        try comm.rootDecides {
            do {
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                try writeFileAtomically(try encoder.encode(part), to: file(model))
            } catch {
                throw AllRanksError("eval: cannot keep the finished part in \(file(model).path): \(error)", exitCode: 1)
            }
        }
    }

    /// Once the summary and DONE marker are written. Collective.
    func remove() throws {
        try comm.rootDecides { try? FileManager.default.removeItem(at: directory) }
    }
}

/// The GenEval-mini summary of `correctPerRecord` correct images of `imagesPerPrompt` per record.
func genEvalSummary(_ correctPerRecord: [Int], records: [MetadataRecord], imagesPerPrompt: Int) -> GenEvalSummary {
    var summary = GenEvalSummary()
    for (record, correct) in zip(records, correctPerRecord) {
        for k in 0..<imagesPerPrompt { summary.add(category: record.tag, correct: k < correct) }
    }
    return summary
}
