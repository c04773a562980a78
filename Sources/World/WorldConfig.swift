/// Everything that shapes a generated world and its dataset. Plain values with defaults; the
/// config's `data.*` keys map onto these fields (`worldConfig` in the data stage).
public struct WorldConfig: Equatable, Sendable {
    public var canvasSize = 32
    public var patchSize = 4
    /// Upper bound on image codes: the codebook is background + mask centroids x 8 colours, so
    /// 1024 gives 1017 codes (docs/DATA.md has the round-trip scores of other sizes).
    public var codebookSize = 1024
    public var minObjectSize = 7
    public var maxObjectSize = 12
    /// Object corners on a lattice of this step (1 = any pixel); see `SceneGenerator.positionStep`.
    /// 2 halves the distinct patch shapes (148 instead of 245), which 1024 codes round-trip at
    /// 1.0 on GenEval-mini; with 1 they score 0.96 and need 2048 codes.
    public var positionStep = 2
    /// k-means fit: the first training images, the cap on distinct patch masks (most frequent
    /// first), Lloyd iterations.
    public var kmeansImages = 6000
    public var kmeansMaximumPatches = 40_000
    public var kmeansIterations = 8
    /// Supervised examples (split evenly over the six categories where they come from prompts).
    public var trainPairs = 18_000
    public var trainCaptions = 12_000
    public var trainProbes = 12_000
    /// Damaged renders with prompts the detector agrees with (`ImperfectRenderMaker`).
    public var trainImperfect = 12_000
    /// SUDER's unlabeled pools: prompts without images, images without captions.
    public var unpairedPrompts = 2_000
    public var unpairedImages = 2_000
    /// GenEval-mini: metadata lines per category (held-out prompts, cycled when fewer) and
    /// ground-truth images per line (GenEval samples 4).
    public var evalPromptsPerCategory = 100
    public var imagesPerEvalPrompt = 4
    /// Held-out images for captioning and POPE, and "yes" questions per image per POPE split
    /// (as many "no" questions are added).
    public var evalImages = 600
    public var popeYesPerImage = 1
    public var seed: UInt64 = 2506_07963

    public init() {}

    /// Throws `invalidConfig` naming the first field out of range.
    public func validate() throws {
        func require(_ condition: Bool, _ message: String) throws {
            if !condition { throw WorldError.invalidConfig(message) }
        }
        try require(patchSize >= 1 && canvasSize % patchSize == 0, "canvasSize \(canvasSize) must be a multiple of patchSize \(patchSize)")
        try require((16...256).contains(canvasSize), "canvasSize \(canvasSize) outside 16...256")
        try require((16...65_536).contains(codebookSize), "codebookSize \(codebookSize) outside 16...65536")
        try require(minObjectSize >= 5 && minObjectSize <= maxObjectSize, "object sizes \(minObjectSize)...\(maxObjectSize): need 5 <= min <= max")
        try require(2 * maxObjectSize + patchSize + 2 <= canvasSize, "maxObjectSize \(maxObjectSize) too large for two objects on a \(canvasSize) canvas")
        try require(3 * patchSize + 2 * minObjectSize + 2 <= canvasSize, "minObjectSize \(minObjectSize) too large for four objects on a \(canvasSize) canvas")
        try require(
            kmeansImages >= 1 && kmeansMaximumPatches >= 1 && kmeansIterations >= 1,
            "k-means needs kmeansImages, kmeansMaximumPatches and kmeansIterations >= 1")
        for (name, value) in [
            ("trainPairs", trainPairs), ("trainCaptions", trainCaptions), ("trainProbes", trainProbes),
            ("trainImperfect", trainImperfect), ("unpairedPrompts", unpairedPrompts), ("unpairedImages", unpairedImages), ("evalImages", evalImages),
        ] {
            try require(value >= 0 && value <= 10_000_000, "\(name) \(value) outside 0...10000000")
        }
        try require((1...8).contains(positionStep), "positionStep \(positionStep) outside 1...8")
        try require((1...10_000).contains(evalPromptsPerCategory), "evalPromptsPerCategory \(evalPromptsPerCategory) outside 1...10000")
        try require((1...64).contains(imagesPerEvalPrompt), "imagesPerEvalPrompt \(imagesPerEvalPrompt) outside 1...64")
        try require((1...8).contains(popeYesPerImage), "popeYesPerImage \(popeYesPerImage) outside 1...8")
    }

    /// The scene generator these settings describe.
    public var sceneGenerator: SceneGenerator {
        var generator = SceneGenerator(canvasSize: canvasSize, minObjectSize: minObjectSize, maxObjectSize: maxObjectSize, minimumGap: patchSize)
        generator.positionStep = positionStep
        return generator
    }

    /// `name = value` lines, for logs and `world.json`.
    public var fields: [(name: String, value: String)] {
        [
            ("canvasSize", "\(canvasSize)"), ("patchSize", "\(patchSize)"), ("codebookSize", "\(codebookSize)"),
            ("minObjectSize", "\(minObjectSize)"), ("maxObjectSize", "\(maxObjectSize)"), ("positionStep", "\(positionStep)"),
            ("kmeansImages", "\(kmeansImages)"), ("kmeansMaximumPatches", "\(kmeansMaximumPatches)"),
            ("kmeansIterations", "\(kmeansIterations)"), ("trainPairs", "\(trainPairs)"),
            ("trainCaptions", "\(trainCaptions)"), ("trainProbes", "\(trainProbes)"), ("trainImperfect", "\(trainImperfect)"),
            ("unpairedPrompts", "\(unpairedPrompts)"), ("unpairedImages", "\(unpairedImages)"),
            ("evalPromptsPerCategory", "\(evalPromptsPerCategory)"), ("imagesPerEvalPrompt", "\(imagesPerEvalPrompt)"),
            ("evalImages", "\(evalImages)"), ("popeYesPerImage", "\(popeYesPerImage)"), ("seed", "\(seed)"),
        ]
    }
}
