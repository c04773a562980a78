import CKernels
import XCTest

@testable import Model

/// Runs `body` with `threads` compute threads and the kernels splitting every job of at least
/// `minWork` multiply-adds (0: every job, so small odd shapes split too); restores both after.
func withKernelThreads<T>(_ threads: Int, minWork: Int = 0, _ body: () throws -> T) rethrows -> T {
    let (originalThreads, originalWork) = (computeThreads, suder_parallel_min_work)
    defer {
        setComputeThreads(originalThreads)
        suder_parallel_min_work = originalWork
    }
    setComputeThreads(threads)
    suder_parallel_min_work = minWork
    return try body()
}

/// Fails naming the first element whose bits differ (the arrays themselves are too long to print).
func assertBitwiseEqual<T: Equatable>(_ x: [T], _ y: [T], _ message: String, file: StaticString = #filePath, line: UInt = #line) {
    guard x != y else { return }
    let first = zip(x, y).enumerated().first { $0.element.0 != $0.element.1 }?.offset
    XCTFail("\(message): counts \(x.count), \(y.count); first difference at \(first.map(String.init) ?? "the end")", file: file, line: line)
}

/// Threads within a rank: the pool runs every item once, and every threaded kernel gives the
/// 1-thread result bit for bit (the trainer's results must not depend on the thread count). The
/// bitwise checks run on the kernel paths; on the BLAS path OpenBLAS does the products.
final class ThreadTests: XCTestCase {
    static let defaultMinWork = suder_parallel_min_work

    func testPoolRunsEveryItemOnce() {
        for (threads, count) in [(1, 5), (2, 1), (3, 1000), (8, 7)] {
            let hits = UnsafeMutablePointer<Int>.allocate(capacity: count)
            defer { hits.deallocate() }
            hits.initialize(repeating: 0, count: count)
            for _ in 0..<3 {
                parallelFor(count, threads: threads) { hits[$0] += 1 }  // distinct items: no two threads share one
            }
            XCTAssertEqual((0..<count).map { hits[$0] }, Array(repeating: 3, count: count), "threads \(threads) count \(count)")
        }
    }

    /// The workers take part: with items that wait (as a loaded core would), more than the
    /// calling thread runs them.
    func testWorkersShareTheItems() {
        let runners = UnsafeMutablePointer<pthread_t>.allocate(capacity: 12)
        defer { runners.deallocate() }
        parallelFor(12, threads: 3) { item in
            runners[item] = pthread_self()
            usleep(2000)
        }
        let distinct = (0..<12).filter { i in (0..<i).allSatisfy { pthread_equal(runners[$0], runners[i]) == 0 } }.count
        XCTAssertGreaterThan(distinct, 1)
    }

    /// A worker whose scratch cannot be had leaves its items to the others; the caller's failing
    /// means nothing runs and false comes back.
    func testFailedPrepareOnAWorkerOrTheCaller() {
        struct Record {
            var caller = pthread_self()
            var callerPrepares = true
            let hits = UnsafeMutablePointer<Int>.allocate(capacity: 200)
        }
        var record = Record()
        defer { record.hits.deallocate() }
        record.hits.initialize(repeating: 0, count: 200)
        let prepare: @convention(c) (UnsafeMutableRawPointer?) -> Bool = { context in
            let record = context!.assumingMemoryBound(to: Record.self).pointee
            return pthread_equal(pthread_self(), record.caller) != 0 && record.callerPrepares
        }
        let body: @convention(c) (UnsafeMutableRawPointer?, Int) -> Void = { context, item in
            context!.assumingMemoryBound(to: Record.self).pointee.hits[item] += 1
        }
        XCTAssertTrue(suder_parallel(3, 200, prepare, body, &record))
        XCTAssertEqual((0..<200).map { record.hits[$0] }, Array(repeating: 1, count: 200))
        record.callerPrepares = false
        XCTAssertFalse(suder_parallel(3, 200, prepare, body, &record))
        XCTAssertEqual((0..<200).map { record.hits[$0] }, Array(repeating: 1, count: 200))
    }

    /// op(A) op(B) of odd shapes (no dimension a multiple of a tile) through suder_sgemm with
    /// `threads`, as bit patterns; the inputs depend on the shape only.
    func productBits(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, beta: Float, threads: Int32) -> [UInt32] {
        var rng = Xoshiro256RNG(seed: UInt64(m * 7919 + n * 104_729 + k))
        let lda = (transA ? m : k) + 1, ldb = (transB ? k : n) + 2, ldc = n + 3
        let a = (0..<((transA ? k : m) * lda)).map { _ in Float(rng.nextGaussian()) }
        let b = (0..<((transB ? n : k) * ldb)).map { _ in Float(rng.nextGaussian()) }
        var c = (0..<(m * ldc)).map { _ in Float(rng.nextGaussian()) }
        XCTAssertTrue(suder_sgemm(transA, transB, m, n, k, 0.75, a, lda, b, ldb, beta, &c, ldc, threads))
        return c.map(\.bitPattern)
    }

    /// Splits by rows (m > n), by columns (n > m, also past the 2048-column block), with fewer
    /// panels than items, depth in several blocks, and the small-M path (m <= 32, B transposed);
    /// small shapes with every product split, large ones (4-5 M multiply-adds) at the default
    /// threshold.
    func testThreadedProductsEqualOneThreadBitwise() throws {
        let small = [
            (1, 1, 1), (2, 3, 1), (13, 37, 29), (25, 70, 300), (70, 25, 19), (5, 333, 41), (31, 100, 7), (50, 2101, 3),
            (47, 5, 600),
        ]
        let large = [(301, 277, 53), (29, 1531, 97), (67, 45, 1411), (97, 389, 131)]
        try CKernelsTests.onEveryPath { path in
            guard path != .blas else { return }
            for (shapes, minWork) in [(small, 0), (large, Self.defaultMinWork)] {
                withKernelThreads(1, minWork: minWork) {
                    for (m, n, k) in shapes {
                        for (transA, transB) in [(false, false), (false, true), (true, false), (true, true)] {
                            for beta: Float in [0, 1.5] {
                                let one = productBits(transA, transB, m, n, k, beta: beta, threads: 1)
                                for threads: Int32 in [2, 3] {
                                    assertBitwiseEqual(
                                        productBits(transA, transB, m, n, k, beta: beta, threads: threads), one,
                                        "\(path) \(m)x\(n)x\(k) transA \(transA) transB \(transB) beta \(beta) threads \(threads)")
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The sampler's attention kernel, rows split over threads: 1-thread bits for many rows at
    /// mixed positions, every call split and at the default threshold (~5 M multiply-adds).
    func testThreadedCachedAttentionEqualsOneThreadBitwise() throws {
        try CKernelsTests.onEveryPath { path in
            guard path != .blas else { return }
            for (rows, NH, HS, maxSeq, minWork) in [(7, 3, 16, 9, 0), (41, 2, 32, 50, 0), (96, 4, 64, 200, Self.defaultMinWork)] {
                let C = NH * HS, streams = 5
                var rng = Xoshiro256RNG(seed: UInt64(rows))
                let keys = (0..<(streams * maxSeq * C)).map { _ in Float(rng.nextGaussian()) }
                let values = (0..<(streams * maxSeq * C)).map { _ in Float(rng.nextGaussian()) }
                let qkv = (0..<(rows * 3 * C)).map { _ in Float(rng.nextGaussian()) }
                let rowStreams = (0..<rows).map { Int32($0 % streams) }
                let rowPositions = (0..<rows).map { _ in Int32(rng.next() % UInt64(maxSeq)) }
                func attention(_ threads: Int32) -> [UInt32] {
                    var out = [Float](repeating: .nan, count: rows * C)
                    XCTAssertTrue(suder_cached_attention(&out, qkv, keys, values, rowStreams, rowPositions, rows, C, NH, maxSeq, threads))
                    return out.map(\.bitPattern)
                }
                withKernelThreads(1, minWork: minWork) {
                    let one = attention(1)
                    for threads: Int32 in [2, 3] { assertBitwiseEqual(attention(threads), one, "\(path) rows \(rows) threads \(threads)") }
                }
            }
        }
    }

    /// What the trainer and the sampler compute does not depend on the thread count: a training
    /// step's loss, gradients and updated parameters, and sampled tokens (with guidance and top-k),
    /// with every product, attention call and token choice split.
    func testTrainingAndSamplingAreBitwiseTheSameOnAnyThreadCount() throws {
        let config = ModelConfig(vocabSize: 67, dModel: 48, nLayers: 2, nHeads: 3, ffnHidden: 72, maxSeq: 24)
        let sequences = randomSequences(count: 5, lengths: 9...23, vocab: config.vocabSize, seed: 31)
        let batch = TokenBatch(sequences: sequences, targetStarts: [1, 2, 3, 4, 5])
        let prompts = sequences.map { Array($0.prefix(4)) }
        let guidance = Guidance(weight: 1.5, nullPrompts: prompts.map { _ in [0, 1] })
        func run() -> (sums: [Double], gradients: [Float], parameters: [Float], tokens: [[Int32]]) {
            let model = Transformer(config: config, seed: 8, batchCapacity: 5)
            let optimizer = AdamW(parameterTable: model.parameterTable, parameterCount: model.parameterCount)
            model.zeroGradients()
            let sums = model.forward(batch)
            model.backward(sequenceCoefficients: [-0.1, -0.2, 0.3, -0.4, -0.5])
            let gradients = Array(model.gradients)
            optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: 1e-2)
            let tokens = Sampler(model: model).sample(
                prompts: prompts, maxNewTokens: 12, allowedRange: 3..<67, temperature: 0.9, topK: 20, guidance: guidance,
                seeds: [1, 2, 3, 4, 5])
            return (sums, gradients, Array(model.parameters), tokens)
        }
        let originalTokenWork = Sampler.parallelTokenWork
        defer { Sampler.parallelTokenWork = originalTokenWork }
        Sampler.parallelTokenWork = 0
        try CKernelsTests.onEveryPath { path in
            guard path != .blas else { return }
            let one = withKernelThreads(1) { run() }
            for threads in [2, 3] {
                let split = withKernelThreads(threads) { run() }
                assertBitwiseEqual(split.sums.map(\.bitPattern), one.sums.map(\.bitPattern), "\(path) threads \(threads): sums")
                assertBitwiseEqual(split.gradients.map(\.bitPattern), one.gradients.map(\.bitPattern), "\(path) threads \(threads): gradients")
                assertBitwiseEqual(split.parameters.map(\.bitPattern), one.parameters.map(\.bitPattern), "\(path) threads \(threads): parameters")
                XCTAssertEqual(split.tokens, one.tokens, "\(path) threads \(threads): tokens")
            }
        }
    }
}
