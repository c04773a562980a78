/// Sizes and constants of the decoder-only transformer. A plain value: the cluster's YAML config
/// maps onto it field by field.
public struct ModelConfig: Equatable, Codable, Sendable {
    /// One vocabulary for text, image and special tokens.
    public var vocabSize: Int
    public var dModel: Int
    public var nLayers: Int
    public var nHeads: Int
    /// Hidden width of the SwiGLU MLP (each of the gate and up projections).
    public var ffnHidden: Int
    /// Longest sequence the model (rotary table, KV cache, activations) is built for.
    public var maxSeq: Int
    /// Output head shares the token embedding matrix.
    public var tiedHead: Bool
    public var ropeTheta: Double
    public var normEps: Float
    /// Standard deviation of the normal initialisation of matrices; residual output
    /// projections are further scaled by 1/sqrt(2 * nLayers) (GPT-2's rule).
    public var initStd: Float

    public init(
        vocabSize: Int = 1100, dModel: Int = 192, nLayers: Int = 6, nHeads: Int = 6,
        ffnHidden: Int = 512, maxSeq: Int = 128, tiedHead: Bool = false,
        ropeTheta: Double = 10000, normEps: Float = 1e-5, initStd: Float = 0.02
    ) {
        self.vocabSize = vocabSize
        self.dModel = dModel
        self.nLayers = nLayers
        self.nHeads = nHeads
        self.ffnHidden = ffnHidden
        self.maxSeq = maxSeq
        self.tiedHead = tiedHead
        self.ropeTheta = ropeTheta
        self.normEps = normEps
        self.initStd = initStd
    }

    public var headSize: Int { dModel / nHeads }

    /// Throws a readable message for sizes the kernels cannot run.
    public func validate() throws {
        func check(_ ok: Bool, _ message: String) throws {
            if !ok { throw ModelConfigError(message: message) }
        }
        try check(
            vocabSize > 0 && dModel > 0 && nLayers > 0 && nHeads > 0 && ffnHidden > 0 && maxSeq > 1,
            "model sizes must be positive (maxSeq > 1)")
        try check(dModel % nHeads == 0, "dModel \(dModel) is not divisible by nHeads \(nHeads)")
        try check(headSize % 2 == 0, "head size \(headSize) must be even for rotary embeddings")
        try check(vocabSize <= Int(Int32.max), "vocabSize does not fit Int32 token ids")
    }
}

public struct ModelConfigError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { "model config: \(message)" }
}

/// One named tensor inside the flat parameter (and gradient, and optimizer-moment) buffer.
/// Names follow the Llama convention and are the names of the PyTorch reference and of exports.
public struct ParameterEntry: Equatable, Sendable {
    public let name: String
    public let offset: Int
    public let shape: [Int]
    public var count: Int { shape.reduce(1, *) }
    /// Matrices get weight decay; norm gains do not.
    public var decays: Bool { shape.count >= 2 }
}
