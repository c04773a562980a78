import CKernels
import XCTest

@testable import Model

final class SamplerTests: XCTestCase {
    let prompts: [[Int32]] = [[1, 4, 6], [2, 3], [5, 9, 8, 7], [1]]

    func testSeededAndIndependentOfBatchComposition() {
        let model = Transformer(config: tinyConfig, seed: 21)
        let sampler = Sampler(model: model)
        let seeds: [UInt64] = [100, 101, 102, 103]
        let all = sampler.sample(prompts: prompts, maxNewTokens: 6, allowedRange: 0..<23, temperature: 1, topK: 0, seeds: seeds)
        XCTAssertEqual(all, sampler.sample(prompts: prompts, maxNewTokens: 6, allowedRange: 0..<23, seeds: seeds))
        // Each sequence alone, and the batch reversed, give the same tokens per sequence.
        for i in prompts.indices {
            let alone = sampler.sample(prompts: [prompts[i]], maxNewTokens: 6, allowedRange: 0..<23, seeds: [seeds[i]])
            XCTAssertEqual(alone[0], all[i], "sequence \(i)")
        }
        let reversed = sampler.sample(prompts: prompts.reversed(), maxNewTokens: 6, allowedRange: 0..<23, seeds: seeds.reversed())
        XCTAssertEqual(Array(reversed.reversed()), all)
        let otherSeeds = sampler.sample(prompts: prompts, maxNewTokens: 6, allowedRange: 0..<23, seeds: [1, 2, 3, 4])
        XCTAssertNotEqual(otherSeeds, all)
    }

    /// Each call samples from the model's weights as they are then: after training changes them, a
    /// sampler that sampled before gives what a new one gives (its packed copy is made again).
    func testEachCallSamplesTheCurrentWeights() throws {
        try CKernelsTests.onEveryPath { path in
            let model = Transformer(config: tinyConfig, seed: 21), other = Transformer(config: tinyConfig, seed: 22)
            let sampler = Sampler(model: model)
            let seeds: [UInt64] = [100, 101, 102, 103]
            let before = sampler.sample(prompts: prompts, maxNewTokens: 6, allowedRange: 0..<23, seeds: seeds)
            for i in model.parameters.indices { model.parameters[i] = other.parameters[i] }
            let after = sampler.sample(prompts: prompts, maxNewTokens: 6, allowedRange: 0..<23, seeds: seeds)
            XCTAssertEqual(after, Sampler(model: model).sample(prompts: prompts, maxNewTokens: 6, allowedRange: 0..<23, seeds: seeds), "\(path)")
            XCTAssertNotEqual(after, before, "\(path)")
        }
    }

    /// The groups of a call sample exactly as each group's prompts would in a call of their own,
    /// guided (8 prompts a group) or not (16), on one thread or with the groups side by side
    /// (every kernel path but blas, which runs one group at a time on OpenBLAS's threads). Heads of
    /// 16 channels, which the AVX-512 attention takes.
    func testEachGroupSamplesAsItWouldAlone() throws {
        let config = ModelConfig(vocabSize: 23, dModel: 32, nLayers: 2, nHeads: 2, ffnHidden: 24, maxSeq: 12)
        let model = Transformer(config: config, seed: 25)
        let sampler = Sampler(model: model)
        let many = (0..<37).map { i in prompts[i % prompts.count] + [Int32(i % 23)] }
        let seeds = (0..<37).map { UInt64(500 + $0) }
        for guided in [false, true] {
            let guidance = guided ? Guidance(weight: 2, nullPrompts: many.map { _ in [0, 0] }) : nil
            let plan = SamplingGroups(prompts: many.count, guided: guided, threads: 1, sideBySide: true)
            XCTAssertEqual(plan.ranges.count, guided ? 5 : 3)
            XCTAssertTrue(plan.ranges.allSatisfy { $0.count * (guided ? 2 : 1) <= SamplingGroups.maxRows })
            func draw(_ range: Range<Int>, threads: Int) -> [[Int32]] {
                withKernelThreads(threads) {
                    sampler.sample(
                        prompts: Array(many[range]), maxNewTokens: 5, allowedRange: 0..<23, temperature: 1.2,
                        guidance: guidance.map { Guidance(weight: $0.weight, nullPrompts: Array($0.nullPrompts[range])) },
                        seeds: Array(seeds[range]))
                }
            }
            try CKernelsTests.onEveryPath { path in
                XCTAssertEqual(SamplingGroups.sideBySide(config), path != .blas)
                let alone = plan.ranges.flatMap { draw($0, threads: 1) }
                XCTAssertEqual(draw(0..<many.count, threads: 1), alone, "\(path) guided \(guided), one thread")
                guard path != .blas else { return }
                for threads in [2, 3] {
                    XCTAssertEqual(draw(0..<many.count, threads: threads), alone, "\(path) guided \(guided), \(threads) threads")
                }
            }
        }
    }

    /// Prompts repeated in a call (as a round repeats each K times, with one null prompt for all,
    /// here also the same as two of the prompts) are prefilled once and sample as each would alone.
    func testRepeatedPromptsSampleAsEachWouldAlone() {
        let model = Transformer(config: tinyConfig, seed: 26)
        let sampler = Sampler(model: model)
        let repeated = [prompts[2], prompts[2], prompts[0], prompts[2], prompts[0], prompts[1]]
        let seeds: [UInt64] = [61, 62, 63, 64, 65, 66]
        for guidance in [nil, Guidance(weight: 2, nullPrompts: repeated.map { _ in prompts[0] })] {
            let together = sampler.sample(
                prompts: repeated, maxNewTokens: 7, allowedRange: 0..<23, guidance: guidance, seeds: seeds)
            for i in repeated.indices {
                let alone = sampler.sample(
                    prompts: [repeated[i]], maxNewTokens: 7, allowedRange: 0..<23,
                    guidance: guidance.map { Guidance(weight: $0.weight, nullPrompts: [$0.nullPrompts[i]]) }, seeds: [seeds[i]])
                XCTAssertEqual(together[i], alone[0], "sequence \(i), guided \(guidance != nil)")
            }
            XCTAssertNotEqual(together[0], together[1], "a repeated prompt with its own seed")
        }
    }

    func testGroupsAndTheirThreads() throws {
        let guided = SamplingGroups(prompts: 20, guided: true, threads: 2, sideBySide: true)
        XCTAssertEqual(guided.ranges, [0..<8, 8..<16, 16..<20])
        XCTAssertEqual(guided.streamsPerGroup, 16)
        XCTAssertEqual([guided.slots, guided.threadsPerGroup], [2, 1])
        XCTAssertEqual([guided.groups(ofSlot: 0), guided.groups(ofSlot: 1)], [0..<1, 1..<3])
        let one = SamplingGroups(prompts: 5, guided: false, threads: 4, sideBySide: true)
        XCTAssertEqual(one.ranges, [0..<5])
        XCTAssertEqual([one.streamsPerGroup, one.slots, one.threadsPerGroup], [5, 1, 4])
        let oneAtATime = SamplingGroups(prompts: 64, guided: false, threads: 3, sideBySide: false)
        XCTAssertEqual([oneAtATime.ranges.count, oneAtATime.slots, oneAtATime.threadsPerGroup], [4, 1, 3])
        // The groups, and so the tokens, do not depend on the threads.
        for threads in 1...16 {
            for sideBySide in [false, true] {
                let plan = SamplingGroups(prompts: 37, guided: true, threads: threads, sideBySide: sideBySide)
                XCTAssertEqual(plan.ranges, [0..<8, 8..<16, 16..<24, 24..<32, 32..<37])
                XCTAssertEqual(plan.streamsPerGroup, 16)
                XCTAssertEqual(plan.groups(ofSlot: 0).lowerBound, 0)
                XCTAssertEqual(plan.groups(ofSlot: plan.slots - 1).upperBound, 5)
            }
        }
        // Groups run side by side only where a decode step calls no OpenBLAS: the kernels' attention
        // takes heads of whole vectors (tinyConfig's heads are 8 channels, half an AVX-512 vector).
        try CKernelsTests.onEveryPath { path in
            XCTAssertEqual(SamplingGroups.sideBySide(tinyConfig), path == .avx2)
        }
    }

    func testGreedyFollowsFullForwardArgmaxInRange() {
        let model = Transformer(config: tinyConfig, seed: 22, batchCapacity: 1)
        let sampler = Sampler(model: model)
        let range: Range<Int32> = 10..<20
        let out = sampler.sample(prompts: prompts, maxNewTokens: 5, allowedRange: range, temperature: 0, seeds: [0, 0, 0, 0])
        let V = tinyConfig.vocabSize
        for (i, prompt) in prompts.enumerated() {
            var sequence = prompt
            for _ in 0..<5 {
                let logits = model.logits(TokenBatch(sequences: [sequence], targetStarts: [1]))
                let row = logits[((sequence.count - 1) * V)..<(sequence.count * V)]
                let best = range.max { row[row.startIndex + Int($0)] < row[row.startIndex + Int($1)] }!
                sequence.append(best)
            }
            XCTAssertEqual(out[i], Array(sequence[prompt.count...]))
        }
    }

    func testRangeTopKAndStopToken() {
        let model = Transformer(config: tinyConfig, seed: 23)
        let sampler = Sampler(model: model)
        let out = sampler.sample(prompts: prompts, maxNewTokens: 8, allowedRange: 5..<9, temperature: 1.5, topK: 2, seeds: [1, 2, 3, 4])
        for tokens in out {
            XCTAssertEqual(tokens.count, 8)
            XCTAssertTrue(tokens.allSatisfy { (5..<9).contains($0) })
        }
        // top-k 1 is greedy whatever the temperature.
        let topOne = sampler.sample(prompts: prompts, maxNewTokens: 8, allowedRange: 0..<23, temperature: 2, topK: 1, seeds: [5, 6, 7, 8])
        XCTAssertEqual(topOne, sampler.sample(prompts: prompts, maxNewTokens: 8, allowedRange: 0..<23, temperature: 0, seeds: [0, 0, 0, 0]))
        // Stopping: with only two allowed tokens one of which stops, every output ends at its first stop.
        let stopped = sampler.sample(prompts: prompts, maxNewTokens: 8, allowedRange: 3..<5, stopToken: 4, temperature: 1, seeds: [9, 10, 11, 12])
        for tokens in stopped {
            if let stop = tokens.firstIndex(of: 4) { XCTAssertEqual(stop, tokens.count - 1) } else { XCTAssertEqual(tokens.count, 8) }
        }
        XCTAssertTrue(stopped.contains { $0.count < 8 })
    }

    func testGuidance() {
        let model = Transformer(config: tinyConfig, seed: 24)
        let sampler = Sampler(model: model)
        let nulls: [[Int32]] = [[1, 0, 0], [2], [1, 0], [0, 0, 0, 0, 0]]
        let seeds: [UInt64] = [31, 32, 33, 34]
        let plain = sampler.sample(prompts: prompts, maxNewTokens: 6, allowedRange: 0..<23, seeds: seeds)
        // Weight 1 gives u + (c - u) = c: the conditional stream alone.
        let unit = sampler.sample(
            prompts: prompts, maxNewTokens: 6, allowedRange: 0..<23,
            guidance: Guidance(weight: 1, nullPrompts: nulls), seeds: seeds)
        XCTAssertEqual(unit, plain)
        // Weight 0 samples from the null stream: the same as sampling the null prompts unguided.
        let zero = sampler.sample(
            prompts: prompts, maxNewTokens: 6, allowedRange: 0..<23,
            guidance: Guidance(weight: 0, nullPrompts: nulls), seeds: seeds)
        XCTAssertEqual(zero, sampler.sample(prompts: nulls, maxNewTokens: 6, allowedRange: 0..<23, seeds: seeds))
        // A strong weight changes something, and each guided sequence is still independent of the batch.
        let strong = sampler.sample(
            prompts: prompts, maxNewTokens: 6, allowedRange: 0..<23,
            guidance: Guidance(weight: 5, nullPrompts: nulls), seeds: seeds)
        XCTAssertNotEqual(strong, plain)
        let alone = sampler.sample(
            prompts: [prompts[2]], maxNewTokens: 6, allowedRange: 0..<23,
            guidance: Guidance(weight: 5, nullPrompts: [nulls[2]]), seeds: [seeds[2]])
        XCTAssertEqual(alone[0], strong[2])
    }

    func testKthLargest() {
        var rng = Xoshiro256RNG(seed: 3)
        let values = (0..<50).map { _ in Float(rng.nextGaussian()) } + [1, 1, 1]
        let sorted = values.sorted(by: >)
        var scratch = [Float](repeating: 0, count: values.count)
        for k in [1, 2, 3, 7, 25, 53] {
            XCTAssertEqual(kthLargest(values, count: values.count, k: k, scratch: &scratch), sorted[k - 1], "k = \(k)")
        }
    }
}

final class CachedAttentionTests: XCTestCase {
    /// The fast path (the path's kernel where it applies, else sgemv) against the plain loops on
    /// every kernel path; head sizes below, past and at multiples of the 8- and 16-float vectors,
    /// channel counts that leave 1, 2 and 4 vector tails, 1 to maxSeq positions.
    func testFastMatchesReference() throws {
        try CKernelsTests.onEveryPath { path in checkFastMatchesReference(path) }
    }

    func checkFastMatchesReference(_ path: KernelPath) {
        for (NH, HS, maxSeq) in [(3, 4, 7), (2, 20, 40), (3, 16, 9), (6, 32, 80), (5, 8, 12), (3, 8, 5)] {
            let C = NH * HS, streams = 2
            var rng = Xoshiro256RNG(seed: UInt64(HS))
            func random(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.nextGaussian()) } }
            let keys = random(streams * maxSeq * C), values = random(streams * maxSeq * C)
            let rowStreams: [Int32] = [1, 0, 1], rowPositions = [Int32(maxSeq - 1), 0, Int32(maxSeq / 2)]
            let qkv = random(3 * 3 * C)
            var fast = [Float](repeating: 0, count: 3 * C), reference = fast, kernel = fast
            var scores = [Float](repeating: 0, count: NH * maxSeq)
            cachedAttentionForward(
                &fast, qkv: qkv, keys: keys, values: values, streams: rowStreams, positions: rowPositions,
                scores: &scores, N: 3, C: C, NH: NH, HS: HS, maxSeq: maxSeq, threads: 1)
            cachedAttentionForwardReference(
                &reference, qkv: qkv, keys: keys, values: values, streams: rowStreams, positions: rowPositions,
                scores: &scores, N: 3, C: C, NH: NH, HS: HS, maxSeq: maxSeq)
            XCTAssertLessThan(maxDifference(fast, reference), 1e-5, "HS \(HS)")
            let ran = suder_cached_attention(&kernel, qkv, keys, values, rowStreams, rowPositions, 3, C, NH, maxSeq, 1)
            let vector = path == .avx512 ? 16 : 8
            XCTAssertEqual(ran, path != .blas && HS % vector == 0, "\(path): the kernel runs on the kernel paths when HS is whole vectors")
            if ran { XCTAssertEqual(kernel, fast) }
        }
    }
}
