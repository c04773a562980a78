import CKernels
import Foundation
import XCTest

@testable import Model

/// The AVX-512 kernels of CKernels against plain references.
///
/// sgemm against a Double reference: every transpose combination,
/// alpha and beta values, sizes with tails past the packed 12 x 32 tile and the small-M 24- and
/// 12-row tiles, depth split into blocks, and leading dimensions wider than the matrices.
/// Tolerance: a float32 dot product of length k errs by at most ~k * 6e-8 of the sum of |terms|;
/// the bound below is that (doubled) plus the rounding of the alpha / beta update, so a wrong index,
/// missing tail or double-applied beta (errors of the size of the terms) cannot pass.
final class CKernelsTests: XCTestCase {
    static let cpuHasAVX512: Bool = {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let flags = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return false }
        let set = Set(flags.split(separator: " "))
        return set.contains("avx512f") && set.contains("fma")
    }()

    func testDetectionAgreesWithCPUInfo() {
        XCTAssertEqual(suder_kernels_available(), Self.cpuHasAVX512)
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

    func testAllTransposesSizesAndScalars() {
        // (m, n, k): single elements; tails in every dimension of the 12 x 32 tile; small-M tiles
        // (m <= 16: 24 rows of B per tile; m <= 32: 12 rows) with full, partial and fewer-than-a-tile
        // n; depth split into blocks (k > 256); rows split past 240; columns split past 2048.
        let shapes = [
            (1, 1, 1), (3, 5, 7), (13, 33, 17), (12, 32, 256), (16, 50, 192), (16, 24, 5),
            (17, 13, 9), (20, 7, 5), (32, 25, 40), (33, 70, 300), (250, 37, 513), (40, 2100, 3),
        ]
        for (m, n, k) in shapes {
            for transA in [false, true] {
                for transB in [false, true] {
                    for (alpha, beta) in [(Float(1), Float(0)), (0.5, 1), (-2, 0.25)] {
                        let ran = check(transA, transB, m: m, n: n, k: k, alpha: alpha, beta: beta, pad: (m + n) % 2 == 0 ? 3 : 0)
                        if Self.cpuHasAVX512 { XCTAssertTrue(ran, "kernel declined \(m)x\(n)x\(k)") }
                    }
                }
            }
        }
    }

    func testWideLeadingDimensions() {
        for transA in [false, true] {
            for transB in [false, true] {
                for (m, n, k) in [(7, 45, 19), (26, 40, 33), (61, 66, 70)] {
                    check(transA, transB, m: m, n: n, k: k, alpha: 1, beta: 1, pad: 5)
                    check(transA, transB, m: m, n: n, k: k, alpha: 0.75, beta: 0, pad: 17)
                }
            }
        }
    }

    /// With several OpenBLAS threads the single-threaded packed path declines (OpenBLAS splits the
    /// work); the small-M path, which OpenBLAS does not beat with threads, still runs.
    func testThreadedCallersKeepOpenBLASForLargeProducts() throws {
        try XCTSkipUnless(Self.cpuHasAVX512, "no AVX-512: every product goes to OpenBLAS")
        XCTAssertFalse(check(false, true, m: 64, n: 40, k: 24, alpha: 1, beta: 0, pad: 0, threads: 2))
        XCTAssertTrue(check(false, true, m: 16, n: 40, k: 24, alpha: 1, beta: 1, pad: 1, threads: 2))
    }

    /// Float.gemm, the model's one entry point, gives the reference result through whichever path.
    func testFloatGemmMatchesReferenceMatmul() {
        var rng = Xoshiro256RNG(seed: 5)
        for N in [5, 16, 97] {
            let I = 40, O = 70
            let x = (0..<(N * I)).map { _ in Float(rng.nextGaussian()) }, w = (0..<(O * I)).map { _ in Float(rng.nextGaussian()) }
            var out = [Float](repeating: 0, count: N * O), ref = out
            matmulForward(&out, inp: x, weight: w, N: N, inDim: I, outDim: O)
            matmulForwardReference(&ref, inp: x, weight: w, N: N, inDim: I, outDim: O)
            XCTAssertLessThan(maxDifference(out, ref), 1e-4, "N \(N)")
        }
    }

    /// The vectorised exponentials against Double exp: within 4 float ulps over the range a softmax
    /// and SwiGLU meet, the sum matching, tails of every length, in place, and the edge values.
    func testExponentialsMatchDoubleExp() {
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
                XCTAssertLessThanOrEqual(abs(Double(out[i]) - expected), 4 * ulp, "e^\((x[i] - 1.5) * 0.75)")
            }
            XCTAssertEqual(Double(sum), expectedSum, accuracy: 1e-5 * expectedSum)
            var inPlace = x
            _ = suder_exponentials(&inPlace, inPlace, count, 1.5, 0.75)
            XCTAssertEqual(inPlace, out)
        }
        let edges: [Float] = [0, -0.0, 89, 1000, -87, -120, -.infinity, .infinity]
        var out = [Float](repeating: 0, count: edges.count)
        _ = suder_exponentials(&out, edges, edges.count, 0, 1)
        XCTAssertEqual(Array(out[0..<2]), [1, 1])
        XCTAssertEqual(Array(out[2..<4]), [.infinity, .infinity])
        XCTAssertEqual(Double(out[4]), Foundation.exp(-87.0), accuracy: 4 * Double(Float(Foundation.exp(-87.0)).ulp))
        XCTAssertEqual(Array(out[5..<8]), [0, 0, .infinity])
        var nan: [Float] = [.nan]
        _ = suder_exponentials(&nan, nan, 1, 0, 1)
        XCTAssertTrue(nan[0].isNaN)
    }
}
