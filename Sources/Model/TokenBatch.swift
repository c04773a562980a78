/// B token sequences right-padded to T, with a weight on every *predicted* token:
/// `weights[b*T + t]` multiplies log p(tokens[t] | tokens[<t]) of sequence b (t = 0 has no
/// prediction and must weigh 0). Every objective is a weighted sum over these:
/// supervised cross-entropy (weight 1 on the target span, coefficient -1/N per sequence),
/// span scoring (weight 1, no backward), preference losses (weight 1 on the completion, a
/// per-sequence coefficient from the loss function).
public struct TokenBatch: Equatable {
    public let batchSize: Int
    public let seqLen: Int
    /// (B, T) row-major; positions past a sequence's length hold the pad token.
    public var tokens: [Int32]
    /// (B, T) row-major; zero on padding.
    public var weights: [Float]
    public var lengths: [Int]

    /// An all-padding batch to fill with `setSequence`.
    public init(batchSize: Int, seqLen: Int, padToken: Int32 = 0) {
        self.batchSize = batchSize
        self.seqLen = seqLen
        tokens = Array(repeating: padToken, count: batchSize * seqLen)
        weights = Array(repeating: 0, count: batchSize * seqLen)
        lengths = Array(repeating: 0, count: batchSize)
    }

    /// Sequences with weight `weight` on every position from `targetStarts[b]` (>= 1) to the end.
    /// T defaults to the longest sequence.
    public init(sequences: [[Int32]], targetStarts: [Int], weight: Float = 1, seqLen: Int? = nil, padToken: Int32 = 0) {
        precondition(sequences.count == targetStarts.count, "one target start per sequence")
        self.init(batchSize: sequences.count, seqLen: seqLen ?? sequences.map(\.count).max() ?? 1, padToken: padToken)
        for (b, sequence) in sequences.enumerated() {
            setSequence(b, tokens: sequence, targetStart: targetStarts[b], weight: weight)
        }
    }

    /// Writes sequence b, weighting the predictions of positions targetStart..<count.
    public mutating func setSequence(_ b: Int, tokens sequence: [Int32], targetStart: Int, weight: Float = 1) {
        precondition(sequence.count <= seqLen, "sequence of \(sequence.count) tokens exceeds T = \(seqLen)")
        precondition(targetStart >= 1, "position 0 has no prediction to weight")
        let base = b * seqLen
        for t in 0..<seqLen {
            if t < sequence.count { tokens[base + t] = sequence[t] }
            weights[base + t] = (t >= targetStart && t < sequence.count) ? weight : 0
        }
        lengths[b] = sequence.count
    }

    /// Per-sequence count of weighted positions (|y| for length-normalised objectives).
    public var weightedCounts: [Int] {
        (0..<batchSize).map { b in (0..<seqLen).reduce(0) { $0 + (weights[b * seqLen + $1] != 0 ? 1 : 0) } }
    }
}

/// Log-likelihood of a weighted span: `sum` of weighted log p, `count` = sum of weights,
/// `mean` = sum / count (the length-normalised score SUDER's rewards use).
public struct SpanScore: Equatable, Sendable {
    public let sum: Double
    public let count: Double
    public var mean: Double { count > 0 ? sum / count : 0 }
}
