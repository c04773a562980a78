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

    /// Jobs back to back, as a training step posts them: polling workers meet jobs that are open,
    /// full or already closed when they look, and every item of every job still runs exactly once.
    func testBackToBackJobsRunEveryItemOnce() {
        let jobs = 3000, longest = 9
        let hits = UnsafeMutablePointer<Int>.allocate(capacity: jobs * longest)
        let sums = UnsafeMutablePointer<Int>.allocate(capacity: jobs * longest)
        defer {
            hits.deallocate()
            sums.deallocate()
        }
        hits.initialize(repeating: 0, count: jobs * longest)
        for job in 0..<jobs {
            parallelFor(1 + job % longest, threads: 2 + job % 2) { item in
                hits[job * longest + item] += 1
                // Items from nothing to a few microseconds of work.
                sums[job * longest + item] = (0..<(job % 5) * 300).reduce(job) { $0 &* 31 &+ $1 }
            }
        }
        let wrong = (0..<jobs).filter { job in (0..<longest).contains { hits[job * longest + $0] != ($0 < 1 + job % longest ? 1 : 0) } }
        XCTAssertEqual(wrong, [], "jobs whose items did not run exactly once")
    }

    /// The workers take part: with items that wait (as a loaded core would), more than the
    /// calling thread runs them.
    func testWorkersShareTheItems() {
        XCTAssertGreaterThan(threadsThatRunWaitingItems(threads: 3), 1)
    }

    /// A job runs on at most its own thread count, even after an earlier job grew the pool.
    func testAJobUsesNoMoreThreadsThanItAsks() {
        parallelFor(8, threads: 4) { _ in usleep(1000) }
        XCTAssertLessThanOrEqual(threadsThatRunWaitingItems(threads: 2), 2)
    }

    /// How many distinct threads run a job of 12 items that each wait 2 ms.
    private func threadsThatRunWaitingItems(threads: Int) -> Int {
        let runners = UnsafeMutablePointer<pthread_t>.allocate(capacity: 12)
        defer { runners.deallocate() }
        parallelFor(12, threads: threads) { item in
            runners[item] = pthread_self()
            usleep(2000)
        }
        return (0..<12).filter { i in (0..<i).allSatisfy { pthread_equal(runners[$0], runners[i]) == 0 } }.count
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

    /// Split by rows, the threads pack each block of B once and share it, also past the 2048-column
    /// block (two blocks of columns; depth blocks are in the test above): 1-thread bits on 2 and 3
    /// threads.
    func testRowsSplitOverASharedBPastAColumnBlockEqualOneThreadBitwise() throws {
        let (m, n, k) = (2101, 2100, 40)
        try CKernelsTests.onEveryPath { path in
            guard path != .blas else { return }
            for (transA, transB) in [(false, false), (true, true)] {
                let lda = transA ? m : k, ldb = transB ? k : n
                let a = (0..<(m * k)).map { Float($0 * 7919 % 1001) / 1000 - 0.5 }
                let b = (0..<(k * n)).map { Float($0 * 104_729 % 997) / 1000 - 0.5 }
                func product(threads: Int32) -> [UInt32] {
                    var c = (0..<(m * n)).map { Float($0 % 13) }
                    XCTAssertTrue(suder_sgemm(transA, transB, m, n, k, 0.75, a, lda, b, ldb, 1.5, &c, n, threads))
                    return c.map(\.bitPattern)
                }
                let one = withKernelThreads(1) { product(threads: 1) }
                for threads: Int32 in [2, 3] {
                    withKernelThreads(Int(threads)) {
                        assertBitwiseEqual(product(threads: threads), one, "\(path) transA \(transA) transB \(transB) threads \(threads)")
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

    func testRangesCoverEveryItemOnce() {
        for (threads, count) in [(1, 5), (2, 1), (2, 2), (3, 7), (3, 1000), (8, 31)] {
            let hits = UnsafeMutablePointer<Int>.allocate(capacity: count)
            defer { hits.deallocate() }
            hits.initialize(repeating: 0, count: count)
            for minWork in [0, Self.defaultMinWork] {
                withKernelThreads(threads, minWork: minWork) {
                    parallelRanges(count, work: 1000) { range in
                        XCTAssertFalse(range.isEmpty, "threads \(threads) count \(count)")
                        for i in range { hits[i] += 1 }
                    }
                }
            }
            XCTAssertEqual((0..<count).map { hits[$0] }, Array(repeating: 2, count: count), "threads \(threads) count \(count)")
        }
    }

    /// Each training pass that splits its rows or (batch, head) pairs, every split forced: 2 and
    /// 3 threads give the 1-thread bits (a wrongly split reduction or shared scratch fails here), and the norm's weight gradient is the plain row-order sum
    /// bit for bit (its split is by columns). Odd sizes, so no range is a multiple of another.
    func testSplitLayerPassesEqualOneThreadBitwise() throws {
        let B = 3, T = 13, NH = 5, HS = 8, C = NH * HS, H = 37, V = 29, N = B * T
        var rng = Xoshiro256RNG(seed: 77)
        func random(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.nextGaussian()) } }
        let x = random(N * C), dy = random(N * C), weight = random(C), dinpStart = random(N * C), dweightStart = random(C)
        let qkv = random(N * 3 * C), dAttention = random(N * C), gu = random(N * 2 * H), dh = random(N * H)
        let logits = random(N * V), coefficients = random(N)
        let targets = (0..<N).map { _ in Int32(rng.next() % UInt64(V)) }
        let positions = (0..<N).map { Int32($0 % T) }
        let rowWeights = (0..<N).map { Float($0 % 4 == 0 ? 0 : 1) }
        let table = RotaryTable<Float>(maxSeq: T, headSize: HS, theta: 10000)
        defer { table.deallocate() }
        /// Every pass's outputs, as bit patterns, one array per pass.
        func passes() -> [String: [UInt32]] {
            var out: [String: [UInt32]] = [:]
            var y = [Float](repeating: .nan, count: N * C), rstd = [Float](repeating: .nan, count: N)
            rmsnormForward(&y, rstd: &rstd, inp: x, weight: weight, N: N, C: C, eps: 1e-5)
            out["rmsnormForward"] = (y + rstd).map(\.bitPattern)
            var dinp = dinpStart, dweight = dweightStart
            rmsnormBackward(dinp: &dinp, dweight: &dweight, dout: dy, inp: x, rstd: rstd, weight: weight, N: N, C: C)
            out["rmsnormBackward"] = (dinp + dweight).map(\.bitPattern)
            var rowOrder = dweightStart
            for r in 0..<N { for c in 0..<C { rowOrder[c] += dy[r * C + c] * x[r * C + c] * rstd[r] } }
            assertBitwiseEqual(dweight.map(\.bitPattern), rowOrder.map(\.bitPattern), "rmsnorm dweight against the row-order sum")
            var rotated = qkv
            ropeRotate(&rotated, rowStride: 3 * C, N: N, positions: positions, heads: 2 * NH, table: table, inverse: false)
            out["ropeRotate"] = rotated.map(\.bitPattern)
            var attention = [Float](repeating: .nan, count: N * C), probs = [Float](repeating: .nan, count: B * NH * T * T)
            attentionForward(&attention, probs: &probs, qkv: rotated, B: B, T: T, C: C, NH: NH)
            out["attentionForward"] = (attention + probs).map(\.bitPattern)
            var dqkv = [Float](repeating: .nan, count: N * 3 * C), scratch = [Float](repeating: .nan, count: B * NH * T * T)
            attentionBackward(dqkv: &dqkv, dscratch: &scratch, dout: dAttention, qkv: rotated, probs: probs, B: B, T: T, C: C, NH: NH)
            out["attentionBackward"] = dqkv.map(\.bitPattern)
            var hidden = [Float](repeating: .nan, count: N * H), dgu = [Float](repeating: .nan, count: N * 2 * H)
            swigluForward(&hidden, gu: gu, N: N, H: H)
            swigluBackward(dgu: &dgu, dh: dh, gu: gu, N: N, H: H)
            out["swiglu"] = (hidden + dgu).map(\.bitPattern)
            var rows = logits, logp = [Float](repeating: .nan, count: N)
            tokenLogProbForward(logp: &logp, logits: &rows, targets: targets, weights: rowWeights, N: N, V: V)
            out["tokenLogProbForward"] = (logp + rows).map(\.bitPattern)
            tokenLogProbBackward(probsToGradients: &rows, targets: targets, coefficients: coefficients, N: N, V: V)
            out["tokenLogProbBackward"] = rows.map(\.bitPattern)
            return out
        }
        try CKernelsTests.onEveryPath { path in
            guard path != .blas else { return }
            let one = withKernelThreads(1) { passes() }
            // Which thread takes which range varies from run to run, and the caller may take them
            // all: the ranges also run last first, so a split that depends on their order fails.
            defer { parallelRangesReversed = false }
            for (threads, reversed) in [(2, false), (3, false), (2, true), (3, true)] {
                parallelRangesReversed = reversed
                let split = withKernelThreads(threads) { passes() }
                for (name, bits) in one.sorted(by: { $0.key < $1.key }) {
                    assertBitwiseEqual(split[name] ?? [], bits, "\(path) threads \(threads) reversed \(reversed): \(name)")
                }
            }
        }
    }

    /// The gradient norm's chunk sums are added in chunk order: several chunks give the same bits
    /// on 1, 2 and 3 threads, and the Double sum of the chunks' sums.
    /// The clip scale comes from the norm: it stays the index-order sum on any thread count, so
    /// threads leave the weights of published runs unchanged bit for bit.
    func testGradientNormIsTheIndexOrderSumOnAnyThreadCount() {
        var rng = Xoshiro256RNG(seed: 5)
        let values = (0..<(5 * 65_536 + 123)).map { _ in Float(rng.nextGaussian()) }
        var sum = 0.0
        for v in values { sum += Double(v) * Double(v) }
        values.withUnsafeBufferPointer { values in
            for threads in [1, 2, 3] {
                XCTAssertEqual(withKernelThreads(threads) { l2Norm(values) }.bitPattern, sum.squareRoot().bitPattern, "threads \(threads)")
            }
        }
    }

    /// What the trainer and the sampler compute does not depend on the thread count: a training
    /// step's loss, gradients and updated parameters, and sampled tokens (with guidance and top-k),
    /// with every product, attention call, per-row loop (norms, RoPE, SwiGLU, softmax), (batch,
    /// head) attention pass, clipping, AdamW update and token choice split.
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
            clipGradients(model.gradients, maxNorm: 1e-3)  // below the norm, so the scaling runs too
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
            defer { parallelRangesReversed = false }
            for (threads, reversed) in [(2, false), (3, false), (2, true), (3, true)] {
                parallelRangesReversed = reversed
                let split = withKernelThreads(threads) { run() }
                let label = "\(path) threads \(threads) reversed \(reversed)"
                assertBitwiseEqual(split.sums.map(\.bitPattern), one.sums.map(\.bitPattern), "\(label): sums")
                assertBitwiseEqual(split.gradients.map(\.bitPattern), one.gradients.map(\.bitPattern), "\(label): gradients")
                assertBitwiseEqual(split.parameters.map(\.bitPattern), one.parameters.map(\.bitPattern), "\(label): parameters")
                XCTAssertEqual(split.tokens, one.tokens, "\(label): tokens")
            }
        }
    }
}
