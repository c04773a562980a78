import XCTest

@testable import Model

/// Finite-difference checks of every layer's backward, in Double, through the same generic
/// kernels the Float model runs. Loss = sum(out .* R) for a fixed random R, so dout = R.
/// Central differences with h = 1e-5 have truncation error ~h^2 and rounding ~1e-16/h, so
/// agreement to 1e-7 (relative to the gradient scale) means the analytic gradient is right.
final class LayerGradientTests: XCTestCase {
    var rng = Xoshiro256RNG(seed: 7)

    func random(_ n: Int, scale: Double = 1) -> [Double] { (0..<n).map { _ in rng.nextGaussian() * scale } }

    /// Compares `analytic` with central differences of `loss` around `x`.
    func assertGradient(
        _ label: String, _ x: [Double], analytic: [Double], loss: ([Double]) -> Double,
        h: Double = 1e-5, tolerance: Double = 1e-7, file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertEqual(x.count, analytic.count, label, file: file, line: line)
        let scale = max(1, analytic.map(abs).max() ?? 1)
        var worst = 0.0
        var probe = x
        for i in x.indices {
            probe[i] = x[i] + h; let plus = loss(probe)
            probe[i] = x[i] - h; let minus = loss(probe)
            probe[i] = x[i]
            worst = max(worst, abs((plus - minus) / (2 * h) - analytic[i]) / scale)
        }
        XCTAssertLessThan(worst, tolerance, "\(label): worst relative gradient error \(worst)", file: file, line: line)
    }

    func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }

    func testRMSNorm() {
        let N = 3, C = 8
        let x = random(N * C), w = random(C), R = random(N * C)
        func forward(_ x: [Double], _ w: [Double]) -> [Double] {
            var out = [Double](repeating: 0, count: N * C), rstd = [Double](repeating: 0, count: N)
            rmsnormForward(&out, rstd: &rstd, inp: x, weight: w, N: N, C: C, eps: 1e-5)
            return out
        }
        var rstd = [Double](repeating: 0, count: N), out = [Double](repeating: 0, count: N * C)
        rmsnormForward(&out, rstd: &rstd, inp: x, weight: w, N: N, C: C, eps: 1e-5)
        var dx = [Double](repeating: 0, count: N * C), dw = [Double](repeating: 0, count: C)
        rmsnormBackward(dinp: &dx, dweight: &dw, dout: R, inp: x, rstd: rstd, weight: w, N: N, C: C)
        assertGradient("rmsnorm input", x, analytic: dx) { dot(forward($0, w), R) }
        assertGradient("rmsnorm weight", w, analytic: dw) { dot(forward(x, $0), R) }
    }

    func testMatmulAndReference() {
        let N = 5, I = 7, O = 4
        let x = random(N * I), w = random(O * I), R = random(N * O)
        func forward(_ x: [Double], _ w: [Double]) -> [Double] {
            var out = [Double](repeating: 0, count: N * O)
            matmulForward(&out, inp: x, weight: w, N: N, inDim: I, outDim: O)
            return out
        }
        var dx = [Double](repeating: 0, count: N * I), dw = [Double](repeating: 0, count: O * I)
        matmulBackward(dinp: &dx, dweight: &dw, dout: R, inp: x, weight: w, N: N, inDim: I, outDim: O)
        assertGradient("matmul input", x, analytic: dx) { dot(forward($0, w), R) }
        assertGradient("matmul weight", w, analytic: dw) { dot(forward(x, $0), R) }

        var refOut = [Double](repeating: 0, count: N * O)
        matmulForwardReference(&refOut, inp: x, weight: w, N: N, inDim: I, outDim: O)
        XCTAssertEqual(maxDifference(refOut, forward(x, w)), 0, accuracy: 1e-12)
        var refDx = [Double](repeating: 0, count: N * I), refDw = [Double](repeating: 0, count: O * I)
        matmulBackwardReference(dinp: &refDx, dweight: &refDw, dout: R, inp: x, weight: w, N: N, inDim: I, outDim: O)
        XCTAssertEqual(maxDifference(refDx, dx), 0, accuracy: 1e-12)
        XCTAssertEqual(maxDifference(refDw, dw), 0, accuracy: 1e-12)
    }

    func testRotaryBackwardIsInverseRotation() {
        let N = 4, NH = 2, HS = 6, C = NH * HS
        let table = RotaryTable<Double>(maxSeq: 8, headSize: HS, theta: 10000)
        defer { table.deallocate() }
        let positions: [Int32] = [0, 3, 5, 7]
        let x = random(N * 3 * C), R = random(N * 3 * C)
        func forward(_ x: [Double]) -> [Double] {
            var y = x
            ropeRotate(&y, rowStride: 3 * C, N: N, positions: positions, heads: 2 * NH, table: table, inverse: false)
            return y
        }
        var dx = R
        ropeRotate(&dx, rowStride: 3 * C, N: N, positions: positions, heads: 2 * NH, table: table, inverse: true)
        assertGradient("rope", x, analytic: dx) { dot(forward($0), R) }
        // Position 0 is the identity on q and k; v is never touched; norms are preserved.
        let y = forward(x)
        XCTAssertEqual(maxDifference(Array(y[0..<(3 * C)]), Array(x[0..<(3 * C)])), 0)
        XCTAssertEqual(maxDifference(Array(y[(5 * C)..<(6 * C)]), Array(x[(5 * C)..<(6 * C)])), 0)
        XCTAssertEqual(dot(y, y), dot(x, x), accuracy: 1e-9)
    }

    func testAttentionAndReference() {
        let B = 2, T = 5, NH = 2, HS = 4, C = NH * HS
        let qkv = random(B * T * 3 * C), R = random(B * T * C)
        func forward(_ qkv: [Double]) -> (out: [Double], probs: [Double]) {
            var out = [Double](repeating: 0, count: B * T * C), probs = [Double](repeating: 0, count: B * NH * T * T)
            attentionForward(&out, probs: &probs, qkv: qkv, B: B, T: T, C: C, NH: NH)
            return (out, probs)
        }
        let (out, probs) = forward(qkv)
        var dqkv = [Double](repeating: 0, count: B * T * 3 * C), scratch = [Double](repeating: 0, count: B * NH * T * T)
        attentionBackward(dqkv: &dqkv, dscratch: &scratch, dout: R, qkv: qkv, probs: probs, B: B, T: T, C: C, NH: NH)
        assertGradient("attention", qkv, analytic: dqkv) { dot(forward($0).out, R) }

        var refOut = [Double](repeating: 0, count: B * T * C), refProbs = [Double](repeating: 0, count: B * NH * T * T)
        attentionForwardReference(&refOut, probs: &refProbs, qkv: qkv, B: B, T: T, C: C, NH: NH)
        XCTAssertEqual(maxDifference(refOut, out), 0, accuracy: 1e-12)
        XCTAssertEqual(maxDifference(refProbs, probs), 0, accuracy: 1e-12)
        var refDqkv = [Double](repeating: 0, count: B * T * 3 * C)
        attentionBackwardReference(dqkv: &refDqkv, dout: R, qkv: qkv, probs: probs, B: B, T: T, C: C, NH: NH)
        XCTAssertEqual(maxDifference(refDqkv, dqkv), 0, accuracy: 1e-12)
    }

    func testSwiGLU() {
        let N = 3, H = 5
        let gu = random(N * 2 * H, scale: 2), R = random(N * H)
        func forward(_ gu: [Double]) -> [Double] {
            var h = [Double](repeating: 0, count: N * H)
            swigluForward(&h, gu: gu, N: N, H: H)
            return h
        }
        var dgu = [Double](repeating: 0, count: N * 2 * H)
        swigluBackward(dgu: &dgu, dh: R, gu: gu, N: N, H: H)
        assertGradient("swiglu", gu, analytic: dgu) { dot(forward($0), R) }
    }

    func testEmbedding() {
        let N = 4, C = 3, V = 5
        let table = random(V * C), R = random(N * C)
        let tokens: [Int32] = [1, 4, 1, 0]
        func forward(_ table: [Double]) -> [Double] {
            var out = [Double](repeating: 0, count: N * C)
            embeddingForward(&out, tokens: tokens, table: table, N: N, C: C)
            return out
        }
        var dtable = [Double](repeating: 0, count: V * C)
        embeddingBackward(&dtable, dout: R, tokens: tokens, N: N, C: C)
        assertGradient("embedding", table, analytic: dtable) { dot(forward($0), R) }
    }

    func testTokenLogProb() {
        let N = 4, V = 6
        let logits = random(N * V, scale: 2)
        let targets: [Int32] = [2, 5, 0, 3]
        let weights: [Double] = [1, 0, 0.5, -2]  // a zero row is skipped; negative weights allowed
        func objective(_ logits: [Double]) -> Double {
            var rows = logits, logp = [Double](repeating: 0, count: N)
            tokenLogProbForward(logp: &logp, logits: &rows, targets: targets, weights: weights, N: N, V: V)
            return dot(logp, weights)
        }
        var rows = logits, logp = [Double](repeating: 0, count: N)
        tokenLogProbForward(logp: &logp, logits: &rows, targets: targets, weights: weights, N: N, V: V)
        // Forward value against a direct log-softmax.
        let row0 = Array(logits[0..<V])
        let logSum = log(row0.map { exp($0) }.reduce(0, +))
        XCTAssertEqual(logp[0], row0[2] - logSum, accuracy: 1e-12)
        XCTAssertEqual(logp[1], 0)
        tokenLogProbBackward(probsToGradients: &rows, targets: targets, coefficients: weights, N: N, V: V)
        assertGradient("token log-prob", logits, analytic: rows, loss: objective)
    }
}

func maxDifference<S: BinaryFloatingPoint>(_ a: [S], _ b: [S]) -> Double {
    precondition(a.count == b.count)
    return zip(a, b).reduce(0.0) { max($0, Double(abs($1.0 - $1.1))) }
}
