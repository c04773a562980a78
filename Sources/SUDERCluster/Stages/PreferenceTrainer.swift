import ClusterRuntime
import Foundation
import Model

/// SUDER's update: the gradient of the round's loss (SimPO, or DPO against a frozen reference, on
/// pairs; GRPO on whole groups) over all ranks' examples, one direction at a time so each
/// direction's global gradient norm can be logged, then one clipped AdamW step on their sum.
final class PreferenceTrainer {
    let session: TrainingSession
    let settings: SuderSettings
    /// The frozen starting model of DPO and of GRPO's KL penalty; nil otherwise.
    let reference: Transformer?
    /// The first direction's allreduced gradient while the second one is computed: allocated once.
    private var firstDirectionGradients: [Float] = []
    /// Every step of a round scores the same sequences: the frozen reference's log-probabilities
    /// are computed once a round, and GRPO's ratios are taken against the first step's.
    private var referenceLogProbs = RoundChunkCache(), firstStepLogProbs = RoundChunkCache()

    init(session: TrainingSession, settings: SuderSettings, reference: Transformer?) {
        self.session = session
        self.settings = settings
        self.reference = reference
    }

    /// Call before a round's first step: the round brings new examples.
    func beginRound() {
        referenceLogProbs = RoundChunkCache()
        firstStepLogProbs = RoundChunkCache()
    }

    /// One optimizer step over this rank's `examples`; `globalCounts` holds each direction's
    /// example count over all ranks (each direction's loss is its mean over them), `scales` each
    /// direction's factor on top of its loss weight.
    func step(_ examples: RoundExamples, globalCounts: [Int], scales: [Direction: Double], sums: inout MetricSums, times: inout RoundTimes) throws {
        let model = session.model, comm = session.job.comm
        let start = DispatchTime.now().uptimeNanoseconds
        var communication = 0.0
        let active = Direction.allCases.enumerated().filter { globalCounts[$0.offset] > 0 }
        for (position, (index, direction)) in active.enumerated() {
            model.zeroGradients()
            let scale = settings.lossWeight[direction]! * scales[direction, default: 1] / Double(globalCounts[index])
            switch examples {
            case .pairs(let pairs):
                accumulatePreferenceGradient(of: pairs.filter { $0.direction == direction }, direction: direction, scale: scale, sums: &sums)
            case .groups(let groups):
                accumulatePolicyGradient(of: groups.filter { $0.direction == direction }, direction: direction, scale: scale, sums: &sums)
            }
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

    /// Adds this rank's share of `direction`'s preference-loss gradient (its pairs, in chunks that
    /// fit the model's batch), times `scale`, to the model's gradients, and its TRL metrics to `sums`.
    private func accumulatePreferenceGradient(of mine: [PreferencePair], direction: Direction, scale: Double, sums: inout MetricSums) {
        let model = session.model
        let chunkPairs = max(1, model.batchCapacity / 2)
        for (chunkIndex, start) in stride(from: 0, to: mine.count, by: chunkPairs).enumerated() {
            let chunk = mine[start..<min(start + chunkPairs, mine.count)]
            // Sequences alternate chosen, rejected; the completion is weighted, the context not.
            let sequences = chunk.flatMap { [$0.context + $0.chosen, $0.context + $0.rejected] }
            let batch = TokenBatch(sequences: sequences, targetStarts: chunk.flatMap { [$0.context.count, $0.context.count] })
            let referenceSums = reference.map { frozen in referenceLogProbs.value(direction, chunk: chunkIndex) { frozen.forward(batch) } }
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

    /// GRPO: adds this rank's share of `direction`'s policy-gradient loss (every sample of its
    /// groups, in chunks that fit the model's batch), times `scale`, to the model's gradients, and
    /// its metrics to `sums`.
    private func accumulatePolicyGradient(of groups: [SampleGroup], direction: Direction, scale: Double, sums: inout MetricSums) {
        let model = session.model
        let samples = groups.flatMap { group in zip(group.completions, group.advantages).map { (context: group.context, completion: $0, advantage: $1) } }
        for (chunkIndex, start) in stride(from: 0, to: samples.count, by: model.batchCapacity).enumerated() {
            let chunk = samples[start..<min(start + model.batchCapacity, samples.count)]
            let batch = TokenBatch(sequences: chunk.map { $0.context + $0.completion }, targetStarts: chunk.map { $0.context.count })
            let referenceSums = reference.map { frozen in referenceLogProbs.value(direction, chunk: chunkIndex) { frozen.forward(batch) } }
            let logps = model.forward(batch)
            let old = firstStepLogProbs.value(direction, chunk: chunkIndex) { logps }
            let lengths = batch.weightedCounts.map(Double.init)
            let advantages = chunk.map { $0.advantage }
            let losses = grpoLoss(
                logProbs: logps, lengths: lengths, advantages: advantages, oldLogProbs: old, referenceLogProbs: referenceSums,
                klWeight: settings.grpoKL, clip: settings.grpoClip)
            model.backward(sequenceCoefficients: losses.gradients.map { Float($0 * scale) })
            for i in 0..<chunk.count {
                sums.add(.loss, direction, losses.losses[i])
                sums.add(.kl, direction, losses.kl[i])
                sums.add(.advantageMagnitude, direction, abs(advantages[i]))
                if advantages[i] != 0 { sums.add(advantages[i] > 0 ? .chosenLogp : .rejectedLogp, direction, logps[i] / lengths[i]) }
            }
            sums.add(.clipRatio, direction, Double(losses.clipped), count: Double(chunk.count))
        }
    }
}

/// Per-direction, per-chunk values computed at a round's first step and reused by its others
/// (chunks are visited in the same order every step).
struct RoundChunkCache {
    private var chunks: [Direction: [[Double]]] = [:]

    mutating func value(_ direction: Direction, chunk: Int, compute: () -> [Double]) -> [Double] {
        if let cached = chunks[direction], chunk < cached.count { return cached[chunk] }
        let values = compute()
        chunks[direction, default: []].append(values)
        return values
    }
}

private func evenElements<T>(_ values: [T]) -> [T] { stride(from: 0, to: values.count, by: 2).map { values[$0] } }
private func oddElements<T>(_ values: [T]) -> [T] { stride(from: 1, to: values.count, by: 2).map { values[$0] } }
