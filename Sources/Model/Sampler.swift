import CKernels
import COpenBLAS
import Foundation

/// Classifier-free guidance: each prompt also runs as an unconditional stream from its null
/// prompt, and the sampled logits are u + weight * (c - u).
public struct Guidance: Sendable {
    public var weight: Float
    /// One null prompt per conditional prompt (e.g. `BOS PAD... BOI`).
    public var nullPrompts: [[Int32]]

    public init(weight: Float, nullPrompts: [[Int32]]) {
        self.weight = weight
        self.nullPrompts = nullPrompts
    }
}

/// How `Sampler.sample` splits its prompts: into groups of consecutive prompts whose decode steps
/// have at most `maxRows` rows (a group's prompts and their null prompts), few enough for the
/// decode product's small-row tiles over the packed weights (`DecodeWeights`; groups of 32 rows
/// sampled slower, docs/PERFORMANCE.md). The groups follow from the prompt count and guidance
/// alone.
/// With several groups and threads, and `sideBySide`, `slots` groups run side by side, each on one
/// thread with its own buffers; else the groups run one after another on all the threads.
struct SamplingGroups {
    static let maxRows = 16
    let ranges: [Range<Int>]
    let streamsPerGroup: Int
    let slots: Int
    let threadsPerGroup: Int

    init(prompts: Int, guided: Bool, threads: Int, sideBySide: Bool) {
        let size = guided ? Self.maxRows / 2 : Self.maxRows
        ranges = stride(from: 0, to: prompts, by: size).map { $0..<min($0 + size, prompts) }
        streamsPerGroup = min(size, prompts) * (guided ? 2 : 1)
        slots = sideBySide ? max(1, min(ranges.count, threads)) : 1
        threadsPerGroup = slots > 1 ? 1 : threads
    }

    /// Whether groups of `config`'s model may run side by side on the active kernel path: not where
    /// a decode step calls OpenBLAS (the blas path, or attention the kernels do not take), whose
    /// own threads would multiply with the groups'.
    static func sideBySide(_ config: ModelConfig) -> Bool {
        KernelPath.active != .blas && suder_cached_attention_applies(config.dModel, config.nHeads)
    }

    /// The groups a slot runs, one after another: a contiguous share.
    func groups(ofSlot slot: Int) -> Range<Int> {
        (slot * ranges.count / slots)..<((slot + 1) * ranges.count / slots)
    }
}

/// The settings of one `sample` call, the same for each of its groups.
private struct SamplingRequest {
    let maxNewTokens: Int
    let allowedRange: Range<Int32>
    let stopToken: Int32?
    let temperature: Float
    let topK: Int
    let guidanceWeight: Float?
}

/// Batched autoregressive sampling with a KV cache over a `Transformer`'s current parameters.
/// Each prompt (a "sequence") samples from its own RNG seeded by the caller, and only its own
/// streams enter its attention, so a sequence's tokens do not depend on which other sequences
/// share the batch (up to float rounding in the batched matmuls) nor on the MPI rank count.
/// The prompts are decoded in fixed groups (`SamplingGroups`), which run on the threads side by
/// side when there are several; the groups do not depend on the thread count, so neither do the
/// tokens. Buffers grow on demand before the step loop; the step loop itself does not allocate.
public final class Sampler {
    public let model: Transformer
    /// One set per group running at once.
    private var buffers: [SamplerBuffers] = []
    private let decodeWeights: DecodeWeights

    public init(model: Transformer) {
        self.model = model
        decodeWeights = DecodeWeights(model: model)
    }

    deinit {
        for set in buffers { set.deallocate() }
    }

    /// Samples up to `maxNewTokens` tokens after each prompt, from logits restricted to
    /// `allowedRange` (the active modality's token ids). A sequence stops after emitting
    /// `stopToken` (included in its output). temperature <= 0 means greedy; topK <= 0 means no
    /// top-k filter. Returns the new tokens of every prompt.
    public func sample(
        prompts: [[Int32]], maxNewTokens: Int, allowedRange: Range<Int32>, stopToken: Int32? = nil,
        temperature: Float = 1, topK: Int = 0, guidance: Guidance? = nil, seeds: [UInt64]
    ) -> [[Int32]] {
        let config = model.config
        let P = prompts.count
        precondition(seeds.count == P, "one seed per prompt")
        precondition(
            allowedRange.lowerBound >= 0 && Int(allowedRange.upperBound) <= config.vocabSize && !allowedRange.isEmpty,
            "allowed range outside the vocabulary")
        if let guidance { precondition(guidance.nullPrompts.count == P, "one null prompt per prompt") }
        for prompt in prompts + (guidance?.nullPrompts ?? []) {
            precondition(
                !prompt.isEmpty && prompt.count + maxNewTokens <= config.maxSeq,
                "prompt of \(prompt.count) + \(maxNewTokens) new tokens exceeds maxSeq \(config.maxSeq)")
        }
        guard P > 0, maxNewTokens > 0 else { return Array(repeating: [], count: P) }
        let plan = SamplingGroups(
            prompts: P, guided: guidance != nil, threads: computeThreads, sideBySide: SamplingGroups.sideBySide(config))
        let prefillRows = plan.ranges.map { range in
            range.reduce(0) { $0 + prompts[$1].count + (guidance?.nullPrompts[$1].count ?? 0) }
        }
        reserve(
            slots: plan.slots, streams: plan.streamsPerGroup, rows: max(plan.streamsPerGroup, prefillRows.max()!),
            threads: plan.threadsPerGroup)
        decodeWeights.pack()
        let request = SamplingRequest(
            maxNewTokens: maxNewTokens, allowedRange: allowedRange, stopToken: stopToken, temperature: temperature,
            topK: topK, guidanceWeight: guidance?.weight)
        var outputs = [[Int32]](repeating: [], count: P)
        outputs.withUnsafeMutableBufferPointer { outputs in
            parallelFor(plan.slots, threads: plan.slots) { slot in
                for group in plan.groups(ofSlot: slot) {
                    let range = plan.ranges[group]
                    let tokens = sampleGroup(
                        prompts: Array(prompts[range]), nullPrompts: guidance.map { Array($0.nullPrompts[range]) },
                        seeds: Array(seeds[range]), request: request, buffers: buffers[slot], threads: plan.threadsPerGroup)
                    for (i, sequence) in zip(range, tokens) { outputs[i] = sequence }
                }
            }
        }
        return outputs
    }

    /// `sample` for one group's prompts (and their null prompts when guided), on `threads` threads.
    private func sampleGroup(
        prompts: [[Int32]], nullPrompts: [[Int32]]?, seeds: [UInt64], request: SamplingRequest,
        buffers: SamplerBuffers, threads: Int
    ) -> [[Int32]] {
        let V = model.config.vocabSize
        let P = prompts.count, maxNewTokens = request.maxNewTokens
        let streamPrompts = prompts + (nullPrompts ?? [])
        var outputs = [[Int32]](repeating: [], count: P)
        for i in 0..<P { outputs[i].reserveCapacity(maxNewTokens) }
        var rngs = seeds.map { Xoshiro256RNG(seed: $0) }
        var lengths = streamPrompts.map(\.count)
        // The logits row of stream s is its distinct prompt's after prefill and its decode row afterwards.
        var logitsRow = prefill(streamPrompts, buffers: buffers, threads: threads)
        var active = Array(0..<P), activeCount = P
        let streamPasses = nullPrompts == nil ? 1 : 2
        while true {
            // Every sequence's token comes from its own logits and RNG, so shares of the sequences
            // may run on any threads (each with its own scratch) and give the same tokens.
            let work = activeCount * request.allowedRange.count
            let shares = work >= Self.parallelTokenWork ? min(activeCount, threads) : 1
            rngs.withUnsafeMutableBufferPointer { rngs in
                parallelFor(shares, threads: threads) { share in
                    for a in (share * activeCount / shares)..<((share + 1) * activeCount / shares) {
                        let i = active[a]
                        let conditional = buffers.logits + logitsRow[i] * V
                        let unconditional = nullPrompts.map { _ in UnsafePointer(buffers.logits + logitsRow[P + i] * V) }
                        buffers.chosenTokens[a] = chooseToken(
                            conditional: conditional, unconditional: unconditional, guidanceWeight: request.guidanceWeight ?? 0,
                            range: request.allowedRange, temperature: request.temperature, topK: request.topK, rng: &rngs[i],
                            scratch: buffers.tokenScratch[share])
                    }
                }
            }
            var kept = 0
            for a in 0..<activeCount {
                let i = active[a], token = buffers.chosenTokens[a]
                outputs[i].append(token)
                if token != request.stopToken && outputs[i].count < maxNewTokens {
                    active[kept] = i
                    kept += 1
                }
            }
            activeCount = kept
            if activeCount == 0 { break }
            // Decode: one row per active stream (conditional, then null), at its next position.
            var row = 0
            for pass in 0..<streamPasses {
                for a in 0..<activeCount {
                    let stream = active[a] + pass * P
                    buffers.rowTokens[row] = outputs[active[a]].last!
                    buffers.rowStreams[row] = Int32(stream)
                    buffers.rowPositions[row] = Int32(lengths[stream])
                    buffers.headRows[row] = Int32(row)
                    lengths[stream] += 1
                    logitsRow[stream] = row
                    row += 1
                }
            }
            extend(buffers, rows: row, headRows: row, threads: threads)
        }
        return outputs
    }

    /// Runs every distinct prompt of `streamPrompts` (stream s starts with streamPrompts[s]) through
    /// the model in one pass, then copies its keys and values to the streams that repeat it (a
    /// round repeats each prompt K times, and the null prompts repeat). Returns each stream's row
    /// of the logits: its distinct prompt's last token's.
    private func prefill(_ streamPrompts: [[Int32]], buffers: SamplerBuffers, threads: Int) -> [Int] {
        var firstStream: [[Int32]: Int] = [:]
        var headIndex: [Int: Int] = [:]
        var rows = 0
        for (s, prompt) in streamPrompts.enumerated() where firstStream[prompt] == nil {
            firstStream[prompt] = s
            for (t, token) in prompt.enumerated() {
                buffers.rowTokens[rows] = token
                buffers.rowStreams[rows] = Int32(s)
                buffers.rowPositions[rows] = Int32(t)
                rows += 1
            }
            buffers.headRows[headIndex.count] = Int32(rows - 1)
            headIndex[s] = headIndex.count
        }
        extend(buffers, rows: rows, headRows: headIndex.count, threads: threads)
        let C = model.config.dModel, maxSeq = model.config.maxSeq
        let caches = buffers.keyCache + buffers.valueCache
        for (s, prompt) in streamPrompts.enumerated() where firstStream[prompt] != s {
            let from = firstStream[prompt]! * maxSeq * C, to = s * maxSeq * C
            for cache in caches { (cache + to).update(from: cache + from, count: prompt.count * C) }
        }
        return streamPrompts.map { headIndex[firstStream[$0]!]! }
    }

    /// Logits through the KV-cache path for tests: prefill `promptLength` tokens of every
    /// sequence, then feed the rest one token per step. Returns per sequence the logits (V each)
    /// predicting positions promptLength ..< count, i.e. rows promptLength-1 ..< count-1 of a
    /// full forward pass.
    func cachedLogits(sequences: [[Int32]], promptLength: Int) -> [[[Float]]] {
        let V = model.config.vocabSize, S = sequences.count
        reserve(slots: 1, streams: S, rows: S * promptLength, threads: 1)
        decodeWeights.pack()
        let buffers = buffers[0]
        var result = [[[Float]]](repeating: [], count: S)
        let rows = prefill(sequences.map { Array($0.prefix(promptLength)) }, buffers: buffers, threads: computeThreads)
        for s in 0..<S { result[s].append(Array(UnsafeBufferPointer(start: buffers.logits + rows[s] * V, count: V))) }
        for position in promptLength..<(sequences[0].count - 1) {
            for s in 0..<S {
                buffers.rowTokens[s] = sequences[s][position]
                buffers.rowStreams[s] = Int32(s)
                buffers.rowPositions[s] = Int32(position)
                buffers.headRows[s] = Int32(s)
            }
            extend(buffers, rows: S, headRows: S, threads: computeThreads)
            for s in 0..<S { result[s].append(Array(UnsafeBufferPointer(start: buffers.logits + s * V, count: V))) }
        }
        return result
    }

    /// Makes at least `slots` buffer sets, all alike, each for `streams` streams, `rows` rows and
    /// `threads` threads' token-choice scratch, or the larger sizes an earlier call needed: a
    /// sampler holds its most slots times one set at its largest sizes (`MemoryEstimate.samplingBytes`).
    private func reserve(slots: Int, streams: Int, rows: Int, threads: Int) {
        let sets = max(slots, buffers.count)
        var size = (streams: streams, rows: rows, threads: threads)
        if let held = buffers.first {
            size = (max(streams, held.streamCapacity), max(rows, held.rowCapacity), max(threads, held.tokenScratch.count))
            if size != (held.streamCapacity, held.rowCapacity, held.tokenScratch.count) {
                for set in buffers { set.deallocate() }
                buffers = []
            }
        }
        while buffers.count < sets {
            buffers.append(SamplerBuffers(config: model.config, streams: size.streams, rows: size.rows, threads: size.threads))
        }
    }

    /// Runs `rows` new tokens (token, stream, position given per row) through the model, writing
    /// their keys and values into the cache, and computes logits for the rows listed in
    /// headRows[0..<headRows] into logits[0..<headRows]. The attention runs on `threads` threads;
    /// the products and per-row loops on `computeThreads`, or on this thread alone when it runs
    /// an item of the kernels' pool (see `suder_parallel`).
    private func extend(_ b: SamplerBuffers, rows N: Int, headRows: Int, threads: Int) {
        let config = model.config
        let C = config.dModel, H = config.ffnHidden, V = config.vocabSize, NH = config.nHeads, HS = config.headSize
        let maxSeq = config.maxSeq
        let p = model.parameters.baseAddress!
        embeddingForward(b.residual, tokens: b.rowTokens, table: p + model.embeddingOffset, N: N, C: C)
        for (l, o) in model.layerOffsets.enumerated() {
            rmsnormForward(b.normed, rstd: b.rstd, inp: b.residual, weight: p + o.attentionNorm, N: N, C: C, eps: config.normEps)
            decodeWeights.product(b.qkv, inp: b.normed, weightOffset: o.wqkv, N: N, inDim: C, outDim: 3 * C)
            ropeRotate(b.qkv, rowStride: 3 * C, N: N, positions: b.rowPositions, heads: 2 * NH, table: model.rotary, inverse: false)
            let keys = b.keyCache[l], values = b.valueCache[l]
            for r in 0..<N {
                let slot = (Int(b.rowStreams[r]) * maxSeq + Int(b.rowPositions[r])) * C
                (keys + slot).update(from: b.qkv + r * 3 * C + C, count: C)
                (values + slot).update(from: b.qkv + r * 3 * C + 2 * C, count: C)
            }
            cachedAttentionForward(
                b.attention, qkv: b.qkv, keys: keys, values: values, streams: b.rowStreams,
                positions: b.rowPositions, scores: b.scores, N: N, C: C, NH: NH, HS: HS, maxSeq: maxSeq, threads: threads)
            decodeWeights.product(b.residual, inp: b.attention, weightOffset: o.wo, N: N, inDim: C, outDim: C, accumulate: true)
            rmsnormForward(b.normed, rstd: b.rstd, inp: b.residual, weight: p + o.ffnNorm, N: N, C: C, eps: config.normEps)
            decodeWeights.product(b.gateUp, inp: b.normed, weightOffset: o.w13, N: N, inDim: C, outDim: 2 * H)
            swigluForward(b.hidden, gu: b.gateUp, N: N, H: H)
            decodeWeights.product(b.residual, inp: b.hidden, weightOffset: o.w2, N: N, inDim: H, outDim: C, accumulate: true)
        }
        gatherRows(b.normed, rows: b.headRows, from: b.residual, N: headRows, C: C)
        rmsnormForward(b.normed, rstd: b.rstd, inp: b.normed, weight: p + model.finalNormOffset, N: headRows, C: C, eps: config.normEps)
        decodeWeights.product(b.logits, inp: b.normed, weightOffset: model.outputOffset, N: headRows, inDim: C, outDim: V)
    }

    /// Candidates per step (sequences x allowed range) from which choosing the tokens is split over
    /// threads: at 5-10 ns a candidate, 100 microseconds or more on one thread, several wake-ups of
    /// the pool's workers. Tests lower it to split small batches.
    static var parallelTokenWork = 1 << 14

    /// Picks one token from [range) of the (guided) logits.
    private func chooseToken(
        conditional: UnsafePointer<Float>, unconditional: UnsafePointer<Float>?, guidanceWeight: Float,
        range: Range<Int32>, temperature: Float, topK: Int, rng: inout Xoshiro256RNG, scratch b: TokenScratch
    ) -> Int32 {
        let lo = Int(range.lowerBound), n = range.count
        let x = b.candidates
        if let unconditional {
            for i in 0..<n { x[i] = unconditional[lo + i] + guidanceWeight * (conditional[lo + i] - unconditional[lo + i]) }
        } else {
            (x).update(from: conditional + lo, count: n)
        }
        var best = 0
        for i in 1..<n where x[i] > x[best] { best = i }
        if temperature <= 0 { return Int32(lo + best) }
        let threshold = (topK > 0 && topK < n) ? kthLargest(x, count: n, k: topK, scratch: b.selection) : -Float.infinity
        let maxValue = x[best], invTemperature = 1 / temperature
        let exponentials = b.selection  // free again after kthLargest
        _ = Float.exponentials(exponentials, x, count: n, shift: maxValue, scale: invTemperature)
        var total = 0.0
        for i in 0..<n {
            let weight = x[i] >= threshold ? Double(exponentials[i]) : 0
            b.probabilities[i] = weight
            total += weight
        }
        var remaining = rng.nextUniform() * total
        for i in 0..<n where b.probabilities[i] > 0 {
            remaining -= b.probabilities[i]
            if remaining < 0 { return Int32(lo + i) }
        }
        return Int32(lo + best)  // only reached through rounding at the very top of the range
    }
}

/// Value of the k-th largest of x[0..<count] (k >= 1), by quickselect on a copy in `scratch`.
func kthLargest(_ x: UnsafePointer<Float>, count: Int, k: Int, scratch a: UnsafeMutablePointer<Float>) -> Float {
    a.update(from: x, count: count)
    var lo = 0, hi = count - 1
    let target = k - 1  // index in descending order
    while lo < hi {
        let pivot = a[(lo + hi) / 2]
        var i = lo, j = hi
        while i <= j {
            while a[i] > pivot { i += 1 }
            while a[j] < pivot { j -= 1 }
            if i <= j { a.swapAt(i, j); i += 1; j -= 1 }
        }
        if target <= j { hi = j } else if target >= i { lo = i } else { return a[target] }
    }
    return a[target]
}

extension UnsafeMutablePointer {
    @inline(__always) fileprivate func swapAt(_ i: Int, _ j: Int) {
        let t = self[i]; self[i] = self[j]; self[j] = t
    }
}

/// Attention of N new rows over their own stream's cached keys and values (positions
/// 0...position, all already written): the kernel path's kernel where it applies, else per
/// (row, head) one sgemv for the scores and one for the weighted sum of values (the plain
/// dot-product loops are latency-bound: ~10x slower). scores: scratch of NH x maxSeq for the
/// sgemv path (the kernel keeps its own per thread); the kernel splits the rows over `threads`.
func cachedAttentionForward(
    _ out: UnsafeMutablePointer<Float>, qkv: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
    streams: UnsafePointer<Int32>, positions: UnsafePointer<Int32>, scores: UnsafeMutablePointer<Float>,
    N: Int, C: Int, NH: Int, HS: Int, maxSeq: Int, threads: Int
) {
    if suder_cached_attention(out, qkv, keys, values, streams, positions, N, C, NH, maxSeq, Int32(threads)) { return }
    let scale = 1 / Float(HS).squareRoot()
    for r in 0..<N {
        let base = Int(streams[r]) * maxSeq * C
        let count = Int(positions[r]) + 1
        for h in 0..<NH {
            cblas_sgemv(
                CblasRowMajor, CblasNoTrans, blasint(count), blasint(HS), scale, keys + base + h * HS, blasint(C),
                qkv + r * 3 * C + h * HS, 1, 0, scores, 1)
            var maxScore = scores[0]
            for j in 1..<count where scores[j] > maxScore { maxScore = scores[j] }
            let sum = Float.exponentials(scores, scores, count: count, shift: maxScore, scale: 1)
            cblas_sgemv(
                CblasRowMajor, CblasTrans, blasint(count), blasint(HS), 1 / sum, values + base + h * HS, blasint(C),
                scores, 1, 0, out + r * C + h * HS, 1)
        }
    }
}

/// Plain-loop reference of cachedAttentionForward.
func cachedAttentionForwardReference(
    _ out: UnsafeMutablePointer<Float>, qkv: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
    streams: UnsafePointer<Int32>, positions: UnsafePointer<Int32>, scores: UnsafeMutablePointer<Float>,
    N: Int, C: Int, NH: Int, HS: Int, maxSeq: Int
) {
    let scale = 1 / Float(HS).squareRoot()
    for r in 0..<N {
        let base = Int(streams[r]) * maxSeq * C
        let last = Int(positions[r])
        for h in 0..<NH {
            let q = qkv + r * 3 * C + h * HS
            var maxScore = -Float.infinity
            for j in 0...last {
                let k = keys + base + j * C + h * HS
                var dot: Float = 0
                for d in 0..<HS { dot += q[d] * k[d] }
                dot *= scale
                scores[j] = dot
                if dot > maxScore { maxScore = dot }
            }
            var sum: Float = 0
            for j in 0...last {
                let e = Foundation.expf(scores[j] - maxScore)
                scores[j] = e
                sum += e
            }
            let o = out + r * C + h * HS
            o.update(repeating: 0, count: HS)
            let inv = 1 / sum
            for j in 0...last {
                let w = scores[j] * inv
                let v = values + base + j * C + h * HS
                for d in 0..<HS { o[d] += w * v[d] }
            }
        }
    }
}

/// One thread's scratch for choosing tokens (vocabulary-sized).
struct TokenScratch {
    let candidates, selection: UnsafeMutablePointer<Float>
    let probabilities: UnsafeMutablePointer<Double>
}

/// KV cache and per-row buffers of a Sampler, sized for `streams` streams and `rows` tokens per
/// pass, and token-choice scratch for `threads` threads.
final class SamplerBuffers {
    let streamCapacity, rowCapacity: Int
    let rowTokens, rowStreams, rowPositions, headRows, chosenTokens: UnsafeMutablePointer<Int32>
    let residual, normed, rstd, qkv, attention, gateUp, hidden, logits, scores: UnsafeMutablePointer<Float>
    let tokenScratch: [TokenScratch]
    let keyCache, valueCache: [UnsafeMutablePointer<Float>]

    init(config: ModelConfig, streams: Int, rows: Int, threads: Int) {
        streamCapacity = streams
        rowCapacity = rows
        let C = config.dModel, H = config.ffnHidden, V = config.vocabSize
        rowTokens = allocateAligned(rows); rowStreams = allocateAligned(rows); rowPositions = allocateAligned(rows)
        headRows = allocateAligned(max(rows, streams)); chosenTokens = allocateAligned(streams)
        residual = allocateAligned(rows * C); normed = allocateAligned(rows * C); rstd = allocateAligned(rows)
        qkv = allocateAligned(rows * 3 * C); attention = allocateAligned(rows * C)
        gateUp = allocateAligned(rows * 2 * H); hidden = allocateAligned(rows * H)
        logits = allocateAligned(max(rows, streams) * V)
        scores = allocateAligned(config.nHeads * config.maxSeq)
        tokenScratch = (0..<max(1, threads)).map { _ in
            TokenScratch(candidates: allocateAligned(V), selection: allocateAligned(V), probabilities: allocateAligned(V))
        }
        keyCache = (0..<config.nLayers).map { _ in allocateAligned(streams * config.maxSeq * C) }
        valueCache = (0..<config.nLayers).map { _ in allocateAligned(streams * config.maxSeq * C) }
    }

    func deallocate() {
        [rowTokens, rowStreams, rowPositions, headRows, chosenTokens].forEach(deallocateAligned)
        [residual, normed, rstd, qkv, attention, gateUp, hidden, logits, scores].forEach(deallocateAligned)
        for scratch in tokenScratch {
            deallocateAligned(scratch.candidates)
            deallocateAligned(scratch.selection)
            deallocateAligned(scratch.probabilities)
        }
        keyCache.forEach(deallocateAligned)
        valueCache.forEach(deallocateAligned)
    }
}
