/// Bytes the model code allocates for a configuration, from the same shapes as the allocations
/// in `Transformer`, `Activations`, `AdamW`, `SamplerBuffers` and `DecodeWeights` (a test compares
/// the two), so a job can refuse a model that cannot fit before it allocates anything. In Double:
/// a hostile config (a micro-batch of 2^62) must give a huge number, not an overflow; below 2^53
/// bytes every value is exact.
public enum MemoryEstimate {
    /// Bytes `allocateAligned(count)` takes for elements of `stride` bytes.
    public static func buffer(_ count: Double, _ stride: Double = 4) -> Double { max(1, count) * stride }

    /// Parameters (float32) of the transformer: the same tensors as `Transformer.init`'s table.
    public static func parameterCount(_ config: ModelConfig) -> Double {
        let C = Double(config.dModel), H = Double(config.ffnHidden), V = Double(config.vocabSize)
        let perLayer = 2 * C + 4 * C * C + 3 * H * C
        return V * C + Double(config.nLayers) * perLayer + C + (config.tiedHead ? 0 : V * C)
    }

    /// A `Transformer`'s parameters, gradients, rotary table and activations for
    /// `batchCapacity` sequences of `maxSeq` tokens.
    public static func transformerBytes(_ config: ModelConfig, batchCapacity: Int) -> Double {
        let half = Double(config.headSize / 2)
        return 2 * buffer(parameterCount(config)) + 2 * buffer(Double(config.maxSeq) * half)
            + activationBytes(config, batchCapacity: batchCapacity)
    }

    /// `Activations`: every layer's forward values kept for backward, plus one layer's backward scratch.
    public static func activationBytes(_ config: ModelConfig, batchCapacity: Int) -> Double {
        let B = Double(batchCapacity), T = Double(config.maxSeq), N = B * T
        let C = Double(config.dModel), H = Double(config.ffnHidden), V = Double(config.vocabSize), L = Double(config.nLayers)
        let perLayer =
            buffer(N * C) * 4 + buffer(N) * 2 + buffer(N * 3 * C) + buffer(B * Double(config.nHeads) * T * T)
            + buffer(N * 2 * H) + buffer(N * H)
        let tokens = 4 * buffer(N)
        let rows = 3 * buffer(N)
        let final = buffer(N * C) + buffer(N) + buffer(N * V)
        let scratch =
            buffer(N * C) * 3 + buffer(N * 3 * C) + buffer(N * 2 * H) + buffer(N * H)
            + buffer(B * Double(config.nHeads) * T * T)
        return tokens + rows + (L + 1) * buffer(N * C) + L * perLayer + final + scratch
    }

    /// `AdamW`: first and second moments and the weight-decay mask, one float each per parameter.
    public static func adamWBytes(_ config: ModelConfig) -> Double {
        3 * buffer(parameterCount(config))
    }

    /// What a `Sampler` holds after calls of these shapes (prompts, with as many null prompts when
    /// guided, of at most `promptLength` tokens) on `threads` threads: one buffer set for each group
    /// that ran at once in the call with the most (`SamplingGroups`), all at the largest sizes, and
    /// its copy of the weights packed for the decode steps (`DecodeWeights`).
    public static func samplingBytes(
        _ config: ModelConfig, calls: [(prompts: Int, guided: Bool, promptLength: Int)], threads: Int
    ) -> Double {
        let sideBySide = SamplingGroups.sideBySide(config)
        let plans = calls.map { SamplingGroups(prompts: $0.prompts, guided: $0.guided, threads: threads, sideBySide: sideBySide) }
        let rows = zip(calls, plans).map { max($1.streamsPerGroup, $1.streamsPerGroup * $0.promptLength) }
        let streams = plans.map(\.streamsPerGroup).max() ?? 0, threadsPerGroup = plans.map(\.threadsPerGroup).max() ?? 1
        let slots = plans.map(\.slots).max() ?? 0
        return Double(slots) * samplerBytes(config, streams: streams, rows: rows.max() ?? 0, threads: threadsPerGroup)
            + decodeWeightsBytes(config)
    }

    /// `DecodeWeights` on the active kernel path: about the parameters' size, none on the BLAS path.
    public static func decodeWeightsBytes(_ config: ModelConfig) -> Double {
        let floats = Double(DecodeWeights.floats(config))
        return floats > 0 ? buffer(floats) : 0
    }

    /// `SamplerBuffers` for `streams` sequences and up to `rows` tokens per pass on `threads`
    /// threads: the KV cache (keys and values of every layer for every stream's `maxSeq`
    /// positions), the per-row buffers and each thread's token-choice scratch.
    public static func samplerBytes(_ config: ModelConfig, streams: Int, rows: Int, threads: Int) -> Double {
        let S = Double(streams), R = Double(rows)
        let C = Double(config.dModel), H = Double(config.ffnHidden), V = Double(config.vocabSize)
        let ints = 3 * buffer(R) + buffer(max(R, S)) + buffer(S)
        let perRow = buffer(R * C) * 3 + buffer(R) + buffer(R * 3 * C) + buffer(R * 2 * H) + buffer(R * H)
        let vocabulary = buffer(max(R, S) * V) + Double(max(1, threads)) * (2 * buffer(V) + buffer(V, 8))
        let kvCache = 2 * Double(config.nLayers) * buffer(S * Double(config.maxSeq) * C)
        return ints + perRow + vocabulary + buffer(Double(config.nHeads * config.maxSeq)) + kvCache
    }
}
