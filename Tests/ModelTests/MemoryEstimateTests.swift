import XCTest

@testable import Model

/// `MemoryEstimate` against the bytes the constructors actually allocate (`allocateAligned`).
final class MemoryEstimateTests: XCTestCase {
    private func allocatedBytes<T>(_ build: () -> T) -> (T, Int) {
        let before = alignedBytesAllocated
        let value = build()
        return (value, alignedBytesAllocated - before)
    }

    func testEstimatesEqualWhatTheModelAllocates() {
        let configs = [
            ModelConfig(vocabSize: 523, dModel: 64, nLayers: 3, nHeads: 4, ffnHidden: 160, maxSeq: 96, tiedHead: true),
            ModelConfig(vocabSize: 1100, dModel: 96, nLayers: 2, nHeads: 6, ffnHidden: 256, maxSeq: 80, tiedHead: false),
        ]
        for config in configs {
            for batch in [1, 6] {
                let (model, transformer) = allocatedBytes { Transformer(config: config, seed: 3, batchCapacity: batch) }
                XCTAssertEqual(model.parameterCount, Int(MemoryEstimate.parameterCount(config)))
                XCTAssertEqual(transformer, Int(MemoryEstimate.transformerBytes(config, batchCapacity: batch)), "\(config) B=\(batch)")
                let (optimizer, adam) = allocatedBytes { AdamW(parameterTable: model.parameterTable, parameterCount: model.parameterCount) }
                XCTAssertEqual(adam, Int(MemoryEstimate.adamWBytes(config)))
                withExtendedLifetime(optimizer) {}
            }
            for (streams, rows, threads) in [(8, 8, 1), (128, 1500, 3), (64, 3, 2)] {
                let (buffers, sampler) = allocatedBytes { SamplerBuffers(config: config, streams: streams, rows: rows, threads: threads) }
                XCTAssertEqual(
                    sampler, Int(MemoryEstimate.samplerBytes(config, streams: streams, rows: rows, threads: threads)),
                    "streams \(streams) rows \(rows) threads \(threads)")
                buffers.deallocate()
            }
        }
    }

    /// What sampling really reserves for a call: the estimate for its streams and prefill rows, and
    /// the packed weights.
    func testTheSamplersReservationIsEstimated() {
        let config = ModelConfig(vocabSize: 300, dModel: 32, nLayers: 2, nHeads: 2, ffnHidden: 64, maxSeq: 40)
        let model = Transformer(config: config, seed: 1, batchCapacity: 2)
        let sampler = Sampler(model: model)
        let prompts: [[Int32]] = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
        let (_, bytes) = allocatedBytes {
            sampler.sample(prompts: prompts, maxNewTokens: 5, allowedRange: 10..<300, seeds: [1, 2, 3])
        }
        XCTAssertEqual(
            bytes,
            Int(MemoryEstimate.samplerBytes(config, streams: 3, rows: 9, threads: computeThreads) + MemoryEstimate.decodeWeightsBytes(config)))
    }

    /// With several groups side by side, one buffer set per group that runs at once, and one copy of
    /// the packed weights; a later call that needs larger sets regrows them all: a round's image
    /// sampling, then its captions.
    func testTheSamplersGroupsReservationIsEstimated() {
        let config = ModelConfig(vocabSize: 300, dModel: 32, nLayers: 2, nHeads: 2, ffnHidden: 64, maxSeq: 40)
        let model = Transformer(config: config, seed: 1, batchCapacity: 2)
        let prompts = (0..<64).map { i in [Int32](repeating: Int32(i + 1), count: 4) }
        let images = (0..<64).map { i in [Int32](repeating: Int32(i + 1), count: 12) }
        let guidance = Guidance(weight: 2, nullPrompts: prompts.map { _ in [0, 0, 0, 0] })
        let seeds = (0..<64).map { UInt64($0) }
        let sampler = Sampler(model: model)
        withKernelThreads(8) {
            let (_, first) = allocatedBytes {
                sampler.sample(prompts: prompts, maxNewTokens: 5, allowedRange: 10..<300, guidance: guidance, seeds: seeds)
            }
            let imageCall = (prompts: 64, guided: true, promptLength: 4), captionCall = (prompts: 64, guided: false, promptLength: 12)
            XCTAssertEqual(first, Int(MemoryEstimate.samplingBytes(config, calls: [imageCall], threads: 8)))
            let (_, second) = allocatedBytes {
                sampler.sample(prompts: images, maxNewTokens: 5, allowedRange: 10..<300, seeds: seeds)
            }
            // The second call regrows the buffer sets; the packed weights keep their size.
            XCTAssertEqual(
                second,
                Int(MemoryEstimate.samplingBytes(config, calls: [imageCall, captionCall], threads: 8) - MemoryEstimate.decodeWeightsBytes(config)))
            // Eight groups side by side (the captions' four regrow all eight), or on the blas path one
            // at a time on all 8 threads.
            let sets = SamplingGroups.sideBySide(config) ? 8 : 1
            let set = MemoryEstimate.samplerBytes(config, streams: 16, rows: 16 * 12, threads: sets == 8 ? 1 : 8)
            XCTAssertEqual(second, sets * Int(set))
        }
    }

    func testAHostileSizeGivesAHugeNumberNotAnOverflow() {
        let config = ModelConfig(vocabSize: 1100, dModel: 8192, nLayers: 128, nHeads: 128, ffnHidden: 65536, maxSeq: 4096)
        let bytes = MemoryEstimate.transformerBytes(config, batchCapacity: Int.max / 2)
        XCTAssertTrue(bytes.isFinite && bytes > 1e30, "\(bytes)")
    }
}
