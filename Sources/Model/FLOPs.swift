/// FLOP counts for throughput and MFU reports (a multiply-add counts as 2 FLOPs).
/// Training follows the PaLM appendix convention: 6 x matmul parameters per token plus
/// 12 x layers x dModel x T per token for attention scores and weighted sums.
public enum FLOPs {
    /// Parameters that take part in matrix products per token: every linear layer and the
    /// output head (the embedding lookup is not a product).
    public static func matmulParameters(_ config: ModelConfig) -> Int {
        let C = config.dModel, H = config.ffnHidden
        return config.nLayers * (4 * C * C + 3 * C * H) + config.vocabSize * C
    }

    /// Forward pass over B sequences of T tokens, `headRows` of whose rows go through the output
    /// head (every row unless given; the model runs the head only on rows with a weight).
    /// Attention is counted over the full T x T square, which is what the kernels compute.
    public static func forward(_ config: ModelConfig, batch B: Int, seqLen T: Int, headRows: Int? = nil) -> Double {
        let tokens = Double(B * T), head = Double(config.vocabSize * config.dModel)
        return 2 * (Double(matmulParameters(config)) - head) * tokens + 2 * head * Double(headRows ?? B * T)
            + 4 * Double(config.nLayers * config.dModel * T) * tokens
    }

    /// Forward + backward (backward = 2 x forward).
    public static func trainingStep(_ config: ModelConfig, batch B: Int, seqLen T: Int, headRows: Int? = nil) -> Double {
        3 * forward(config, batch: B, seqLen: T, headRows: headRows)
    }

    /// One decoded token attending to `context` cached positions.
    public static func decodeToken(_ config: ModelConfig, context: Int) -> Double {
        2 * Double(matmulParameters(config)) + 4 * Double(config.nLayers * config.dModel * context)
    }
}
