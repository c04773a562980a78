import XCTest

@testable import Model

let tinyConfig = ModelConfig(vocabSize: 23, dModel: 16, nLayers: 2, nHeads: 2, ffnHidden: 24, maxSeq: 12)

func randomSequences(count: Int, lengths: ClosedRange<Int>, vocab: Int, seed: UInt64) -> [[Int32]] {
    var rng = Xoshiro256RNG(seed: seed)
    return (0..<count).map { _ in
        let n = Int.random(in: lengths, using: &rng)
        return (0..<n).map { _ in Int32.random(in: 0..<Int32(vocab), using: &rng) }
    }
}

final class TransformerTests: XCTestCase {
    func testParameterTableIsContiguousAndNamed() {
        for tied in [false, true] {
            var config = tinyConfig
            config.tiedHead = tied
            let model = Transformer(config: config, seed: 1)
            var cursor = 0
            for entry in model.parameterTable {
                XCTAssertEqual(entry.offset, cursor, entry.name)
                cursor += entry.count
            }
            XCTAssertEqual(cursor, model.parameterCount)
            XCTAssertEqual(model.entry(named: "output.weight") == nil, tied)
            XCTAssertEqual(model.entry(named: "layers.1.feed_forward.w3.weight")?.shape, [24, 16])
            // Same seed, same parameters.
            let again = Transformer(config: config, seed: 1)
            XCTAssertEqual(Array(model.parameters), Array(again.parameters))
        }
    }

    /// Whole-model gradient against central differences of the Float forward. Float rounding of
    /// the objective (~1e-6 relative) over h = 1e-2 limits agreement to ~1e-3 of the gradient
    /// scale, so a 2e-2 tolerance still catches any wiring error (those are O(1) wrong).
    func testModelGradientMatchesFiniteDifferences() {
        for tied in [false, true] {
            var config = tinyConfig
            config.tiedHead = tied
            config.initStd = 0.3  // large weights so every path carries signal
            let model = Transformer(config: config, seed: 3, batchCapacity: 3)
            let sequences = randomSequences(count: 3, lengths: 5...9, vocab: config.vocabSize, seed: 5)
            var batch = TokenBatch(sequences: sequences, targetStarts: [1, 3, 2])
            batch.weights[4] = 0.5
            let coefficients: [Float] = [-1, 0.5, -2]
            func objective() -> Double {
                zip(model.forward(batch), coefficients).reduce(0) { $0 + $1.0 * Double($1.1) }
            }
            model.zeroGradients()
            model.forward(batch)
            model.backward(sequenceCoefficients: coefficients)
            var rng = Xoshiro256RNG(seed: 9)
            for entry in model.parameterTable {
                let scale = max(1e-3, (0..<entry.count).map { abs(model.gradients[entry.offset + $0]) }.max()!)
                for _ in 0..<3 {
                    let i = entry.offset + Int.random(in: 0..<entry.count, using: &rng)
                    let saved = model.parameters[i]
                    let h: Float = 1e-2
                    model.parameters[i] = saved + h; let plus = objective()
                    model.parameters[i] = saved - h; let minus = objective()
                    model.parameters[i] = saved
                    let numeric = (plus - minus) / Double(2 * h)
                    XCTAssertEqual(
                        Double(model.gradients[i]), numeric, accuracy: 2e-2 * Double(scale),
                        "\(entry.name) tied=\(tied)")
                }
            }
        }
    }

    /// Sequences 3 and 4 share their prompts with 0 and 1, so they decode over copied keys and values.
    func testKVCacheLogitsMatchFullForward() {
        let model = Transformer(config: tinyConfig, seed: 11, batchCapacity: 5)
        var sequences = randomSequences(count: 5, lengths: 12...12, vocab: tinyConfig.vocabSize, seed: 2)
        for (s, shared) in [(3, 0), (4, 1)] { sequences[s].replaceSubrange(0..<4, with: sequences[shared][0..<4]) }
        let full = model.logits(TokenBatch(sequences: sequences, targetStarts: [1, 1, 1, 1, 1]))
        let sampler = Sampler(model: model)
        let cached = sampler.cachedLogits(sequences: sequences, promptLength: 4)
        let V = tinyConfig.vocabSize, T = 12
        var worst: Float = 0
        for s in 0..<5 {
            XCTAssertEqual(cached[s].count, T - 4)
            for (k, row) in cached[s].enumerated() {
                let t = 3 + k
                for v in 0..<V { worst = max(worst, abs(row[v] - full[(s * T + t) * V + v])) }
            }
        }
        XCTAssertLessThan(worst, 1e-4)
    }

    /// A sequence without a weight sends no row through the head: it scores 0 and, alone, gives no
    /// gradient; beside weighted sequences it leaves their sums as they are alone.
    func testRowsWithoutWeightSkipTheHead() {
        let model = Transformer(config: tinyConfig, seed: 6, batchCapacity: 3)
        let sequences = randomSequences(count: 3, lengths: 6...9, vocab: tinyConfig.vocabSize, seed: 12)
        var unweighted = TokenBatch(sequences: [sequences[1]], targetStarts: [1])
        unweighted.weights = unweighted.weights.map { _ in 0 }
        model.zeroGradients()
        XCTAssertEqual(model.forward(unweighted), [0])
        model.backward(sequenceCoefficients: [1])
        XCTAssertEqual(model.gradients.reduce(0) { max($0, abs($1)) }, 0)
        var mixed = TokenBatch(sequences: sequences, targetStarts: [2, 1, 5])
        for t in 0..<mixed.seqLen { mixed.weights[mixed.seqLen + t] = 0 }
        let sums = model.forward(mixed)
        XCTAssertEqual(sums[1], 0)
        for b in [0, 2] {
            let alone = model.forward(TokenBatch(sequences: [sequences[b]], targetStarts: [b == 0 ? 2 : 5]))[0]
            XCTAssertEqual(sums[b], alone, accuracy: 1e-4)
            XCTAssertLessThan(sums[b], 0)
        }
    }

    func testScoreMatchesForwardAndChunks() {
        let model = Transformer(config: tinyConfig, seed: 4, batchCapacity: 2)
        let contexts = randomSequences(count: 5, lengths: 1...4, vocab: tinyConfig.vocabSize, seed: 8)
        let targets = randomSequences(count: 5, lengths: 1...6, vocab: tinyConfig.vocabSize, seed: 9)
        let scores = model.score(contexts: contexts, targets: targets)
        XCTAssertEqual(scores.count, 5)
        for i in 0..<5 {
            // Same sequence alone in a batch of one, and by hand from the logits.
            let sequence = contexts[i] + targets[i]
            let single = model.forward(TokenBatch(sequences: [sequence], targetStarts: [contexts[i].count]))[0]
            XCTAssertEqual(scores[i].sum, single, accuracy: 1e-4)
            XCTAssertEqual(scores[i].count, Double(targets[i].count))
            XCTAssertEqual(scores[i].mean, single / Double(targets[i].count), accuracy: 1e-4)
            let logits = model.logits(TokenBatch(sequences: [sequence], targetStarts: [1]))
            let V = tinyConfig.vocabSize
            var byHand = 0.0
            for t in contexts[i].count..<sequence.count {
                let row = logits[((t - 1) * V)..<(t * V)].map(Double.init)
                let logSum = log(row.map { exp($0) }.reduce(0, +))
                byHand += row[Int(sequence[t])] - logSum
            }
            XCTAssertEqual(scores[i].sum, byHand, accuracy: 1e-4)
            XCTAssertLessThan(scores[i].sum, 0)
        }
    }

    func testTrainingStepsLowerLossAndChangeEveryParameter() {
        let model = Transformer(config: tinyConfig, seed: 5, batchCapacity: 4)
        let optimizer = AdamW(parameterTable: model.parameterTable, parameterCount: model.parameterCount, weightDecay: 0.01)
        let sequences = randomSequences(count: 4, lengths: 8...12, vocab: tinyConfig.vocabSize, seed: 6)
        let batch = TokenBatch(sequences: sequences, targetStarts: [1, 1, 1, 1])
        let targetCount = Float(batch.weightedCounts.reduce(0, +))
        let initial = Array(model.parameters)
        var losses: [Double] = []
        for _ in 0..<20 {
            model.zeroGradients()
            let sums = model.forward(batch)
            losses.append(-sums.reduce(0, +) / Double(targetCount))
            model.backward(sequenceCoefficients: Array(repeating: -1 / targetCount, count: 4))
            let norm = clipGradients(model.gradients, maxNorm: 1)
            XCTAssertTrue(norm.isFinite && norm > 0)
            optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: 3e-3)
        }
        XCTAssertLessThan(losses.last!, losses.first! - 0.5, "losses \(losses)")
        for entry in model.parameterTable {
            let changed = (entry.offset..<(entry.offset + entry.count)).filter { model.parameters[$0] != initial[$0] }.count
            XCTAssertEqual(changed, entry.count, "\(entry.name): \(entry.count - changed) unchanged")
        }
        XCTAssertEqual(optimizer.step, 20)
    }

    /// SimPO through the shared backward: a few steps on one pair raise the chosen reward over
    /// the rejected one.
    func testSimPOStepsSeparateThePair() {
        let model = Transformer(config: tinyConfig, seed: 12, batchCapacity: 2)
        let optimizer = AdamW(parameterTable: model.parameterTable, parameterCount: model.parameterCount, weightDecay: 0)
        let prompt: [Int32] = [1, 5, 7]
        let chosen: [Int32] = [9, 10, 11, 2], rejected: [Int32] = [12, 13, 2]
        let batch = TokenBatch(sequences: [prompt + chosen, prompt + rejected], targetStarts: [3, 3])
        var margins: [Double] = []
        for _ in 0..<10 {
            model.zeroGradients()
            let logps = model.forward(batch)
            let counts = batch.weightedCounts.map(Double.init)
            let loss = simpoLoss(
                chosenLogProbs: [logps[0]], chosenLengths: [counts[0]],
                rejectedLogProbs: [logps[1]], rejectedLengths: [counts[1]])
            margins.append(loss.meanMargin)
            model.backward(sequenceCoefficients: [Float(loss.chosenGradients[0]), Float(loss.rejectedGradients[0])])
            optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: 1e-2)
        }
        XCTAssertGreaterThan(margins.last!, margins.first! + 1, "margins \(margins)")
    }
}
