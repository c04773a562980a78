import CKernels

/// A sampler's copy of the model's weight matrices in the active kernel path's decode layout
/// (`suder_decode_pack`): a decode step's products then read each matrix as one contiguous run and
/// store their tiles untransposed, with the same sums as the small-M path (docs/PERFORMANCE.md).
/// Training changes the weights between sampling calls, so every call packs them again: about
/// 1 ms a core for the bench model's 11 MB, against the 60-odd decode steps it speeds up.
final class DecodeWeights {
    private let model: Transformer
    private var storage: UnsafeMutablePointer<Float>?
    private var capacity = 0
    /// Where each matrix's packed copy starts, by the matrix's offset in the model's parameters.
    private var packedOffsets: [Int: Int] = [:]
    /// The path the copy was packed for; its layout holds on that path only.
    private var packedPath: KernelPath?

    init(model: Transformer) {
        self.model = model
    }

    deinit {
        if let storage { deallocateAligned(storage) }
    }

    /// The matrices of `config`'s products, in `offsets`' order, as (rows n = outputs, columns
    /// k = inputs).
    static func shapes(_ config: ModelConfig) -> [(n: Int, k: Int)] {
        let C = config.dModel, H = config.ffnHidden
        let layer = [(n: 3 * C, k: C), (n: C, k: C), (n: 2 * H, k: C), (n: C, k: H)]
        return Array(repeating: layer, count: config.nLayers).flatMap { $0 } + [(n: config.vocabSize, k: C)]
    }

    /// Where those matrices are in `model`'s parameters.
    static func offsets(_ model: Transformer) -> [Int] {
        model.layerOffsets.flatMap { [$0.wqkv, $0.wo, $0.w13, $0.w2] } + [model.outputOffset]
    }

    /// Floats the copy takes on the active path (none on the BLAS path).
    static func floats(_ config: ModelConfig) -> Int {
        shapes(config).reduce(0) { $0 + suder_decode_packed_floats($1.n, $1.k) }
    }

    /// Packs the model's current weights for the active path.
    func pack() {
        let path = KernelPath.active
        let needed = Self.floats(model.config)
        packedOffsets = [:]
        packedPath = nil
        guard needed > 0 else { return }
        if needed > capacity {
            if let storage { deallocateAligned(storage) }
            storage = allocateAligned(needed)
            capacity = needed
        }
        let p = model.parameters.baseAddress!
        var cursor = 0
        for (offset, shape) in zip(Self.offsets(model), Self.shapes(model.config)) {
            suder_decode_pack(p + offset, shape.n, shape.k, storage! + cursor)
            packedOffsets[offset] = cursor
            cursor += suder_decode_packed_floats(shape.n, shape.k)
        }
        packedPath = path
    }

    /// out = inp W^T (out += with `accumulate`) for the weight matrix at `weightOffset` in the
    /// model's parameters: through the packed copy where the decode product takes it (few rows, on
    /// the path it was packed for), else through `matmulForward`. Either gives the same bits.
    func product(
        _ out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weightOffset: Int, N: Int, inDim: Int, outDim: Int,
        accumulate: Bool = false
    ) {
        if packedPath == KernelPath.active, let start = packedOffsets[weightOffset],
            suder_decode_gemm(N, outDim, inDim, 1, inp, inDim, storage! + start, accumulate ? 1 : 0, out, outDim, Int32(computeThreads))
        {
            return
        }
        matmulForward(
            out, inp: inp, weight: model.parameters.baseAddress! + weightOffset, N: N, inDim: inDim, outDim: outDim,
            accumulate: accumulate)
    }
}
