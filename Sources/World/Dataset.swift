import Foundation

/// File names of a dataset directory; docs/DATA.md describes each one.
public enum DatasetFile {
    public static let vocabulary = "vocabulary.json"
    public static let codebook = "codebook.bin"
    public static let summary = "world.json"
    /// Every prompt of a split, GenEval's metadata format.
    public static func prompts(_ split: DataSplit) -> String { "prompts/\(split.rawValue).jsonl" }
    public static let trainPairs = "train_pairs.bin"
    public static let trainCaptions = "train_captions.bin"
    public static let trainProbes = "train_probes.bin"
    public static let trainImperfect = "train_imperfect.bin"
    public static let unpairedPrompts = "unpaired_prompts.bin"
    /// GenEval records of the unpaired prompts: for evaluation and the oracle, never for SUDER.
    public static let unpairedPromptRecords = "unpaired_prompts_metadata.jsonl"
    public static let unpairedImages = "unpaired_images.bin"
    /// Scenes of the unpaired images: for the oracle and diagnostics, never for SUDER.
    public static let unpairedImageLabels = "unpaired_images_labels.jsonl"
    public static func evalDirectory(_ split: EvalSplit) -> String { "eval/\(split.rawValue)" }
    public static func evalMetadata(_ split: EvalSplit) -> String { evalDirectory(split) + "/metadata.jsonl" }
    public static func evalGroundTruth(_ split: EvalSplit) -> String { evalDirectory(split) + "/groundtruth" }
    public static func evalImages(_ split: EvalSplit) -> String { evalDirectory(split) + "/images.bin" }
    public static func evalScenes(_ split: EvalSplit) -> String { evalDirectory(split) + "/scenes.jsonl" }
    public static func evalProbes(_ pope: PopeSplit, split: EvalSplit = .dev) -> String { evalDirectory(split) + "/pope_\(pope.rawValue).bin" }
    /// The dev split's files: the eval set every stage reads unless told otherwise.
    public static let evalMetadata = evalMetadata(.dev)
    public static let evalGroundTruth = evalGroundTruth(.dev)
    public static let samples = "samples"
}

/// The measurements `writeDataset` makes, also saved in `world.json`.
public struct DatasetReport: Sendable {
    /// Ground truth after the VQ round trip, as the judge scores it, per eval split.
    public var roundTripSummary: [EvalSplit: GenEvalSummary] = [:]
    public var cleanRenderFailures = 0
    public var cleanRenderImages = 0
    public var seconds = 0.0
}

/// Judges a ground-truth eval image against its record (GenEval-mini's detector and scorer, from
/// the `GenEvalMini` target, which this one cannot import).
public typealias GroundTruthJudge = (RGBImage, MetadataRecord) -> Bool

/// The `data` stage: splits the prompt space, draws scenes, learns the VQ codebook, writes every
/// training shard from the train split, then each eval split's metadata, VQ-round-tripped ground
/// truth (GenEval's folder layout), understanding images and POPE probes, and has `judge` score
/// that ground truth (the ceiling any model can reach). Every training label is computed from the
/// scene; `judge` runs only after the training data is written, on eval images. `stopRequested` is
/// asked after each step; true ends generation with `WorldError.stopped`, leaving `outDir`
/// incomplete (the caller discards it).
@discardableResult
public func writeDataset(
    config: WorldConfig, outDir: URL, judge: GroundTruthJudge, stopRequested: () -> Bool = { false }, progress: (String) -> Void
) throws -> DatasetReport {
    try config.validate()
    let start = Date()
    var report = DatasetReport()
    func elapsed() -> String { String(format: "%6.1fs", Date().timeIntervalSince(start)) }
    func announce(_ message: String) { progress("[data \(elapsed())] \(message)") }
    /// A step finished: report it, then stop if asked.
    func say(_ message: String) throws {
        announce(message)
        if stopRequested() { throw WorldError.stopped(after: message.split(separator: "\n").first.map(String.init) ?? message) }
    }
    let files = FileManager.default
    for folder in ["prompts", DatasetFile.samples] + EvalSplit.allCases.map(DatasetFile.evalGroundTruth) {
        try files.createDirectory(at: outDir.appendingPathComponent(folder), withIntermediateDirectories: true)
    }
    func url(_ name: String) -> URL { outDir.appendingPathComponent(name) }
    let generator = config.sceneGenerator
    func stream(_ id: UInt64) -> SplitMix64RNG { SplitMix64RNG(seed: config.seed, stream: id) }

    // Prompts: train, dev and test by equivalence class.
    var splitRandom = stream(1)
    let splits = splitPromptSpace(generator: &splitRandom)
    for split in DataSplit.allCases {
        try writeMetadataFile(splits.allPrompts(split), to: url(DatasetFile.prompts(split)))
        try say("\(split.rawValue) prompts: " + Category.allCases.map { "\($0.rawValue) \(splits.prompts(split, $0).count)" }.joined(separator: ", "))
    }
    try say(
        "held-out combinations: "
            + EvalSplit.allCases.map { "\($0.rawValue) " + splits.heldOutCombinations[$0]!.map(\.text).joined(separator: ", ") }.joined(separator: "; "))
    let trainAllowed = splits.allowedCombinations(.train)
    // Every scene any training item shows, so no eval image repeats one.
    var trainingScenes = Set<[String]>()
    func trainingScene(_ index: Int, _ random: inout SplitMix64RNG) -> (record: MetadataRecord, scene: Scene) {
        let record = splits.prompts(.train, Category.allCases[index % Category.allCases.count]).randomElement(using: &random)!
        let scene = generator.scene(for: record, allowed: trainAllowed, using: &random)
        trainingScenes.insert(scene.identity)
        return (record, scene)
    }

    // Training pairs: categories in turn, so each gets an equal share.
    var pairRandom = stream(2)
    let pairDraws = (0..<config.trainPairs).map { trainingScene($0, &pairRandom) }
    let pairImages = pairDraws.map { renderScene($0.scene, canvasSize: config.canvasSize) }
    try say("drew and rendered \(pairImages.count) training pair scenes")

    // Codebook from the first training images (or fresh training scenes if there are none).
    var fitImages = Array(pairImages.prefix(config.kmeansImages))
    var fitRandom = stream(3)
    while fitImages.count < config.kmeansImages {
        fitImages.append(renderScene(trainingScene(fitImages.count, &fitRandom).scene, canvasSize: config.canvasSize))
    }
    let settings = KMeansSettings(
        maximumCodes: config.codebookSize, patchSize: config.patchSize,
        iterations: config.kmeansIterations, maximumPatches: config.kmeansMaximumPatches)
    let codebook = learnCodebook(images: fitImages, settings: settings) { announce($0) }
    try writeCodebook(codebook, to: url(DatasetFile.codebook))
    let vocabulary = Vocabulary(codebookSize: codebook.codeCount)
    try writeVocabulary(vocabulary, to: url(DatasetFile.vocabulary))
    let encoder = VQEncoder(codebook: codebook)
    func imageTokens(_ image: RGBImage) -> [Int32] { vocabulary.imageTokens(codes: encoder.encode(image)) }
    try say("codebook: \(codebook.codeCount) codes of \(config.patchSize)x\(config.patchSize); vocabulary \(vocabulary.size) tokens")

    var pairs = TokenShardWriter(kind: "train_pairs", fieldCount: 2, vocabularySize: vocabulary.size)
    for (draw, image) in zip(pairDraws, pairImages) {
        pairs.append(try vocabulary.encode(draw.record.prompt), imageTokens(image))
    }
    try pairs.write(to: url(DatasetFile.trainPairs))
    try say("wrote \(pairs.recordCount) training pairs")

    var popularity: [ObjectColor: [ShapeClass: Int]] = [:]
    for draw in pairDraws { for object in draw.scene.objects { popularity[object.color, default: [:]][object.shape, default: 0] += 1 } }

    var captionRandom = stream(4)
    var captions = TokenShardWriter(kind: "train_captions", fieldCount: 2, vocabularySize: vocabulary.size)
    for i in 0..<config.trainCaptions {
        let scene = trainingScene(i, &captionRandom).scene
        captions.append(imageTokens(renderScene(scene, canvasSize: config.canvasSize)), try vocabulary.encode(canonicalCaption(scene)))
    }
    try captions.write(to: url(DatasetFile.trainCaptions))

    // Training probes: one question per image, "yes" or "no" with equal odds, negatives from all
    // three POPE strategies, never about a held-out combination.
    var probeRandom = stream(5)
    var probes = TokenShardWriter(kind: "train_probes", fieldCount: 3, vocabularySize: vocabulary.size)
    for i in 0..<config.trainProbes {
        let scene = trainingScene(i, &probeRandom).scene
        let split = PopeSplit.allCases.randomElement(using: &probeRandom)!
        let probe = makeProbes(scene: scene, split: split, yesCount: 1, popularity: popularity, askable: trainAllowed, generator: &probeRandom)
            .randomElement(using: &probeRandom)!
        probes.append(
            imageTokens(renderScene(scene, canvasSize: config.canvasSize)), try vocabulary.encode(probe.question),
            [try vocabulary.id(of: probe.answer ? "yes" : "no")])
    }
    try probes.write(to: url(DatasetFile.trainProbes))
    try say("wrote \(captions.recordCount) training captions and \(probes.recordCount) training probes")

    // Imperfect renders for the prompt task, each described from its scene and its damage.
    var imperfectRandom = stream(9)
    let blank = RGBImage(width: config.canvasSize, height: config.canvasSize, fill: backgroundRGB)
    let maker = ImperfectRenderMaker(
        codeCount: codebook.codeCount, backgroundCode: encoder.encode(blank)[0],
        trainingPrompts: splits.prompts[.train]!)
    var imperfect = TokenShardWriter(kind: "train_imperfect", fieldCount: 2, vocabularySize: vocabulary.size)
    var promptSources: [ImperfectRenderMaker.PromptSource: Int] = [:]
    var imperfectSheet: [RGBImage] = []
    for i in 0..<config.trainImperfect {
        let (record, scene) = trainingScene(i, &imperfectRandom)
        let clean = encoder.encode(renderScene(scene, canvasSize: config.canvasSize))
        let codes = maker.damage(clean, using: &imperfectRandom)
        let decoded = codebook.decode(codes: codes)
        let intact = maker.intactObjects(scene: scene, damaged: decoded, patchSize: config.patchSize)
        let prompt = maker.prompt(intact: intact, original: record, using: &imperfectRandom)
        promptSources[prompt.source, default: 0] += 1
        imperfect.append(try vocabulary.encode(prompt.text), vocabulary.imageTokens(codes: codes))
        if imperfectSheet.count < 64 { imperfectSheet.append(decoded) }
    }
    try imperfect.write(to: url(DatasetFile.trainImperfect))
    if !imperfectSheet.isEmpty {
        try writePNG(imageGrid(imperfectSheet, columns: 8), to: url(DatasetFile.samples + "/imperfect_renders.png"))
    }
    try say(
        "wrote \(imperfect.recordCount) imperfect renders: \(promptSources[.original, default: 0]) keep their prompt, "
            + "\(promptSources[.other, default: 0]) lost an object and take another, \(promptSources[.nothing, default: 0]) lost every object")

    // SUDER's unlabeled pools (training data of the self-improvement stage), labels in separate files.
    var unpairedRandom = stream(6)
    var unpairedPrompts = TokenShardWriter(kind: "unpaired_prompts", fieldCount: 1, vocabularySize: vocabulary.size)
    var unpairedRecords: [MetadataRecord] = []
    for i in 0..<config.unpairedPrompts {
        let record = splits.prompts(.train, Category.allCases[i % Category.allCases.count]).randomElement(using: &unpairedRandom)!
        unpairedRecords.append(record)
        unpairedPrompts.append(try vocabulary.encode(record.prompt))
    }
    try unpairedPrompts.write(to: url(DatasetFile.unpairedPrompts))
    try writeMetadataFile(unpairedRecords, to: url(DatasetFile.unpairedPromptRecords))
    var unpairedImages = TokenShardWriter(kind: "unpaired_images", fieldCount: 1, vocabularySize: vocabulary.size)
    var unpairedScenes: [Scene] = []
    for i in 0..<config.unpairedImages {
        let scene = trainingScene(i, &unpairedRandom).scene
        unpairedScenes.append(scene)
        unpairedImages.append(imageTokens(renderScene(scene, canvasSize: config.canvasSize)))
    }
    try unpairedImages.write(to: url(DatasetFile.unpairedImages))
    try writeScenes(unpairedScenes, to: url(DatasetFile.unpairedImageLabels))
    try say("wrote \(unpairedPrompts.recordCount) unpaired prompts and \(unpairedImages.recordCount) unpaired images")

    // The eval splits. Streams 7 and 8 for dev as before; test takes its own.
    var sampleSheet: [RGBImage] = []
    var shownEvalScenes = trainingScenes
    for split in EvalSplit.allCases {
        let allowed = splits.allowedCombinations(split.dataSplit)
        var evalRandom = stream(split == .dev ? 7 : 10)
        // GenEval-mini: the split's prompts cycled to the per-category line count, each with
        // ground-truth images after the VQ round trip in GenEval's folder layout.
        var evalRecords: [MetadataRecord] = []
        for category in Category.allCases {
            let pool = splits.prompts(split.dataSplit, category).shuffled(using: &evalRandom)
            for i in 0..<config.evalPromptsPerCategory { evalRecords.append(pool[i % pool.count]) }
        }
        try writeMetadataFile(evalRecords, to: url(DatasetFile.evalMetadata(split)))
        var summary = GenEvalSummary()
        for (index, record) in evalRecords.enumerated() {
            var decoded: [RGBImage] = []
            for _ in 0..<config.imagesPerEvalPrompt {
                let clean = renderScene(generator.scene(for: record, allowed: allowed, using: &evalRandom), canvasSize: config.canvasSize)
                report.cleanRenderImages += 1
                if !judge(clean, record) { report.cleanRenderFailures += 1 }
                let roundTrip = codebook.decode(codes: encoder.encode(clean))
                summary.add(category: record.tag, correct: judge(roundTrip, record))
                decoded.append(roundTrip)
                if split == .dev && index % config.evalPromptsPerCategory == 0 && sampleSheet.count < 48 { sampleSheet += [clean, roundTrip] }
            }
            try writeGenEvalSamples(record: record, images: decoded, index: index, outDir: url(DatasetFile.evalGroundTruth(split)))
        }
        report.roundTripSummary[split] = summary
        try say("\(split.rawValue): wrote \(evalRecords.count) eval prompts and their ground-truth images")

        // Images for understanding: scenes of the split's prompts that no training item (and no
        // earlier eval image) shows, for captions and POPE.
        var understandingRandom = stream(split == .dev ? 8 : 11)
        var evalImages = TokenShardWriter(kind: "eval_images", fieldCount: 1, vocabularySize: vocabulary.size)
        var evalScenes: [Scene] = []
        var pope = PopeSplit.allCases.map { TokenShardWriter(kind: "pope_\($0.rawValue)", fieldCount: 3, vocabularySize: vocabulary.size) }
        for i in 0..<config.evalImages {
            let category = Category.allCases[i % Category.allCases.count]
            var scene: Scene, attempts = 0
            repeat {
                attempts += 1
                guard attempts <= 100_000 else {
                    throw WorldError.invalidConfig(
                        "no \(category.rawValue) scene for a \(split.rawValue) understanding image is left that the training data "
                            + "does not show: lower evalImages (data.eval_images) or the training sizes, or widen the world")
                }
                let record = splits.prompts(split.dataSplit, category).randomElement(using: &understandingRandom)!
                scene = generator.scene(for: record, allowed: allowed, using: &understandingRandom)
            } while shownEvalScenes.contains(scene.identity)
            shownEvalScenes.insert(scene.identity)
            let tokens = imageTokens(renderScene(scene, canvasSize: config.canvasSize))
            evalScenes.append(scene)
            evalImages.append(tokens)
            for (s, popeSplit) in PopeSplit.allCases.enumerated() {
                for probe in makeProbes(
                    scene: scene, split: popeSplit, yesCount: config.popeYesPerImage, popularity: popularity,
                    askable: allowed, generator: &understandingRandom)
                {
                    pope[s].append(tokens, try vocabulary.encode(probe.question), [try vocabulary.id(of: probe.answer ? "yes" : "no")])
                }
            }
        }
        try evalImages.write(to: url(DatasetFile.evalImages(split)))
        try writeScenes(evalScenes, to: url(DatasetFile.evalScenes(split)))
        for (s, popeSplit) in PopeSplit.allCases.enumerated() { try pope[s].write(to: url(DatasetFile.evalProbes(popeSplit, split: split))) }
        try say(
            "\(split.rawValue): wrote \(evalImages.recordCount) understanding images in unseen scenes and \(pope[0].recordCount) POPE probes per POPE split")
    }
    try say("detector wrong on \(report.cleanRenderFailures) of \(report.cleanRenderImages) clean ground-truth renders")
    if !sampleSheet.isEmpty {
        try writePNG(imageGrid(sampleSheet, columns: 8), to: url(DatasetFile.samples + "/eval_clean_and_roundtrip.png"))
    }

    report.seconds = Date().timeIntervalSince(start)
    try writeSummary(config: config, splits: splits, report: report, to: url(DatasetFile.summary))
    for split in EvalSplit.allCases {
        try say("\(split.rawValue) ground truth after the VQ round trip, GenEval-mini:\n" + report.roundTripSummary[split]!.table)
    }
    return report
}

// MARK: - Small files

public func writeVocabulary(_ vocabulary: Vocabulary, to url: URL) throws {
    let words = vocabulary.words.map { "\"\($0)\"" }.joined(separator: ", ")
    let specials = Vocabulary.specialNames.map { "\"\($0)\"" }.joined(separator: ", ")
    let text = "{\"specials\": [\(specials)], \"words\": [\(words)], \"codebook_size\": \(vocabulary.codebookSize), \"size\": \(vocabulary.size)}\n"
    try text.write(to: url, atomically: true, encoding: .utf8)
}

public func readVocabulary(_ url: URL) throws -> Vocabulary {
    let data = try readWholeFile(url)
    func fail(_ reason: String) -> WorldError { .malformedFile(path: url.path, reason: reason) }
    guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { throw fail("not a JSON object") }
    guard let specials = object["specials"] as? [String], specials == Vocabulary.specialNames else {
        let found = (object["specials"] as? [String]).map { "\($0)" } ?? "none"
        throw fail(
            "specials \(found) differ from this build's \(Vocabulary.specialNames): the dataset was written by another version; run the data stage again into a new run directory"
        )
    }
    guard let words = object["words"] as? [String], !words.isEmpty, Set(words).count == words.count else { throw fail("\"words\" must be distinct strings") }
    guard let codebookSize = object["codebook_size"] as? Int, (1...(1 << 20)).contains(codebookSize) else { throw fail("bad \"codebook_size\"") }
    let vocabulary = Vocabulary(codebookSize: codebookSize, words: words)
    guard object["size"] as? Int == vocabulary.size else { throw fail("\"size\" does not equal specials + words + codes") }
    return vocabulary
}

public func writeScenes(_ scenes: [Scene], to url: URL) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let lines = try scenes.map { String(decoding: try encoder.encode($0), as: UTF8.self) }
    try (lines.joined(separator: "\n") + (lines.isEmpty ? "" : "\n")).write(to: url, atomically: true, encoding: .utf8)
}

public func readScenes(_ url: URL) throws -> [Scene] {
    let data = try readWholeFile(url)
    let decoder = JSONDecoder()
    var scenes: [Scene] = []
    for (index, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
        guard let scene = try? decoder.decode(Scene.self, from: Data(line)) else {
            throw WorldError.malformedFile(path: url.path, reason: "line \(index + 1) is not a scene")
        }
        // Scenes only feed geometry and captions, but keep them plausible: 1...16 objects on a
        // canvas no larger than 4096 pixels a side.
        guard (1...16).contains(scene.objects.count),
            scene.objects.allSatisfy({ $0.size >= 1 && $0.size <= 4096 && abs($0.x) <= 4096 && abs($0.y) <= 4096 })
        else { throw WorldError.malformedFile(path: url.path, reason: "line \(index + 1): implausible scene") }
        scenes.append(scene)
    }
    return scenes
}

private func writeSummary(config: WorldConfig, splits: PromptSplits, report: DatasetReport, to url: URL) throws {
    let configText = config.fields.map { "\"\($0.name)\": \($0.value)" }.joined(separator: ", ")
    let counts = DataSplit.allCases.map { split in
        "\"\(split.rawValue)\": {" + Category.allCases.map { "\"\($0.rawValue)\": \(splits.prompts(split, $0).count)" }.joined(separator: ", ") + "}"
    }.joined(separator: ", ")
    let combinations = EvalSplit.allCases.map { split in
        "\"\(split.rawValue)\": [" + splits.heldOutCombinations[split]!.map { "\"\($0.text)\"" }.joined(separator: ", ") + "]"
    }.joined(separator: ", ")
    let roundTrip = EvalSplit.allCases.map { "\"\($0.rawValue)\": \(report.roundTripSummary[$0]!.json)" }.joined(separator: ", ")
    let splitText =
        "{\"prompts\": {\(counts)}, \"held_out_combinations\": {\(combinations)}, "
        + "\"not_held_out\": [" + categoriesNotHeldOut.map { "\"\($0.rawValue)\"" }.joined(separator: ", ") + "], "
        + "\"not_held_out_reason\": \"single_object's four prompts are the class names: dev and test show them on new scenes\"}"
    let text =
        "{\"config\": {\(configText)}, \"splits\": \(splitText), \"roundtrip_geneval\": {\(roundTrip)}, "
        + "\"clean_render_detector_failures\": \(report.cleanRenderFailures), \"clean_render_images\": \(report.cleanRenderImages), "
        + "\"seconds\": \(String(format: "%.2f", report.seconds))}\n"
    try text.write(to: url, atomically: true, encoding: .utf8)
}
