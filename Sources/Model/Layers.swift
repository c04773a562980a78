import Foundation

// The layer passes of the transformer, llm.c style: one `xxxForward` next to one `xxxBackward`,
// over unsafe pointers, never allocating. Every backward *accumulates* into parameter gradients
// (`+=`) so micro-batches add up; input gradients are documented per function.
// Generic over the scalar so the same code runs in Float (training) and Double (gradient checks).
// Where the fast path differs from the obvious loops (matmul, attention), the plain reference
// version sits beside it and a test compares the two.
// With several compute threads the per-row and per-(batch, head) loops split over the kernels'
// pool (`parallelRanges`) only where the items are independent, and sums across rows keep their
// row order, so every result is the same bit for bit on any thread count.
//
// Dimension legend:
//   B batch, T time (padded sequence length), N = B*T rows, C channels (dModel),
//   V vocabulary, NH heads, HS head size (C / NH), H MLP hidden width.
// Activations are row-major (N, features); linear weights are (out, in) like torch.nn.Linear,
// so a linear layer is out = inp * W^T.

// MARK: - Token embedding

/// out[r] = table[tokens[r]]
func embeddingForward<S: ModelScalar>(
    _ out: UnsafeMutablePointer<S>, tokens: UnsafePointer<Int32>, table: UnsafePointer<S>, N: Int, C: Int
) {
    gatherRows(out, rows: tokens, from: table, N: N, C: C)
}

/// out[r] = table[rows[r]], C values a row. `out` may be `table` when the rows ascend with
/// rows[r] >= r: each copy then reads a row that no earlier copy wrote.
func gatherRows<S: ModelScalar>(
    _ out: UnsafeMutablePointer<S>, rows: UnsafePointer<Int32>, from table: UnsafePointer<S>, N: Int, C: Int
) {
    for r in 0..<N where UnsafePointer(out + r * C) != table + Int(rows[r]) * C {
        (out + r * C).update(from: table + Int(rows[r]) * C, count: C)
    }
}

/// Differentiates `out[r] = table[tokens[r]]`: dtable[tokens[r]] += dout[r].
func embeddingBackward<S: ModelScalar>(
    _ dtable: UnsafeMutablePointer<S>, dout: UnsafePointer<S>, tokens: UnsafePointer<Int32>, N: Int, C: Int
) {
    for r in 0..<N {
        let row = dtable + Int(tokens[r]) * C
        let d = dout + r * C
        for c in 0..<C { row[c] += d[c] }
    }
}

// MARK: - RMSNorm

/// out = inp / sqrt(mean(inp^2) + eps) * weight; keeps rstd = 1/sqrt(...) per row for backward.
func rmsnormForward<S: ModelScalar>(
    _ out: UnsafeMutablePointer<S>, rstd: UnsafeMutablePointer<S>, inp: UnsafePointer<S>,
    weight: UnsafePointer<S>, N: Int, C: Int, eps: S
) {
    parallelRanges(N, work: N * C * elementWork) { rows in
        for r in rows {
            let x = inp + r * C, y = out + r * C
            let s = 1 / (S.dot(x, x, nil, count: C) / S(C) + eps).squareRoot()
            rstd[r] = s
            for c in 0..<C { y[c] = x[c] * s * weight[c] }
        }
    }
}

/// Differentiates rmsnormForward. dinp += dL/dinp (residual streams accumulate), dweight += .
/// With y_c = x_c s w_c and s = (mean x^2 + eps)^(-1/2):
/// dx_c = s w_c dy_c - s^3 x_c / C * sum_k dy_k w_k x_k.
func rmsnormBackward<S: ModelScalar>(
    dinp: UnsafeMutablePointer<S>, dweight: UnsafeMutablePointer<S>, dout: UnsafePointer<S>,
    inp: UnsafePointer<S>, rstd: UnsafePointer<S>, weight: UnsafePointer<S>, N: Int, C: Int
) {
    // dx: each row needs only itself.
    parallelRanges(N, work: N * C * elementWork) { rows in
        for r in rows {
            let x = inp + r * C, dy = dout + r * C, dx = dinp + r * C
            let s = rstd[r]
            let k = s * s * s * S.dot(dy, weight, x, count: C) / S(C)
            for c in 0..<C { dx[c] += s * weight[c] * dy[c] - k * x[c] }
        }
    }
    // dweight sums over the rows: split by blocks of columns, so each column still adds its rows
    // in row order on any thread count.
    let block = 16
    parallelRanges((C + block - 1) / block, work: N * C * elementWork) { blocks in
        let columns = (blocks.lowerBound * block)..<min(C, blocks.upperBound * block)
        for r in 0..<N {
            let x = inp + r * C, dy = dout + r * C
            let s = rstd[r]
            for c in columns { dweight[c] += dy[c] * x[c] * s }
        }
    }
}

// MARK: - Linear (matmul)

/// out (N, O) = inp (N, I) * weight (O, I)^T, plus out's old value when `accumulate`.
/// One gemm over all rows: the batched form is what makes the CPU fast.
func matmulForward<S: ModelScalar>(
    _ out: UnsafeMutablePointer<S>, inp: UnsafePointer<S>, weight: UnsafePointer<S>,
    N: Int, inDim: Int, outDim: Int, accumulate: Bool = false
) {
    S.gemm(
        transA: false, transB: true, m: N, n: outDim, k: inDim, alpha: 1,
        a: inp, lda: inDim, b: weight, ldb: inDim, beta: accumulate ? 1 : 0, c: out, ldc: outDim)
}

/// Differentiates matmulForward: dweight += dout^T * inp; dinp = dout * weight
/// (or += when `accumulateInput`).
func matmulBackward<S: ModelScalar>(
    dinp: UnsafeMutablePointer<S>, dweight: UnsafeMutablePointer<S>, dout: UnsafePointer<S>,
    inp: UnsafePointer<S>, weight: UnsafePointer<S>, N: Int, inDim: Int, outDim: Int,
    accumulateInput: Bool = false
) {
    S.gemm(
        transA: false, transB: false, m: N, n: inDim, k: outDim, alpha: 1,
        a: dout, lda: outDim, b: weight, ldb: inDim, beta: accumulateInput ? 1 : 0, c: dinp, ldc: inDim)
    S.gemm(
        transA: true, transB: false, m: outDim, n: inDim, k: N, alpha: 1,
        a: dout, lda: outDim, b: inp, ldb: inDim, beta: 1, c: dweight, ldc: inDim)
}

/// Plain-loop reference of matmulForward.
func matmulForwardReference<S: ModelScalar>(
    _ out: UnsafeMutablePointer<S>, inp: UnsafePointer<S>, weight: UnsafePointer<S>,
    N: Int, inDim: Int, outDim: Int, accumulate: Bool = false
) {
    for r in 0..<N {
        for o in 0..<outDim {
            var sum: S = accumulate ? out[r * outDim + o] : 0
            for i in 0..<inDim { sum += inp[r * inDim + i] * weight[o * inDim + i] }
            out[r * outDim + o] = sum
        }
    }
}

/// Plain-loop reference of matmulBackward.
func matmulBackwardReference<S: ModelScalar>(
    dinp: UnsafeMutablePointer<S>, dweight: UnsafeMutablePointer<S>, dout: UnsafePointer<S>,
    inp: UnsafePointer<S>, weight: UnsafePointer<S>, N: Int, inDim: Int, outDim: Int,
    accumulateInput: Bool = false
) {
    for r in 0..<N {
        for i in 0..<inDim {
            var sum: S = accumulateInput ? dinp[r * inDim + i] : 0
            for o in 0..<outDim { sum += dout[r * outDim + o] * weight[o * inDim + i] }
            dinp[r * inDim + i] = sum
        }
    }
    for o in 0..<outDim {
        for i in 0..<inDim {
            var sum: S = 0
            for r in 0..<N { sum += dout[r * outDim + o] * inp[r * inDim + i] }
            dweight[o * inDim + i] += sum
        }
    }
}

// MARK: - Rotary position embedding

/// Cosine and sine tables, (maxSeq, HS/2): angle(t, i) = t * theta^(-2i/HS).
/// Pairs are (i, i + HS/2) within each head ("rotate half", as in HF Llama).
struct RotaryTable<S: ModelScalar> {
    let cos: UnsafeMutablePointer<S>
    let sin: UnsafeMutablePointer<S>
    let half: Int

    init(maxSeq: Int, headSize: Int, theta: Double) {
        half = headSize / 2
        cos = allocateAligned(maxSeq * half)
        sin = allocateAligned(maxSeq * half)
        for t in 0..<maxSeq {
            for i in 0..<half {
                let angle = Double(t) * _pow(theta, -2.0 * Double(i) / Double(headSize))
                cos[t * half + i] = S(_cos(angle))
                sin[t * half + i] = S(_sin(angle))
            }
        }
    }

    func deallocate() {
        deallocateAligned(cos)
        deallocateAligned(sin)
    }
}

/// Rotates `heads` consecutive heads of size 2*table.half at the start of each row, in place, by
/// the angle of that row's position. q and k sit next to each other in a qkv row, so one call
/// with heads = 2*NH rotates both. `inverse` rotates back, which is exactly the backward pass
/// (a rotation's Jacobian is the rotation itself; its transpose is the inverse rotation).
func ropeRotate<S: ModelScalar>(
    _ x: UnsafeMutablePointer<S>, rowStride: Int, N: Int, positions: UnsafePointer<Int32>,
    heads: Int, table: RotaryTable<S>, inverse: Bool
) {
    parallelRanges(N, work: N * heads * 2 * table.half * elementWork) { rows in
        S.rotate(
            x + rows.lowerBound * rowStride, rowStride: rowStride, rows: rows.count, positions: positions + rows.lowerBound,
            heads: heads, cos: table.cos, sin: table.sin, half: table.half, inverse: inverse)
    }
}

// MARK: - Causal self-attention

/// out (N, C) = softmax(q k^T / sqrt(HS), causal) v per (batch, head); qkv rows are [q | k | v].
/// probs (B, NH, T, T) keeps the attention weights for backward (zero above the diagonal).
/// One gemm per (b, h) for scores and for the weighted sum; the (b, h) pairs split over threads.
func attentionForward<S: ModelScalar>(
    _ out: UnsafeMutablePointer<S>, probs: UnsafeMutablePointer<S>, qkv: UnsafePointer<S>,
    B: Int, T: Int, C: Int, NH: Int
) {
    let HS = C / NH, C3 = 3 * C
    let scale = 1 / S(HS).squareRoot()
    parallelRanges(B * NH, work: B * NH * T * T * HS) { pairs in
        for pair in pairs {
            let b = pair / NH, h = pair % NH
            let q = qkv + b * T * C3 + h * HS, k = q + C, v = q + 2 * C
            let p = probs + pair * T * T
            S.gemm(
                transA: false, transB: true, m: T, n: T, k: HS, alpha: scale,
                a: q, lda: C3, b: k, ldb: C3, beta: 0, c: p, ldc: T)
            causalSoftmaxRows(p, T: T)
            S.gemm(
                transA: false, transB: false, m: T, n: HS, k: T, alpha: 1,
                a: p, lda: T, b: v, ldb: C3, beta: 0, c: out + b * T * C + h * HS, ldc: C)
        }
    }
}

/// Row i of a (T, T) score matrix becomes softmax over columns 0...i; the rest become zero.
@inline(__always)
func causalSoftmaxRows<S: ModelScalar>(_ p: UnsafeMutablePointer<S>, T: Int) {
    for i in 0..<T {
        let row = p + i * T
        let inv = 1 / S.exponentials(row, row, count: i + 1, shift: S.maximum(row, count: i + 1), scale: 1)
        for j in 0...i { row[j] *= inv }
        for j in (i + 1)..<T { row[j] = 0 }
    }
}

/// Differentiates attentionForward: dqkv = dL/dqkv (overwritten). dscratch holds B*NH (T, T)
/// blocks, one per (b, h), so the pairs split over threads as in the forward.
/// dP = dO V^T; dV = P^T dO; dS = P .* (dP - rowsum(P .* dP)); dQ = scale dS K; dK = scale dS^T Q.
func attentionBackward<S: ModelScalar>(
    dqkv: UnsafeMutablePointer<S>, dscratch: UnsafeMutablePointer<S>, dout: UnsafePointer<S>,
    qkv: UnsafePointer<S>, probs: UnsafePointer<S>, B: Int, T: Int, C: Int, NH: Int
) {
    let HS = C / NH, C3 = 3 * C
    let scale = 1 / S(HS).squareRoot()
    parallelRanges(B * NH, work: 4 * B * NH * T * T * HS) { pairs in
        for pair in pairs {
            let b = pair / NH, h = pair % NH
            let q = qkv + b * T * C3 + h * HS, k = q + C, v = q + 2 * C
            let dq = dqkv + b * T * C3 + h * HS, dk = dq + C, dv = dq + 2 * C
            let p = probs + pair * T * T
            let dO = dout + b * T * C + h * HS
            let dS = dscratch + pair * T * T
            S.gemm(
                transA: false, transB: true, m: T, n: T, k: HS, alpha: 1,
                a: dO, lda: C, b: v, ldb: C3, beta: 0, c: dS, ldc: T)
            S.gemm(
                transA: true, transB: false, m: T, n: HS, k: T, alpha: 1,
                a: p, lda: T, b: dO, ldb: C, beta: 0, c: dv, ldc: C3)
            for i in 0..<T {
                let pRow = p + i * T, dRow = dS + i * T
                let dot = S.dot(pRow, dRow, nil, count: i + 1)
                for j in 0...i { dRow[j] = pRow[j] * (dRow[j] - dot) }
                for j in (i + 1)..<T { dRow[j] = 0 }
            }
            S.gemm(
                transA: false, transB: false, m: T, n: HS, k: T, alpha: scale,
                a: dS, lda: T, b: k, ldb: C3, beta: 0, c: dq, ldc: C3)
            S.gemm(
                transA: true, transB: false, m: T, n: HS, k: T, alpha: scale,
                a: dS, lda: T, b: q, ldb: C3, beta: 0, c: dk, ldc: C3)
        }
    }
}

/// Plain-loop reference of attentionForward (same outputs, including probs).
func attentionForwardReference<S: ModelScalar>(
    _ out: UnsafeMutablePointer<S>, probs: UnsafeMutablePointer<S>, qkv: UnsafePointer<S>,
    B: Int, T: Int, C: Int, NH: Int
) {
    let HS = C / NH, C3 = 3 * C
    let scale = 1 / S(HS).squareRoot()
    for b in 0..<B {
        for h in 0..<NH {
            let p = probs + (b * NH + h) * T * T
            for i in 0..<T {
                let q = qkv + (b * T + i) * C3 + h * HS
                for j in 0..<T {
                    var dot: S = 0
                    if j <= i {
                        let k = qkv + (b * T + j) * C3 + C + h * HS
                        for d in 0..<HS { dot += q[d] * k[d] }
                    }
                    p[i * T + j] = dot * scale
                }
            }
            causalSoftmaxRows(p, T: T)
            for i in 0..<T {
                let o = out + (b * T + i) * C + h * HS
                for d in 0..<HS {
                    var sum: S = 0
                    for j in 0...i { sum += p[i * T + j] * qkv[(b * T + j) * C3 + 2 * C + h * HS + d] }
                    o[d] = sum
                }
            }
        }
    }
}

/// Plain-loop reference of attentionBackward (allocates a row buffer: test use only).
func attentionBackwardReference<S: ModelScalar>(
    dqkv: UnsafeMutablePointer<S>, dout: UnsafePointer<S>,
    qkv: UnsafePointer<S>, probs: UnsafePointer<S>, B: Int, T: Int, C: Int, NH: Int
) {
    let HS = C / NH, C3 = 3 * C
    let scale = 1 / S(HS).squareRoot()
    for b in 0..<B {
        for h in 0..<NH {
            let p = probs + (b * NH + h) * T * T
            for i in 0..<T {
                for d in 0..<HS {
                    dqkv[(b * T + i) * C3 + h * HS + d] = 0
                    dqkv[(b * T + i) * C3 + C + h * HS + d] = 0
                    dqkv[(b * T + i) * C3 + 2 * C + h * HS + d] = 0
                }
            }
            for i in 0..<T {
                let dO = dout + (b * T + i) * C + h * HS
                // dP and the softmax backward, row i
                var dP = [S](repeating: 0, count: i + 1)
                for j in 0...i {
                    let v = qkv + (b * T + j) * C3 + 2 * C + h * HS
                    for d in 0..<HS {
                        dP[j] += dO[d] * v[d]
                        dqkv[(b * T + j) * C3 + 2 * C + h * HS + d] += p[i * T + j] * dO[d]
                    }
                }
                var dot: S = 0
                for j in 0...i { dot += p[i * T + j] * dP[j] }
                for j in 0...i {
                    let dScore = p[i * T + j] * (dP[j] - dot) * scale
                    for d in 0..<HS {
                        dqkv[(b * T + i) * C3 + h * HS + d] += dScore * qkv[(b * T + j) * C3 + C + h * HS + d]
                        dqkv[(b * T + j) * C3 + C + h * HS + d] += dScore * qkv[(b * T + i) * C3 + h * HS + d]
                    }
                }
            }
        }
    }
}

// MARK: - SwiGLU

/// h (N, H) = silu(gate) * up, where gu rows are [gate | up] (N, 2H).
func swigluForward<S: ModelScalar>(_ h: UnsafeMutablePointer<S>, gu: UnsafePointer<S>, N: Int, H: Int) {
    parallelRanges(N, work: N * H * elementWork) { rows in
        S.swiglu(h + rows.lowerBound * H, gu: gu + rows.lowerBound * 2 * H, rows: rows.count, width: H)
    }
}

/// Differentiates swigluForward: dgu = dL/dgu (overwritten).
/// d/dg = u * sig (1 + g (1 - sig)); d/du = g * sig.
func swigluBackward<S: ModelScalar>(
    dgu: UnsafeMutablePointer<S>, dh: UnsafePointer<S>, gu: UnsafePointer<S>, N: Int, H: Int
) {
    parallelRanges(N, work: N * H * elementWork) { rows in
        let first = rows.lowerBound
        S.swigluBackward(dgu + first * 2 * H, dh: dh + first * H, gu: gu + first * 2 * H, rows: rows.count, width: H)
    }
}

// MARK: - Weighted token log-likelihood (fused log-softmax + gather)

/// For every row with weight != 0: logp[r] = log softmax(logits[r])[targets[r]], and the row is
/// overwritten with its softmax probabilities (what the backward needs). Rows with weight 0 are
/// skipped (logp 0) and left as they are.
func tokenLogProbForward<S: ModelScalar>(
    logp: UnsafeMutablePointer<S>, logits: UnsafeMutablePointer<S>, targets: UnsafePointer<Int32>,
    weights: UnsafePointer<S>, N: Int, V: Int
) {
    parallelRanges(N, work: N * V * elementWork) { rows in
        for r in rows {
            guard weights[r] != 0 else { logp[r] = 0; continue }
            let row = logits + r * V
            let maxValue = S.maximum(row, count: V)
            let target = row[Int(targets[r])]
            // One exponential per logit: keep exp(x - max), then normalise.
            let sum = S.exponentials(row, row, count: V, shift: maxValue, scale: 1)
            logp[r] = target - maxValue - S.logarithm(sum)
            let inv = 1 / sum
            for i in 0..<V { row[i] *= inv }
        }
    }
}

/// Differentiates sum_r coefficients[r] * logp[r] w.r.t. the logits, in place over the
/// probabilities left by tokenLogProbForward: dlogits = coef * (onehot(target) - p); rows with
/// coefficient 0 become 0.
func tokenLogProbBackward<S: ModelScalar>(
    probsToGradients rows: UnsafeMutablePointer<S>, targets: UnsafePointer<Int32>,
    coefficients: UnsafePointer<S>, N: Int, V: Int
) {
    parallelRanges(N, work: N * V * elementWork) { range in
        for r in range {
            let row = rows + r * V
            let coef = coefficients[r]
            guard coef != 0 else { row.update(repeating: 0, count: V); continue }
            for i in 0..<V { row[i] *= -coef }
            row[Int(targets[r])] += coef
        }
    }
}

// Small wrappers so the generic code above can call libm without ambiguity.
@inline(__always) func _pow(_ x: Double, _ y: Double) -> Double { Foundation.pow(x, y) }
@inline(__always) func _cos(_ x: Double) -> Double { Foundation.cos(x) }
@inline(__always) func _sin(_ x: Double) -> Double { Foundation.sin(x) }
