import Foundation

/// Offsets of one layer's tensors in the flat parameter buffer. wq, wk, wv are stored back to
/// back so they form one (3C, C) matrix, and w1 (gate), w3 (up) one (2H, C) matrix: each is then
/// a single gemm while the table still names the tensors separately.
struct LayerOffsets {
    let attentionNorm, wqkv, wo, ffnNorm, w13, w2: Int
}

/// Decoder-only transformer: token embedding, nLayers x (pre-norm RMSNorm, rotary multi-head
/// causal attention, residual; pre-norm RMSNorm, SwiGLU MLP, residual), final RMSNorm, output
/// head (tied to the embedding or not). No biases.
///
/// Parameters and gradients are flat Float buffers described by `parameterTable`.
/// Activations are allocated once for `batchCapacity` x `maxSeq` tokens and reused.
/// Not thread-safe: one forward/backward at a time.
public final class Transformer {
    public let config: ModelConfig
    /// Largest B a single forward accepts (score() chunks larger requests).
    public let batchCapacity: Int
    public let parameterTable: [ParameterEntry]
    public let parameterCount: Int
    public let parameters: UnsafeMutableBufferPointer<Float>
    public let gradients: UnsafeMutableBufferPointer<Float>

    let layerOffsets: [LayerOffsets]
    let embeddingOffset: Int
    let finalNormOffset: Int
    let outputOffset: Int
    let rotary: RotaryTable<Float>
    private let acts: Activations
    /// Shape of the batch held in the activations (for backward).
    private var heldB = 0, heldT = 0
    /// Rows of the held batch that went through the head: acts.logits row i is batch row
    /// acts.headRows[i] (see runBody).
    private var headRowCount = 0

    public init(config: ModelConfig, seed: UInt64, batchCapacity: Int = 8) {
        try! config.validate()
        precondition(batchCapacity > 0)
        self.config = config
        self.batchCapacity = batchCapacity
        let C = config.dModel, H = config.ffnHidden, V = config.vocabSize

        var table: [ParameterEntry] = []
        var cursor = 0
        func add(_ name: String, _ shape: [Int]) -> Int {
            let entry = ParameterEntry(name: name, offset: cursor, shape: shape)
            table.append(entry)
            cursor += entry.count
            return entry.offset
        }
        embeddingOffset = add("tok_embeddings.weight", [V, C])
        var layers: [LayerOffsets] = []
        for l in 0..<config.nLayers {
            let p = "layers.\(l)."
            let attentionNorm = add(p + "attention_norm.weight", [C])
            let wq = add(p + "attention.wq.weight", [C, C])
            _ = add(p + "attention.wk.weight", [C, C])
            _ = add(p + "attention.wv.weight", [C, C])
            let wo = add(p + "attention.wo.weight", [C, C])
            let ffnNorm = add(p + "ffn_norm.weight", [C])
            let w1 = add(p + "feed_forward.w1.weight", [H, C])
            _ = add(p + "feed_forward.w3.weight", [H, C])
            let w2 = add(p + "feed_forward.w2.weight", [C, H])
            layers.append(LayerOffsets(attentionNorm: attentionNorm, wqkv: wq, wo: wo, ffnNorm: ffnNorm, w13: w1, w2: w2))
        }
        finalNormOffset = add("norm.weight", [C])
        outputOffset = config.tiedHead ? embeddingOffset : add("output.weight", [V, C])
        layerOffsets = layers
        parameterTable = table
        parameterCount = cursor
        parameters = UnsafeMutableBufferPointer(start: allocateAligned(cursor, of: Float.self), count: cursor)
        gradients = UnsafeMutableBufferPointer(start: allocateAligned(cursor, of: Float.self), count: cursor)
        rotary = RotaryTable(maxSeq: config.maxSeq, headSize: config.headSize, theta: config.ropeTheta)
        acts = Activations(config: config, batchCapacity: batchCapacity)
        initialiseParameters(seed: seed)
    }

    deinit {
        deallocateAligned(parameters.baseAddress!)
        deallocateAligned(gradients.baseAddress!)
        rotary.deallocate()
        acts.deallocate()
    }

    /// Norm gains 1; matrices N(0, initStd), the residual output projections (wo, w2) scaled by
    /// 1/sqrt(2 nLayers) so the residual stream's variance does not grow with depth.
    private func initialiseParameters(seed: UInt64) {
        var rng = Xoshiro256RNG(seed: seed)
        let residualScale = 1 / Double(2 * config.nLayers).squareRoot()
        for entry in parameterTable {
            let p = parameters.baseAddress! + entry.offset
            if entry.shape.count == 1 {
                p.update(repeating: 1, count: entry.count)
                continue
            }
            let isResidualOutput = entry.name.hasSuffix("attention.wo.weight") || entry.name.hasSuffix("feed_forward.w2.weight")
            let std = Double(config.initStd) * (isResidualOutput ? residualScale : 1)
            for i in 0..<entry.count { p[i] = Float(rng.nextGaussian() * std) }
        }
    }

    public func zeroGradients() {
        gradients.baseAddress!.update(repeating: 0, count: parameterCount)
    }

    public func entry(named name: String) -> ParameterEntry? {
        parameterTable.first { $0.name == name }
    }

    // MARK: - Forward

    /// Runs the model on `batch` and returns, per sequence, sum_t weights[t] * log p(token t | < t).
    /// Keeps the activations for `backward`.
    @discardableResult
    public func forward(_ batch: TokenBatch) -> [Double] {
        runBody(batch, everyRow: false)
        let a = acts
        tokenLogProbForward(
            logp: a.logp, logits: a.logits, targets: a.targets, weights: a.rowWeights, N: headRowCount, V: config.vocabSize)
        var sums = [Double](repeating: 0, count: heldB)
        for i in 0..<headRowCount { sums[Int(a.headRows[i]) / heldT] += Double(a.rowWeights[i]) * Double(a.logp[i]) }
        return sums
    }

    /// Raw next-token logits (B, T, V) of a batch: row (b, t) predicts token t + 1.
    public func logits(_ batch: TokenBatch) -> [Float] {
        runBody(batch, everyRow: true)
        return Array(UnsafeBufferPointer(start: acts.logits, count: batch.batchSize * batch.seqLen * config.vocabSize))
    }

    /// Embedding, layers, final norm and head into acts.logits; sets up the shifted targets and
    /// weights: batch row (b, t) predicts tokens[b, t+1] with weight weights[b, t+1]. Unless
    /// `everyRow`, only the rows with a weight go through the head, moved to the front of
    /// lnFinal, targets and rowWeights in order (acts.headRows maps them back): the others (the
    /// context a score is conditioned on, padding) would cost the head's products for nothing.
    private func runBody(_ batch: TokenBatch, everyRow: Bool) {
        let B = batch.batchSize, T = batch.seqLen
        precondition(B >= 1 && B <= batchCapacity, "batch of \(B) exceeds capacity \(batchCapacity)")
        precondition(T >= 1 && T <= config.maxSeq, "sequence length \(T) exceeds maxSeq \(config.maxSeq)")
        precondition(batch.tokens.count == B * T && batch.weights.count == B * T)
        heldB = B; heldT = T
        let N = B * T, C = config.dModel, H = config.ffnHidden, V = config.vocabSize, NH = config.nHeads
        let a = acts
        batch.tokens.withUnsafeBufferPointer { tokens in
            for i in 0..<N {
                precondition(tokens[i] >= 0 && Int(tokens[i]) < V, "token \(tokens[i]) outside the vocabulary")
                a.tokens[i] = tokens[i]
            }
        }
        for b in 0..<B {
            for t in 0..<T {
                let r = b * T + t
                a.positions[r] = Int32(t)
                let last = t == T - 1
                a.targets[r] = last ? 0 : a.tokens[r + 1]
                a.rowWeights[r] = last ? 0 : batch.weights[r + 1]
            }
        }
        let p = parameters.baseAddress!
        embeddingForward(a.residual[0], tokens: a.tokens, table: p + embeddingOffset, N: N, C: C)
        for (l, o) in layerOffsets.enumerated() {
            rmsnormForward(a.ln1[l], rstd: a.rstd1[l], inp: a.residual[l], weight: p + o.attentionNorm, N: N, C: C, eps: config.normEps)
            matmulForward(a.qkv[l], inp: a.ln1[l], weight: p + o.wqkv, N: N, inDim: C, outDim: 3 * C)
            ropeRotate(a.qkv[l], rowStride: 3 * C, N: N, positions: a.positions, heads: 2 * NH, table: rotary, inverse: false)
            attentionForward(a.attention[l], probs: a.probs[l], qkv: a.qkv[l], B: B, T: T, C: C, NH: NH)
            a.residualMid[l].update(from: a.residual[l], count: N * C)
            matmulForward(a.residualMid[l], inp: a.attention[l], weight: p + o.wo, N: N, inDim: C, outDim: C, accumulate: true)
            rmsnormForward(a.ln2[l], rstd: a.rstd2[l], inp: a.residualMid[l], weight: p + o.ffnNorm, N: N, C: C, eps: config.normEps)
            matmulForward(a.gateUp[l], inp: a.ln2[l], weight: p + o.w13, N: N, inDim: C, outDim: 2 * H)
            swigluForward(a.hidden[l], gu: a.gateUp[l], N: N, H: H)
            a.residual[l + 1].update(from: a.residualMid[l], count: N * C)
            matmulForward(a.residual[l + 1], inp: a.hidden[l], weight: p + o.w2, N: N, inDim: H, outDim: C, accumulate: true)
        }
        rmsnormForward(a.lnFinal, rstd: a.rstdFinal, inp: a.residual[config.nLayers], weight: p + finalNormOffset, N: N, C: C, eps: config.normEps)
        var rows = 0
        for r in 0..<N where everyRow || a.rowWeights[r] != 0 {
            a.headRows[rows] = Int32(r)
            a.targets[rows] = a.targets[r]
            a.rowWeights[rows] = a.rowWeights[r]
            rows += 1
        }
        gatherRows(a.lnFinal, rows: a.headRows, from: a.lnFinal, N: rows, C: C)
        headRowCount = rows
        if rows > 0 { matmulForward(a.logits, inp: a.lnFinal, weight: p + outputOffset, N: rows, inDim: C, outDim: V) }
    }

    // MARK: - Backward

    /// Accumulates into `gradients` the gradient of sum_b coefficients[b] * S_b, where S_b is what
    /// the last `forward` returned for sequence b. Pass dLoss/dS_b: -1/N for supervised
    /// cross-entropy over N target tokens, a preference loss's coefficients for SimPO / DPO.
    public func backward(sequenceCoefficients coefficients: [Float]) {
        let B = heldB, T = heldT
        precondition(B > 0, "backward without forward")
        precondition(coefficients.count == B, "one coefficient per sequence")
        let N = B * T, C = config.dModel, H = config.ffnHidden, V = config.vocabSize, NH = config.nHeads
        let a = acts, p = parameters.baseAddress!, g = gradients.baseAddress!
        let rows = headRowCount
        for i in 0..<rows { a.rowCoefficients[i] = coefficients[Int(a.headRows[i]) / T] * a.rowWeights[i] }
        tokenLogProbBackward(probsToGradients: a.logits, targets: a.targets, coefficients: a.rowCoefficients, N: rows, V: V)
        // logits = lnFinal * Wout^T over the head rows, into dAttention (free until the layers);
        // then each goes to its batch row of dNormed, and the rows without a head get zero.
        if rows > 0 {
            matmulBackward(
                dinp: a.dAttention, dweight: g + outputOffset, dout: a.logits, inp: a.lnFinal, weight: p + outputOffset,
                N: rows, inDim: C, outDim: V)
        }
        a.dNormed.update(repeating: 0, count: N * C)
        for i in 0..<rows { (a.dNormed + Int(a.headRows[i]) * C).update(from: a.dAttention + i * C, count: C) }
        // lnFinal = rmsnorm(residual[L])
        a.dResidual.update(repeating: 0, count: N * C)
        rmsnormBackward(
            dinp: a.dResidual, dweight: g + finalNormOffset, dout: a.dNormed, inp: a.residual[config.nLayers],
            rstd: a.rstdFinal, weight: p + finalNormOffset, N: N, C: C)
        for (l, o) in layerOffsets.enumerated().reversed() {
            // residual[l+1] = residualMid + hidden * W2^T  (dResidual is d residual[l+1] here)
            matmulBackward(dinp: a.dHidden, dweight: g + o.w2, dout: a.dResidual, inp: a.hidden[l], weight: p + o.w2, N: N, inDim: H, outDim: C)
            // hidden = silu(gate) * up
            swigluBackward(dgu: a.dGateUp, dh: a.dHidden, gu: a.gateUp[l], N: N, H: H)
            // gateUp = ln2 * W13^T
            matmulBackward(dinp: a.dNormed, dweight: g + o.w13, dout: a.dGateUp, inp: a.ln2[l], weight: p + o.w13, N: N, inDim: C, outDim: 2 * H)
            // ln2 = rmsnorm(residualMid); afterwards dResidual is d residualMid
            rmsnormBackward(
                dinp: a.dResidual, dweight: g + o.ffnNorm, dout: a.dNormed, inp: a.residualMid[l],
                rstd: a.rstd2[l], weight: p + o.ffnNorm, N: N, C: C)
            // residualMid = residual[l] + attention * Wo^T
            matmulBackward(dinp: a.dAttention, dweight: g + o.wo, dout: a.dResidual, inp: a.attention[l], weight: p + o.wo, N: N, inDim: C, outDim: C)
            // attention = causal softmax attention over the rotated q, k and v
            attentionBackward(dqkv: a.dQKV, dscratch: a.dProbs, dout: a.dAttention, qkv: a.qkv[l], probs: a.probs[l], B: B, T: T, C: C, NH: NH)
            // q, k rotated in place after the projection
            ropeRotate(a.dQKV, rowStride: 3 * C, N: N, positions: a.positions, heads: 2 * NH, table: rotary, inverse: true)
            // qkv = ln1 * Wqkv^T
            matmulBackward(dinp: a.dNormed, dweight: g + o.wqkv, dout: a.dQKV, inp: a.ln1[l], weight: p + o.wqkv, N: N, inDim: C, outDim: 3 * C)
            // ln1 = rmsnorm(residual[l]); afterwards dResidual is d residual[l]
            rmsnormBackward(
                dinp: a.dResidual, dweight: g + o.attentionNorm, dout: a.dNormed, inp: a.residual[l],
                rstd: a.rstd1[l], weight: p + o.attentionNorm, N: N, C: C)
        }
        // residual[0] = embedding[tokens]
        embeddingBackward(g + embeddingOffset, dout: a.dResidual, tokens: a.tokens, N: N, C: C)
        heldB = 0  // the probabilities were turned into gradients; a second backward needs a new forward
    }

    // MARK: - Scoring

    /// Weighted log-likelihood (sum, count, mean) of every sequence of a batch of any size,
    /// run in chunks of `batchCapacity`. Overwrites the held activations.
    public func score(_ batch: TokenBatch) -> [SpanScore] {
        var scores: [SpanScore] = []
        scores.reserveCapacity(batch.batchSize)
        var start = 0
        while start < batch.batchSize {
            let end = min(start + batchCapacity, batch.batchSize)
            let T = batch.lengths[start..<end].max()!
            var chunk = TokenBatch(batchSize: end - start, seqLen: max(T, 1))
            for b in start..<end {
                for t in 0..<chunk.seqLen {
                    chunk.tokens[(b - start) * chunk.seqLen + t] = batch.tokens[b * batch.seqLen + t]
                    chunk.weights[(b - start) * chunk.seqLen + t] = batch.weights[b * batch.seqLen + t]
                }
                chunk.lengths[b - start] = batch.lengths[b]
            }
            let sums = forward(chunk)
            for b in 0..<chunk.batchSize {
                let count = chunk.weights[(b * chunk.seqLen)..<((b + 1) * chunk.seqLen)].reduce(0.0) { $0 + Double($1) }
                scores.append(SpanScore(sum: sums[b], count: count))
            }
            start = end
        }
        heldB = 0
        return scores
    }

    /// log p(target | context) for many (context, target) pairs at once: sum and mean over the
    /// target tokens. Contexts must be non-empty (the first token has no prediction).
    public func score(contexts: [[Int32]], targets: [[Int32]]) -> [SpanScore] {
        precondition(contexts.count == targets.count, "one target per context")
        let sequences = zip(contexts, targets).map { $0 + $1 }
        return score(TokenBatch(sequences: sequences, targetStarts: contexts.map(\.count)))
    }
}

/// The activation and activation-gradient buffers, allocated once for capacity x maxSeq rows.
final class Activations {
    let tokens, targets, positions, headRows: UnsafeMutablePointer<Int32>
    let rowWeights, rowCoefficients, logp: UnsafeMutablePointer<Float>
    /// residual[l] enters layer l; residual[nLayers] enters the final norm.
    let residual: [UnsafeMutablePointer<Float>]
    let residualMid, ln1, rstd1, qkv, probs, attention, ln2, rstd2, gateUp, hidden: [UnsafeMutablePointer<Float>]
    let lnFinal, rstdFinal, logits: UnsafeMutablePointer<Float>
    // Backward scratch, reused by every layer; dProbs has one (T, T) block per (batch, head).
    let dResidual, dNormed, dAttention, dQKV, dGateUp, dHidden, dProbs: UnsafeMutablePointer<Float>
    private var owned: [UnsafeMutablePointer<Float>] = []
    private let ownedInts: [UnsafeMutablePointer<Int32>]

    init(config: ModelConfig, batchCapacity: Int) {
        let N = batchCapacity * config.maxSeq, T = config.maxSeq
        let C = config.dModel, H = config.ffnHidden, V = config.vocabSize, L = config.nLayers
        var owned: [UnsafeMutablePointer<Float>] = []
        func f(_ count: Int) -> UnsafeMutablePointer<Float> {
            let p: UnsafeMutablePointer<Float> = allocateAligned(count)
            owned.append(p)
            return p
        }
        func perLayer(_ count: Int, _ layers: Int = L) -> [UnsafeMutablePointer<Float>] { (0..<layers).map { _ in f(count) } }
        tokens = allocateAligned(N); targets = allocateAligned(N); positions = allocateAligned(N); headRows = allocateAligned(N)
        ownedInts = [tokens, targets, positions, headRows]
        rowWeights = f(N); rowCoefficients = f(N); logp = f(N)
        residual = perLayer(N * C, L + 1)
        residualMid = perLayer(N * C); ln1 = perLayer(N * C); rstd1 = perLayer(N)
        qkv = perLayer(N * 3 * C); probs = perLayer(batchCapacity * config.nHeads * T * T)
        attention = perLayer(N * C); ln2 = perLayer(N * C); rstd2 = perLayer(N)
        gateUp = perLayer(N * 2 * H); hidden = perLayer(N * H)
        lnFinal = f(N * C); rstdFinal = f(N); logits = f(N * V)
        dResidual = f(N * C); dNormed = f(N * C); dAttention = f(N * C); dQKV = f(N * 3 * C)
        dGateUp = f(N * 2 * H); dHidden = f(N * H); dProbs = f(batchCapacity * config.nHeads * T * T)
        self.owned = owned
    }

    func deallocate() {
        owned.forEach(deallocateAligned)
        ownedInts.forEach(deallocateAligned)
    }
}
