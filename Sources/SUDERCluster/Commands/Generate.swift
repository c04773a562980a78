import ClusterRuntime
import Foundation
import Model
import World

/// `suder generate`: images from a trained model, for one prompt or for a GenEval metadata file.
public struct GenerateOptions {
    public var checkpoint: URL
    public var data: URL?
    /// One prompt, or (exclusive) a GenEval metadata file.
    public var prompt: String?
    public var metadata: URL?
    /// Images per prompt; nil = 8 for a prompt, the run's `eval.images_per_prompt` for metadata.
    public var count: Int?
    /// nil = the run's `run.seed`, `eval.cfg_weight`, `eval.temperature` (what the eval stage uses).
    public var seed: Int?
    public var guidanceWeight: Double?
    public var temperature: Double?
    public var out: URL
    /// Pixels a side per image pixel in the grid.
    public var gridScale: Int

    public init(
        checkpoint: URL, data: URL?, prompt: String?, metadata: URL?, count: Int?, seed: Int?, guidanceWeight: Double?,
        temperature: Double?, out: URL, gridScale: Int
    ) {
        self.checkpoint = checkpoint; self.data = data; self.prompt = prompt; self.metadata = metadata; self.count = count
        self.seed = seed; self.guidanceWeight = guidanceWeight; self.temperature = temperature; self.out = out; self.gridScale = gridScale
    }
}

public func runGenerateCommand(_ options: GenerateOptions) -> Never {
    runWithTrainedModel(checkpoint: options.checkpoint, data: options.data) { opened in
        try generate(options, opened)
    }
}

/// The grid of a `--prompt` run, beside its PNGs.
let generateGridName = "grid.png"

func generate(_ options: GenerateOptions, _ opened: TrainedModel) throws {
    let config = opened.job.config, console = opened.job.console, comm = opened.job.comm
    let seed = UInt64(options.seed ?? config.int("run.seed"))
    var settings = ImageSampling(config, section: "eval")
    if let temperature = options.temperature { settings.temperature = Float(temperature) }
    if let guidanceWeight = options.guidanceWeight { settings.guidanceWeight = Float(guidanceWeight) }
    // Everything the user gave is checked before any sampling; rank 0 reads the files for every rank.
    let records: [MetadataRecord]
    if let metadata = options.metadata {
        let text = try comm.rootDecides {
            do { return try String(contentsOf: metadata, encoding: .utf8) } catch {
                throw AllRanksError("--metadata \(metadata.path): cannot read (\(error.localizedDescription))")
            }
        }
        do { records = try parseMetadataLines(text) } catch { throw AllRanksError("--metadata \(metadata.path): \(error)") }
        guard !records.isEmpty else { throw AllRanksError("--metadata \(metadata.path) holds no prompts") }
    } else {
        // A bare prompt has no GenEval record; the tag and requirements are placeholders never scored.
        records = [MetadataRecord(tag: .singleObject, include: [], prompt: options.prompt ?? "")]
    }
    for (line, record) in records.enumerated() {
        let what = options.metadata.map { "\($0.path) line \(line + 1): prompt" } ?? "--prompt"
        let words = try encodeUserText(record.prompt, what: what, vocabulary: opened.tasks.vocabulary)
        guard !words.isEmpty, words.count <= maxPromptTokens else {
            throw AllRanksError("\(what) '\(record.prompt)' has \(words.count) words; prompts have 1 to \(maxPromptTokens)")
        }
    }
    try comm.rootDecides { try checkOutputDirectory(options.out) }
    let perPrompt = options.count ?? (options.metadata == nil ? 8 : config.int("eval.images_per_prompt"))
    console.print(
        "generate: \(records.count) prompt(s) x \(perPrompt) images from \(opened.checkpoint.header.stage) step \(opened.checkpoint.header.step), "
            + "seed \(seed), guidance \(settings.guidanceWeight), temperature \(settings.temperature), over \(comm.size) rank(s)")

    if options.metadata != nil {
        // The eval stage's own sampling: the same seeds give the same images as its GenEval-mini.
        let run = try runGenEval(
            records: records, tasks: opened.tasks, imagesPerPrompt: perPrompt, settings: settings, seed: seed,
            comm: comm, keepImages: true,
            progress: console.progress("generate", total: records.count, unit: "prompts"))
        try comm.rootDecides {
            guard let run else { return }
            for (index, record) in records.enumerated() {
                let images = try run.images[index].map { try opened.tasks.oracle.decodeImage(tokens: $0) }
                try writeGenEvalSamples(record: record, images: images, index: index, outDir: options.out)
            }
            console.print(
                "generate: wrote \(options.out.path)/<index>/samples/<k>.png; "
                    + String(
                        format: "GenEval-mini %.4f (score again with `suder eval geneval --metadata %@ --images %@`)",
                        run.summary.overall, options.metadata!.path, options.out.path))
        }
        return
    }

    let prompt = try opened.tasks.vocabulary.encode(records[0].prompt)
    let tokens = try sampleAcrossRanks(
        prompt: prompt, count: perPrompt, seed: seed, settings: settings, tasks: opened.tasks,
        comm: comm)
    try comm.rootDecides {
        guard let tokens else { return }
        let images = try tokens.map { try opened.tasks.oracle.decodeImage(tokens: $0) }
        for (k, image) in images.enumerated() {
            try writePNG(image, to: options.out.appendingPathComponent(String(format: "%04d.png", k)))
        }
        let grid = enlarged(imageGrid(images, columns: min(images.count, 8)), scale: options.gridScale)
        try writePNG(grid, to: options.out.appendingPathComponent(generateGridName))
        console.print("generate: wrote \(images.count) images and \(generateGridName) (\(grid.width)x\(grid.height)) to \(options.out.path)")
    }
}

/// Image tokens of `count` samples of one prompt, on rank 0. Sample k uses the eval stage's seed
/// for (record 0, sample k), so `--prompt P` draws what a metadata file whose first line is P
/// draws; ranks take samples k = rank, rank + size, ..., so the images do not depend on the rank count.
func sampleAcrossRanks(
    prompt: [Int32], count: Int, seed: UInt64, settings: ImageSampling, tasks: UnifiedModelTasks,
    comm: Communicator
) throws -> [[Int32]]? {
    let mine = shardIndices(count: count, rank: comm.rank, size: comm.size)
    let drawn = tasks.sampleImages(
        prompts: mine.map { _ in prompt },
        seeds: mine.map { streamSeed(seed, StreamPurpose.evalImage, 0, UInt64($0)) }, settings: settings)
    var packed = ByteWriter()
    for (k, tokens) in zip(mine, drawn) {
        packed.u32(UInt32(k))
        for t in tokens { packed.u32(UInt32(bitPattern: t)) }
    }
    guard let gathered = comm.gather(packed.bytes, root: 0) else { return nil }
    var images = [[Int32]](repeating: [], count: count)
    for bytes in gathered {
        var reader = ByteReader(bytes, file: "gathered samples")
        while reader.remaining > 0 {
            let k = Int(try reader.u32("sample"))
            images[k] = try (0..<tasks.imageTokenCount).map { _ in Int32(bitPattern: try reader.u32("token")) }
        }
    }
    return images
}

/// The output must be new or empty: generated files never overwrite earlier results. It is created
/// here, before any sampling, so a path that cannot hold it costs nothing.
func checkOutputDirectory(_ url: URL) throws {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) {
        guard isDirectory.boolValue else { throw AllRanksError("--out \(url.path) is a file; give a directory") }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        guard entries.isEmpty else {
            throw AllRanksError("--out \(url.path) already holds \(entries.count) entries; give a new or empty directory so nothing is overwritten")
        }
    } else if url.path.isEmpty {
        throw AllRanksError("--out is empty")
    }
    if let problem = directoryProblem(url, create: true) { throw AllRanksError("--out \(url.path): \(problem)") }
}

/// Nearest-neighbour enlargement: each pixel becomes a `scale` x `scale` block, so a 32x32 sample
/// stays sharp on screen.
func enlarged(_ image: RGBImage, scale: Int) -> RGBImage {
    guard scale > 1 else { return image }
    let width = image.width * scale, height = image.height * scale
    var pixels = [UInt8](repeating: 0, count: 3 * width * height)
    for y in 0..<height {
        let sourceRow = 3 * (y / scale) * image.width
        for x in 0..<width {
            let source = sourceRow + 3 * (x / scale), target = 3 * (y * width + x)
            pixels[target] = image.pixels[source]
            pixels[target + 1] = image.pixels[source + 1]
            pixels[target + 2] = image.pixels[source + 2]
        }
    }
    return RGBImage(width: width, height: height, pixels: pixels)
}
