import ClusterRuntime
import Foundation
import Model

/// SUDER's update: the gradient of the preference loss (SimPO, or DPO against a frozen reference)
/// over all ranks' pairs, one direction at a time so each direction's global gradient norm can be
/// logged, then one clipped AdamW step on their sum.
final class PreferenceTrainer {
    let session: TrainingSession
    let settings: SuderSettings
    /// DPO's frozen reference model; nil for SimPO.
    let reference: Transformer?
    /// The first direction's allreduced gradient while the second one is computed: allocated once.
    private var firstDirectionGradients: [Float] = []
    /// The reference's log-probabilities of this round's pair chunks, per direction: every step of
    /// a round scores the same sequences with the same frozen model, so they are computed once.
    private var referenceLogProbs: [Direction: [[Double]]] = [:]

    init(session: TrainingSession, settings: SuderSettings, reference: Transformer?) {
        self.session = session
        self.settings = settings
        self.reference = reference
    }

    /// Call before a round's first step: the round brings new pairs.
    func beginRound() {
        referenceLogProbs = [:]
    }

    /// One optimizer step over this rank's `pairs`; `globalCounts` holds each direction's pair
    /// count over all ranks (each direction's loss is its mean over them).
    func step(pairs: [PreferencePair], globalCounts: [Int], sums: inout MetricSums, times: inout RoundTimes) throws {
        let model = session.model, comm = session.job.comm
        let start = DispatchTime.now().uptimeNanoseconds
        var communication = 0.0
        let active = Direction.allCases.enumerated().filter { globalCounts[$0.offset] > 0 }
        for (position, (index, direction)) in active.enumerated() {
            model.zeroGradients()
            accumulateGradient(
                of: pairs.filter { $0.direction == direction }, direction: direction,
                globalCount: globalCounts[index], sums: &sums)
            communication += try session.allreduceGradients(what: "suder \(direction.rawValue)")
            // Every rank holds the same global norm: count it once.
            let norm = l2Norm(UnsafeBufferPointer(model.gradients))
            sums.add(.gradNorm, direction, comm.isRoot ? norm : 0, count: comm.isRoot ? 1 : 0)
            guard active.count > 1 else { continue }
            if position == 0 {
                if firstDirectionGradients.isEmpty { firstDirectionGradients = Array(repeating: 0, count: model.parameterCount) }
                _ = firstDirectionGradients.withUnsafeMutableBufferPointer { $0.update(from: model.gradients) }
            } else {
                for i in 0..<model.parameterCount { model.gradients[i] = firstDirectionGradients[i] + model.gradients[i] }
            }
        }
        times.communication += communication
        times.update += elapsedSeconds(since: start) - communication
        guard !active.isEmpty else { return }
        clipGradients(model.gradients, maxNorm: settings.gradClip)
        session.optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: settings.learningRate)
    }

    /// Adds this rank's share of `direction`'s loss gradient (its pairs, in chunks that fit the
    /// model's batch) to the model's gradients, and its TRL metrics to `sums`.
    private func accumulateGradient(of mine: [PreferencePair], direction: Direction, globalCount: Int, sums: inout MetricSums) {
        let model = session.model
        let chunkPairs = max(1, model.batchCapacity / 2)
        let scale = settings.lossWeight[direction]! / Double(globalCount)
        for (chunkIndex, start) in stride(from: 0, to: mine.count, by: chunkPairs).enumerated() {
            let chunk = mine[start..<min(start + chunkPairs, mine.count)]
            // Sequences alternate chosen, rejected; the completion is weighted, the context not.
            let sequences = chunk.flatMap { [$0.context + $0.chosen, $0.context + $0.rejected] }
            let batch = TokenBatch(sequences: sequences, targetStarts: chunk.flatMap { [$0.context.count, $0.context.count] })
            let referenceSums = reference.map { referenceLogProbs(direction, chunk: chunkIndex, batch: batch, reference: $0) }
            let logps = model.forward(batch)
            let lengths = batch.weightedCounts.map(Double.init)
            let (chosen, rejected) = (evenElements(logps), oddElements(logps))
            let (chosenLengths, rejectedLengths) = (evenElements(lengths), oddElements(lengths))
            let losses: PreferenceLosses
            if let referenceSums {
                losses = dpoLoss(
                    chosenLogProbs: chosen, rejectedLogProbs: rejected, referenceChosenLogProbs: evenElements(referenceSums),
                    referenceRejectedLogProbs: oddElements(referenceSums), beta: settings.dpoBeta)
            } else {
                losses = simpoLoss(
                    chosenLogProbs: chosen, chosenLengths: chosenLengths, rejectedLogProbs: rejected,
                    rejectedLengths: rejectedLengths, beta: settings.simpoBeta, gamma: settings.simpoGamma)
            }
            // d/d logp_w of chosenNLL * (-logp_w / |y_w|).
            let chosenCoefficients = zip(losses.chosenGradients, chosenLengths).map { $0 - settings.chosenNLL / $1 }
            model.backward(sequenceCoefficients: zip(chosenCoefficients, losses.rejectedGradients).flatMap { [Float($0 * scale), Float($1 * scale)] })
            for i in 0..<chunk.count {
                sums.add(.loss, direction, losses.losses[i] - settings.chosenNLL * chosen[i] / chosenLengths[i])
                sums.add(.chosenReward, direction, losses.chosenRewards[i])
                sums.add(.rejectedReward, direction, losses.rejectedRewards[i])
                sums.add(.margin, direction, losses.chosenRewards[i] - losses.rejectedRewards[i])
                sums.add(.accuracy, direction, losses.chosenRewards[i] > losses.rejectedRewards[i] ? 1 : 0)
                sums.add(.chosenLogp, direction, chosen[i] / chosenLengths[i])
                sums.add(.rejectedLogp, direction, rejected[i] / rejectedLengths[i])
            }
        }
    }

    /// The reference's summed log-probabilities of a chunk's sequences, computed at the round's
    /// first step and reused by the others.
    private func referenceLogProbs(_ direction: Direction, chunk: Int, batch: TokenBatch, reference: Transformer) -> [Double] {
        if let cached = referenceLogProbs[direction], chunk < cached.count { return cached[chunk] }
        let sums = reference.forward(batch)
        referenceLogProbs[direction, default: []].append(sums)
        return sums
    }
}

private func evenElements<T>(_ values: [T]) -> [T] { stride(from: 0, to: values.count, by: 2).map { values[$0] } }
private func oddElements<T>(_ values: [T]) -> [T] { stride(from: 1, to: values.count, by: 2).map { values[$0] } }
