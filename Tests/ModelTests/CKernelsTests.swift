import CKernels
import Foundation
import XCTest

@testable import Model

/// The kernels of CKernels against plain references, on every kernel path this CPU has
/// (`onEveryPath`: on an AVX-512 machine the AVX-512, AVX2 and BLAS paths all run).
///
/// sgemm against a Double reference: every transpose combination,
/// alpha and beta values, sizes with tails past the packed 12 x 32 tile and the small-M 24- and
/// 12-row tiles, depth split into blocks, and leading dimensions wider than the matrices; on one
/// thread and on three with every product split (ThreadTests checks the split is bitwise exact).
/// Tolerance: a float32 dot product of length k errs by at most ~k * 6e-8 of the sum of |terms|;
/// the bound below is that (doubled) plus the rounding of the alpha / beta update, so a wrong index,
/// missing tail or double-applied beta (errors of the size of the terms) cannot pass.
final class CKernelsTests: XCTestCase {
    static let cpuFlags: Set<Substring> = {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let flags = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return [] }
        return Set(flags.split(separator: " "))
    }()

    /// Runs `body` once per kernel path this CPU has, with that path active; restores the path after.
    static func onEveryPath(_ body: (KernelPath) throws -> Void) throws {
        let original = KernelPath.active
        defer { try? original.select() }
        for path in KernelPath.available {
            try path.select()
            try body(path)
        }
    }

    func testDetectionAgreesWithCPUInfo() {
        var expected: [KernelPath] = []
        if Self.cpuFlags.contains("avx512f") && Self.cpuFlags.contains("fma") { expected.append(.avx512) }
        if Self.cpuFlags.contains("avx2") && Self.cpuFlags.contains("fma") { expected.append(.avx2) }
        expected.append(.blas)
        XCTAssertEqual(KernelPath.available, expected)
        XCTAssertEqual(KernelPath.best, expected[0])
        let avx512Family = ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(Self.cpuFlags.contains)
        let family = avx512Family ? (Self.cpuFlags.contains("avx512_bf16") ? "Cooperlake" : "SkylakeX") : expected[0] == .avx2 ? "Haswell" : nil
        XCTAssertEqual(openBLASCoreForThisCPU, family)
    }

    /// SUDER_KERNELS: unset is the best path, a name selects it, a path the CPU lacks or an unknown
    /// name is an error that names the problem, and a failed selection leaves the path unchanged.
    func testSelectionFromEnvironment() throws {
        let original = KernelPath.active
        defer { try? original.select() }
        XCTAssertEqual(try KernelPath.select(environment: [:]), KernelPath.best)
        XCTAssertEqual(KernelPath.active, KernelPath.best)
        XCTAssertEqual(try KernelPath.select(environment: ["SUDER_KERNELS": "blas"]), .blas)
        XCTAssertEqual(KernelPath.active, .blas)
        XCTAssertThrowsError(try KernelPath.select(environment: ["SUDER_KERNELS": "sse9"])) {
            XCTAssertTrue("\($0)".contains("SUDER_KERNELS=sse9: expected one of avx512, avx2, blas"), "\($0)")
        }
        XCTAssertEqual(KernelPath.active, .blas)
        for path in KernelPath.allCases where !KernelPath.available.contains(path) {
            XCTAssertFalse(path.missingFeatures.isEmpty)
            XCTAssertThrowsError(try KernelPath.select(environment: ["SUDER_KERNELS": path.rawValue])) {
                XCTAssertTrue("\($0)".contains("lacks: \(path.missingFeatures)"), "\($0)")
            }
            XCTAssertEqual(KernelPath.active, .blas)
        }
        XCTAssertEqual(KernelPath.blas.missingFeatures, "")
    }

    /// The process restarts with the CPU's OpenBLAS core only when OpenBLAS chose a weaker one by
    /// itself: a set OPENBLAS_CORETYPE stands, an empty one counts as unset (as OpenBLAS reads it).
    func testOpenBLASCoreRestartOnlyOverOpenBLASsOwnWeakerChoice() {
        XCTAssertEqual(openBLASCoreToRestartWith(current: "Prescott", wanted: "Cooperlake", environment: [:]), "Cooperlake")
        XCTAssertEqual(openBLASCoreToRestartWith(current: "Prescott", wanted: "Haswell", environment: ["OPENBLAS_CORETYPE": ""]), "Haswell")
        XCTAssertEqual(openBLASCoreToRestartWith(current: "Haswell", wanted: "SkylakeX", environment: [:]), "SkylakeX")
        XCTAssertNil(openBLASCoreToRestartWith(current: "Prescott", wanted: "SkylakeX", environment: ["OPENBLAS_CORETYPE": "Prescott"]))
        XCTAssertNil(openBLASCoreToRestartWith(current: "Cooperlake", wanted: "SkylakeX", environment: [:]))
        XCTAssertNil(openBLASCoreToRestartWith(current: "Zen", wanted: "Haswell", environment: [:]))
        XCTAssertNil(openBLASCoreToRestartWith(current: "Prescott", wanted: nil, environment: [:]))
    }

    /// Runs suder_sgemm on random matrices stored with `pad` extra columns and compares with the
    /// reference. Returns whether the kernel took the product (false: it declined, C untouched).
    @discardableResult
    func check(
        _ transA: Bool, _ transB: Bool, m: Int, n: Int, k: Int, alpha: Float, beta: Float, pad: Int,
        threads: Int32 = 1, file: StaticString = #filePath, line: UInt = #line
    ) -> Bool {
        var rng = Xoshiro256RNG(seed: UInt64(m * 1_000_003 + n * 1_009 + k * 7 + pad))
        let sentinel: Float = 12_345
        let aRows = transA ? k : m, aCols = transA ? m : k, lda = aCols + pad
        let bRows = transB ? n : k, bCols = transB ? k : n, ldb = bCols + pad
        let ldc = n + pad
        func matrix(_ rows: Int, _ cols: Int, _ ld: Int, fill: (inout Xoshiro256RNG) -> Float) -> [Float] {
            var x = [Float](repeating: sentinel, count: rows * ld)
            for r in 0..<rows { for c in 0..<cols { x[r * ld + c] = fill(&rng) } }
            return x
        }
        let a = matrix(aRows, aCols, lda) { Float($0.nextGaussian()) }
        let b = matrix(bRows, bCols, ldb) { Float($0.nextGaussian()) }
        // With beta = 0, C must not be read: NaN there would leak into the result.
        let c0 = matrix(m, n, ldc) { beta == 0 ? .nan : Float($0.nextGaussian()) }
        var c = c0
        let ran = suder_sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, &c, ldc, threads)
        guard ran else {
            XCTAssertEqual(c.map(\.bitPattern), c0.map(\.bitPattern), "declined but wrote C", file: file, line: line)
            return false
        }
        var worst = 0.0
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0, magnitude = 0.0
                for p in 0..<k {
                    let x = Double(transA ? a[p * lda + i] : a[i * lda + p])
                    let y = Double(transB ? b[j * ldb + p] : b[p * ldb + j])
                    sum += x * y
                    magnitude += abs(x * y)
                }
                let old = beta == 0 ? 0 : Double(beta) * Double(c0[i * ldc + j])
                let expected = Double(alpha) * sum + old
                let bound = 2 * (Double(k) * 6e-8 + 1e-7) * (abs(Double(alpha)) * magnitude + abs(old)) + 1e-30
                worst = max(worst, abs(Double(c[i * ldc + j]) - expected) / bound)
            }
            for j in n..<ldc {
                XCTAssertEqual(c[i * ldc + j], sentinel, "wrote past n in row \(i)", file: file, line: line)
            }
        }
        XCTAssertLessThanOrEqual(
            worst, 1, "transA \(transA) transB \(transB) \(m)x\(n)x\(k) alpha \(alpha) beta \(beta) pad \(pad)",
            file: file, line: line)
        return true
    }

    func testAllTransposesSizesAndScalars() throws {
        // (m, n, k): single elements; tails in every dimension of the 12 x 32 (AVX-512) and 6 x 16
        // (AVX2) tiles; small-M tiles (AVX-512: m <= 16 with 24 rows of B per tile, m <= 32 with 12;
        // AVX2: m <= 8, 16, 32 with 12, 6, 3 rows) with full, partial and fewer-than-a-tile n; depth
        // split into blocks (k past 256 and 512); rows split past the row block (126-252 here);
        // columns split past 2048.
        let shapes = [
            (1, 1, 1), (3, 5, 7), (13, 33, 17), (12, 32, 256), (16, 50, 192), (16, 24, 5), (8, 13, 300),
            (9, 5, 16), (17, 13, 9), (20, 7, 5), (32, 25, 40), (33, 70, 300), (250, 37, 513), (40, 2100, 3),
        ]
        for threads: Int32 in [1, 3] {
            try withKernelThreads(Int(threads)) {
                try Self.onEveryPath { path in
                    for (m, n, k) in shapes {
                        for transA in [false, true] {
                            for transB in [false, true] {
                                for (alpha, beta) in [(Float(1), Float(0)), (0.5, 1), (-2, 0.25)] {
                                    let ran = check(
                                        transA, transB, m: m, n: n, k: k, alpha: alpha, beta: beta, pad: (m + n) % 2 == 0 ? 3 : 0,
                                        threads: threads)
                                    XCTAssertEqual(ran, path != .blas, "\(path): kernel took \(m)x\(n)x\(k) on \(threads) threads: \(ran)")
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    func testWideLeadingDimensions() throws {
        for threads: Int32 in [1, 3] {
            try withKernelThreads(Int(threads)) {
                try Self.onEveryPath { _ in
                    for transA in [false, true] {
                        for transB in [false, true] {
                            for (m, n, k) in [(7, 45, 19), (26, 40, 33), (61, 66, 70)] {
                                check(transA, transB, m: m, n: n, k: k, alpha: 1, beta: 1, pad: 5, threads: threads)
                                check(transA, transB, m: m, n: n, k: k, alpha: 0.75, beta: 0, pad: 17, threads: threads)
                            }
                        }
                    }
                }
            }
        }
    }

    /// With several threads the kernels take every product, as on one (before, large products
    /// went to OpenBLAS): past the default threshold (4.4 M multiply-adds here, packed and small-M
    /// paths) they split over the threads and still match the reference.
    func testThreadedCallersKeepTheKernels() throws {
        try Self.onEveryPath { path in
            for (transA, transB) in [(false, false), (false, true), (true, false), (true, true)] {
                XCTAssertEqual(check(transA, transB, m: 301, n: 277, k: 53, alpha: 1, beta: 0.5, pad: 1, threads: 2), path != .blas)
            }
            XCTAssertEqual(check(false, true, m: 29, n: 1531, k: 97, alpha: 1, beta: 0, pad: 0, threads: 2), path != .blas)
        }
    }

    /// A run gives the same bits on CPUs whose caches differ: products planned for L2 sizes from
    /// 256 KB to 4 MB (row blocks of 48 to 1,020 rows) split their depth at the same points and
    /// match the product planned for this CPU bit for bit, with depths past one and several blocks.
    func testProductBitsDoNotDependOnTheCaches() throws {
        try Self.onEveryPath { path in
            guard path != .blas else { return }
            var kc = 0, mc = 0, ownL2 = 0
            suder_kernels_blocking(path.cValue, &kc, &mc, &ownL2)
            defer { suder_kernels_plan_blocking(ownL2) }
            var rng = Xoshiro256RNG(seed: 29)
            for (transA, m, n, k) in [(false, 301, 277, 1100), (true, 1100, 96, 3072), (false, 130, 600, 600)] {
                let a = (0..<(m * k)).map { _ in Float(rng.nextGaussian()) }
                let b = (0..<(k * n)).map { _ in Float(rng.nextGaussian()) }
                func product() -> [UInt32] {
                    var c = [Float](repeating: 0, count: m * n)
                    XCTAssertTrue(suder_sgemm(transA, false, m, n, k, 1, a, transA ? m : k, b, n, 0, &c, n, 1))
                    return c.map(\.bitPattern)
                }
                suder_kernels_plan_blocking(ownL2)
                let own = product()
                for l2 in [256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20] {
                    suder_kernels_plan_blocking(l2)
                    var plannedKc = 0, plannedMc = 0, reported = 0
                    suder_kernels_blocking(path.cValue, &plannedKc, &plannedMc, &reported)
                    XCTAssertEqual(plannedKc, kc, "\(path): the depth of a block moved with the L2 size")
                    assertBitwiseEqual(product(), own, "\(path) \(m)x\(n)x\(k) planned for L2 \(l2 >> 10) KB, mc \(plannedMc)")
                }
            }
        }
    }

    /// A transposed A whose rows lie a multiple of 2 KB apart (strides of 512, 1,024 and 1,536
    /// floats) is packed by blocks, as its rows would alias in the caches: its products match the
    /// reference, and bit for bit the same A kept in place at a stride that does not alias, with
    /// row blocks and their tails, depth blocks, and rows split over three threads.
    func testTransposedAPackedByBlocksKeepsTheBits() throws {
        for threads: Int32 in [1, 3] {
            try withKernelThreads(Int(threads)) {
                try Self.onEveryPath { path in
                    guard path != .blas else { return }
                    var rng = Xoshiro256RNG(seed: 31)
                    for (m, n, k, lda) in [(130, 40, 600, 512), (1024, 24, 520, 1024), (61, 35, 300, 1536)] {
                        check(true, false, m: m, n: n, k: k, alpha: 0.5, beta: 1, pad: lda - m, threads: threads)
                        let values = (0..<(k * m)).map { _ in Float(rng.nextGaussian()) }
                        let b = (0..<(k * n)).map { _ in Float(rng.nextGaussian()) }
                        func product(stride: Int) -> [UInt32] {
                            var a = [Float](repeating: 0, count: k * stride)
                            for p in 0..<k { for i in 0..<m { a[p * stride + i] = values[p * m + i] } }
                            var c = [Float](repeating: 0, count: m * n)
                            XCTAssertTrue(suder_sgemm(true, false, m, n, k, 1, a, stride, b, n, 0, &c, n, threads))
                            return c.map(\.bitPattern)
                        }
                        assertBitwiseEqual(
                            product(stride: lda), product(stride: lda + 5), "\(path) \(m)x\(n)x\(k) lda \(lda), \(threads) threads")
                    }
                }
            }
        }
    }

    /// The product over packed weights gives suder_sgemm's bits without reading W: rows 1-33 (every
    /// small-M tile split, 12 / 8 / 4 / 2 / 1 and 6 / 4 / 2 / 1 rows) and past them the packed path
    /// (100 and 300 rows, past a row block), columns with partial last panels and past a column
    /// block (2,100), split over items, depths past the prefetch distance and split into blocks,
    /// beta 0 (C not read: NaN there would leak), 1 and others with alpha (stores rounding
    /// alike), on one thread and split over three. The BLAS path has no packed layout and declines.
    func testPackedWeightsProductMatchesSgemmBitwise() throws {
        try Self.onEveryPath { path in
            var rng = Xoshiro256RNG(seed: 17)
            for (n, k) in [(1, 1), (45, 19), (70, 192), (1100, 64), (33, 7000), (2100, 600)] {
                let packedCount = suder_decode_packed_floats(n, k)
                let w = (0..<(n * k)).map { _ in Float(rng.nextGaussian()) }
                let packed: UnsafeMutablePointer<Float> = allocateAligned(packedCount)
                defer { deallocateAligned(packed) }
                packed.update(repeating: .nan, count: packedCount)
                suder_decode_pack(w, n, k, packed)
                XCTAssertEqual(packedCount == 0, path == .blas, "\(path)")
                let rows = Array(1...33) + [100, 300]
                let a = (0..<(300 * (k + 3))).map { _ in Float(rng.nextGaussian()) }
                for m in rows where m * n * k <= 200_000_000 {
                    for (alpha, beta) in [(Float(1), Float(0)), (1, 1), (-2, 0.25), (0.3, 0.7)] {
                        let c0 = (0..<(m * (n + 2))).map { _ in beta == 0 ? Float.nan : Float(rng.nextGaussian()) }
                        var expected = c0
                        let sgemmRan = suder_sgemm(false, true, m, n, k, alpha, a, k + 3, w, k, beta, &expected, n + 2, 1)
                        for threads in [1, 3] {
                            var c = c0
                            let ran = withKernelThreads(threads) {
                                suder_decode_gemm(m, n, k, alpha, a, k + 3, packed, beta, &c, n + 2, Int32(threads))
                            }
                            XCTAssertEqual(ran, path != .blas, "\(path) \(m)x\(n)x\(k)")
                            XCTAssertEqual(sgemmRan, path != .blas)
                            assertBitwiseEqual(
                                c.map(\.bitPattern), (ran ? expected : c0).map(\.bitPattern),
                                "\(path) \(m)x\(n)x\(k) alpha \(alpha) beta \(beta) threads \(threads)")
                        }
                    }
                }
            }
        }
    }

    /// Float.gemm, the model's one entry point, gives the reference result through every path.
    func testFloatGemmMatchesReferenceMatmul() throws {
        try withKernelThreads(3) { try Self.onEveryPath { path in checkFloatGemm(path) } }
        try Self.onEveryPath { path in checkFloatGemm(path) }
    }

    func checkFloatGemm(_ path: KernelPath) {
        var rng = Xoshiro256RNG(seed: 5)
        for N in [5, 16, 97] {
            let I = 40, O = 70
            let x = (0..<(N * I)).map { _ in Float(rng.nextGaussian()) }, w = (0..<(O * I)).map { _ in Float(rng.nextGaussian()) }
            var out = [Float](repeating: 0, count: N * O), ref = out
            matmulForward(&out, inp: x, weight: w, N: N, inDim: I, outDim: O)
            matmulForwardReference(&ref, inp: x, weight: w, N: N, inDim: I, outDim: O)
            XCTAssertLessThan(maxDifference(out, ref), 1e-4, "\(path) N \(N)")
        }
    }

    /// The Float layers that run the kernels (products, softmax exponentials, RoPE, SwiGLU) against
    /// their plain references on every path: matmul, causal attention, RoPE and SwiGLU, forward and
    /// backward. Float sums of
    /// a few dozen unit-sized terms round at ~1e-6; 1e-4 leaves room and still catches a wrong index.
    func testFloatLayersMatchReferences() throws {
        try withKernelThreads(3) { try Self.onEveryPath { path in checkFloatLayers(path) } }
        try Self.onEveryPath { path in checkFloatLayers(path) }
    }

    func checkFloatLayers(_ path: KernelPath) {
        var rng = Xoshiro256RNG(seed: 11)
        func random(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.nextGaussian()) } }
        let N = 37, I = 48, O = 40
        let x = random(N * I), w = random(O * I), dout = random(N * O)
        var dx = [Float](repeating: 0, count: N * I), dw = [Float](repeating: 0, count: O * I)
        var refDx = dx, refDw = dw
        matmulBackward(dinp: &dx, dweight: &dw, dout: dout, inp: x, weight: w, N: N, inDim: I, outDim: O)
        matmulBackwardReference(dinp: &refDx, dweight: &refDw, dout: dout, inp: x, weight: w, N: N, inDim: I, outDim: O)
        XCTAssertLessThan(maxDifference(dx, refDx), 1e-4, "\(path) matmul dinp")
        XCTAssertLessThan(maxDifference(dw, refDw), 1e-4, "\(path) matmul dweight")

        let B = 2, T = 19, NH = 3, HS = 16, C = NH * HS
        let qkv = random(B * T * 3 * C), R = random(B * T * C)
        var out = [Float](repeating: 0, count: B * T * C), probs = [Float](repeating: 0, count: B * NH * T * T)
        var refOut = out, refProbs = probs
        attentionForward(&out, probs: &probs, qkv: qkv, B: B, T: T, C: C, NH: NH)
        attentionForwardReference(&refOut, probs: &refProbs, qkv: qkv, B: B, T: T, C: C, NH: NH)
        XCTAssertLessThan(maxDifference(out, refOut), 1e-4, "\(path) attention out")
        XCTAssertLessThan(maxDifference(probs, refProbs), 1e-5, "\(path) attention probs")
        var dqkv = [Float](repeating: 0, count: B * T * 3 * C), scratch = [Float](repeating: 0, count: B * NH * T * T)
        var refDqkv = dqkv
        attentionBackward(dqkv: &dqkv, dscratch: &scratch, dout: R, qkv: qkv, probs: probs, B: B, T: T, C: C, NH: NH)
        attentionBackwardReference(dqkv: &refDqkv, dout: R, qkv: qkv, probs: probs, B: B, T: T, C: C, NH: NH)
        XCTAssertLessThan(maxDifference(dqkv, refDqkv), 1e-4, "\(path) attention dqkv")

        // RoPE against Double, both ways, heads whose halves fill vectors and heads with a tail.
        for headSize in [32, 24] {
            let heads = 4, stride = 2 * heads * headSize + 5
            let table = RotaryTable<Float>(maxSeq: 64, headSize: headSize, theta: 10000)
            let doubleTable = RotaryTable<Double>(maxSeq: 64, headSize: headSize, theta: 10000)
            defer { table.deallocate(); doubleTable.deallocate() }
            let positions = (0..<N).map { Int32(($0 * 7) % 64) }
            for inverse in [false, true] {
                var x = random(N * stride)
                var refX = x.map(Double.init)
                ropeRotate(&x, rowStride: stride, N: N, positions: positions, heads: heads, table: table, inverse: inverse)
                ropeRotate(&refX, rowStride: stride, N: N, positions: positions, heads: heads, table: doubleTable, inverse: inverse)
                XCTAssertLessThan(maxDifference(x, refX.map(Float.init)), 1e-5, "\(path) rope, head size \(headSize), inverse \(inverse)")
            }
        }

        // SwiGLU against Double, widths with and without a vector tail.
        for H in [24, 37] {
            let gu = random(N * 2 * H), dh = random(N * H)
            var h = [Float](repeating: 0, count: N * H), dgu = [Float](repeating: 0, count: N * 2 * H)
            swigluForward(&h, gu: gu, N: N, H: H)
            swigluBackward(dgu: &dgu, dh: dh, gu: gu, N: N, H: H)
            var refH = [Double](repeating: 0, count: N * H), refDgu = [Double](repeating: 0, count: N * 2 * H)
            swigluForward(&refH, gu: gu.map(Double.init), N: N, H: H)
            swigluBackward(dgu: &refDgu, dh: dh.map(Double.init), gu: gu.map(Double.init), N: N, H: H)
            XCTAssertLessThan(maxDifference(h, refH.map(Float.init)), 1e-5, "\(path) swiglu, H \(H)")
            XCTAssertLessThan(maxDifference(dgu, refDgu.map(Float.init)), 1e-5, "\(path) swiglu backward, H \(H)")
        }
    }

    /// The vectorised exponentials against Double exp: within 4 float ulps over the range a softmax
    /// and SwiGLU meet, the sum matching, tails of every length, in place, and the edge values.
    func testExponentialsMatchDoubleExp() throws {
        try Self.onEveryPath { checkExponentials($0) }
    }

    func checkExponentials(_ path: KernelPath) {
        var rng = Xoshiro256RNG(seed: 9)
        for count in [1, 15, 16, 17, 100, 1100] {
            let x = (0..<count).map { _ in Float(rng.nextUniform() * 120 - 100) }  // [-100, 20]
            var out = [Float](repeating: .nan, count: count)
            let sum = suder_exponentials(&out, x, count, 1.5, 0.75)
            var expectedSum = 0.0
            for i in 0..<count {
                let expected = Foundation.exp(Double((x[i] - 1.5) * 0.75))
                expectedSum += expected
                let ulp = Double(Float(expected).ulp)
                XCTAssertLessThanOrEqual(abs(Double(out[i]) - expected), 4 * ulp, "\(path) e^\((x[i] - 1.5) * 0.75)")
            }
            XCTAssertEqual(Double(sum), expectedSum, accuracy: 1e-5 * expectedSum, "\(path) count \(count)")
            var inPlace = x
            _ = suder_exponentials(&inPlace, inPlace, count, 1.5, 0.75)
            XCTAssertEqual(inPlace, out, "\(path) in place")
        }
        let edges: [Float] = [0, -0.0, 89, 1000, -87, -120, -.infinity, .infinity]
        var out = [Float](repeating: 0, count: edges.count)
        _ = suder_exponentials(&out, edges, edges.count, 0, 1)
        XCTAssertEqual(Array(out[0..<2]), [1, 1], "\(path)")
        XCTAssertEqual(Array(out[2..<4]), [.infinity, .infinity], "\(path)")
        XCTAssertEqual(Double(out[4]), Foundation.exp(-87.0), accuracy: 4 * Double(Float(Foundation.exp(-87.0)).ulp), "\(path)")
        XCTAssertEqual(Array(out[5..<8]), [0, 0, .infinity], "\(path)")
        var nan: [Float] = [.nan]
        _ = suder_exponentials(&nan, nan, 1, 0, 1)
        XCTAssertTrue(nan[0].isNaN, "\(path)")
    }

    /// The row sums and maxima against Double references: every tail length past the 4-vector
    /// loops and the single vectors, with and without the third factor, and the maximum anywhere
    /// in the row (a missed tail or a lane left out is off by a whole term).
    func testDotsAndMaximaMatchReferences() throws {
        try Self.onEveryPath { path in
            var rng = Xoshiro256RNG(seed: 11)
            for count in [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 96, 200, 1100] {
                let a = (0..<count).map { _ in Float(rng.nextUniform() * 2 - 1) }
                let b = (0..<count).map { _ in Float(rng.nextUniform() * 2 - 1) }
                let c = (0..<count).map { _ in Float(rng.nextUniform() * 2 - 1) }
                var two = 0.0, three = 0.0, magnitude = 0.0
                for i in 0..<count {
                    two += Double(a[i]) * Double(b[i])
                    three += Double(a[i]) * Double(b[i]) * Double(c[i])
                    magnitude += abs(Double(a[i]) * Double(b[i]))
                }
                let bound = 2 * Double(count + 2) * 6e-8 * max(magnitude, 1e-30)
                XCTAssertEqual(Double(suder_dot(a, b, nil, count)), two, accuracy: bound, "\(path) dot of \(count)")
                XCTAssertEqual(Double(suder_dot(a, b, c, count)), three, accuracy: bound, "\(path) three-way dot of \(count)")
                XCTAssertEqual(suder_maximum(a, count), a.max() ?? -.infinity, "\(path) maximum of \(count)")
                for position in [0, count / 2, count - 1] where count > 0 {
                    var peaked = a
                    peaked[position] = 7
                    XCTAssertEqual(suder_maximum(peaked, count), 7, "\(path) maximum at \(position) of \(count)")
                }
            }
        }
    }
}
