import Foundation

/// File names of a dataset directory; docs/DATA.md describes each one.
public enum DatasetFile {
    public static let vocabulary = "vocabulary.json"
    public static let codebook = "codebook.bin"
    public static let summary = "world.json"
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
    public static let evalMetadata = "eval/metadata.jsonl"
    public static let evalGroundTruth = "eval/groundtruth"
    public static let evalImages = "eval/images.bin"
    public static let evalScenes = "eval/scenes.jsonl"
    public static func evalProbes(_ split: PopeSplit) -> String { "eval/pope_\(split.rawValue).bin" }
    public static let samples = "samples"
}

/// The measurements `generateDataset` makes, also saved in `world.json`.
public struct DatasetReport: Sendable {
    public var roundTripSummary = GenEvalSummary()
    public var cleanRenderFailures = 0
    public var cleanRenderImages = 0
    public var seconds = 0.0
}

/// The `data` stage: splits prompts, draws scenes, learns the VQ codebook, writes every token
/// shard, the eval metadata and the VQ-round-tripped ground truth in GenEval's folder layout,
/// then scores that ground truth with the detector (the ceiling any model can reach).
/// `stopRequested` is asked after each step; true ends generation with `WorldError.stopped`,
/// leaving `outDir` incomplete (the caller discards it).
@discardableResult
public func generateDataset(
    config: WorldConfig, outDir: URL, stopRequested: () -> Bool = { false }, progress: (String) -> Void
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
    for folder in ["eval", DatasetFile.evalGroundTruth, DatasetFile.samples] {
        try files.createDirectory(at: outDir.appendingPathComponent(folder), withIntermediateDirectories: true)
    }
    func url(_ name: String) -> URL { outDir.appendingPathComponent(name) }
    let generator = config.sceneGenerator
    func stream(_ id: UInt64) -> SplitMix64RNG { SplitMix64RNG(seed: config.seed, stream: id) }

    // Prompts: training and held-out per category.
    var splitRandom = stream(1)
    var splits: [Category: PromptSplit] = [:]
    for category in Category.allCases {
        splits[category] = splitPrompts(category, heldOutCap: config.evalPromptsPerCategory, generator: &splitRandom)
    }
    try say(
        "prompts: "
            + Category.allCases.map { "\($0.rawValue) \(splits[$0]!.training.count) train / \(splits[$0]!.heldOut.count) held out" }.joined(separator: ", "))
    func trainingRecord(_ index: Int, _ random: inout SplitMix64RNG) -> MetadataRecord {
        splits[Category.allCases[index % Category.allCases.count]]!.training.randomElement(using: &random)!
    }

    // Training pairs: categories in turn, so each gets an equal share.
    var pairRandom = stream(2)
    var pairRecords: [MetadataRecord] = [], pairScenes: [Scene] = []
    for i in 0..<config.trainPairs {
        let record = trainingRecord(i, &pairRandom)
        pairRecords.append(record)
        pairScenes.append(generator.scene(for: record, using: &pairRandom))
    }
    let pairImages = pairScenes.map { renderScene($0, canvasSize: config.canvasSize) }
    try say("drew and rendered \(pairImages.count) training pair scenes")

    // Codebook from the first training images (or fresh scenes if there are none).
    var fitImages = Array(pairImages.prefix(config.kmeansImages))
    var fitRandom = stream(3)
    while fitImages.count < config.kmeansImages {
        fitImages.append(renderScene(generator.scene(for: trainingRecord(fitImages.count, &fitRandom), using: &fitRandom), canvasSize: config.canvasSize))
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
    for (record, image) in zip(pairRecords, pairImages) {
        pairs.append(try vocabulary.encode(record.prompt), imageTokens(image))
    }
    try pairs.write(to: url(DatasetFile.trainPairs))
    try say("wrote \(pairs.recordCount) training pairs")

    var popularity: [ObjectColor: [ShapeClass: Int]] = [:]
    for scene in pairScenes { for object in scene.objects { popularity[object.color, default: [:]][object.shape, default: 0] += 1 } }

    var captionRandom = stream(4)
    var captions = TokenShardWriter(kind: "train_captions", fieldCount: 2, vocabularySize: vocabulary.size)
    for i in 0..<config.trainCaptions {
        let scene = generator.scene(for: trainingRecord(i, &captionRandom), using: &captionRandom)
        captions.append(imageTokens(renderScene(scene, canvasSize: config.canvasSize)), try vocabulary.encode(canonicalCaption(scene)))
    }
    try captions.write(to: url(DatasetFile.trainCaptions))

    // Training probes: one question per image, "yes" or "no" with equal odds, negatives from all
    // three POPE strategies.
    var probeRandom = stream(5)
    var probes = TokenShardWriter(kind: "train_probes", fieldCount: 3, vocabularySize: vocabulary.size)
    for i in 0..<config.trainProbes {
        let scene = generator.scene(for: trainingRecord(i, &probeRandom), using: &probeRandom)
        let split = PopeSplit.allCases.randomElement(using: &probeRandom)!
        let probe = makeProbes(scene: scene, split: split, yesCount: 1, popularity: popularity, generator: &probeRandom)
            .randomElement(using: &probeRandom)!
        probes.append(
            imageTokens(renderScene(scene, canvasSize: config.canvasSize)), try vocabulary.encode(probe.question),
            [try vocabulary.id(of: probe.answer ? "yes" : "no")])
    }
    try probes.write(to: url(DatasetFile.trainProbes))
    try say("wrote \(captions.recordCount) training captions and \(probes.recordCount) training probes")

    // Imperfect renders for the prompt task, each with a prompt the detector agrees with.
    var imperfectRandom = stream(9)
    let blank = RGBImage(width: config.canvasSize, height: config.canvasSize, fill: backgroundRGB)
    let maker = ImperfectRenderMaker(
        codeCount: codebook.codeCount, backgroundCode: encoder.encode(blank)[0],
        trainingPrompts: splits.mapValues(\.training))
    var imperfect = TokenShardWriter(kind: "train_imperfect", fieldCount: 2, vocabularySize: vocabulary.size)
    var promptSources: [ImperfectRenderMaker.PromptSource: Int] = [:]
    var imperfectSheet: [RGBImage] = []
    for i in 0..<config.trainImperfect {
        let record = trainingRecord(i, &imperfectRandom)
        let scene = generator.scene(for: record, using: &imperfectRandom)
        let codes = maker.damage(encoder.encode(renderScene(scene, canvasSize: config.canvasSize)), using: &imperfectRandom)
        let decoded = codebook.decode(codes: codes)
        let prompt = maker.prompt(for: detectObjects(in: decoded), original: record, using: &imperfectRandom)
        promptSources[prompt.source, default: 0] += 1
        imperfect.append(try vocabulary.encode(prompt.text), vocabulary.imageTokens(codes: codes))
        if imperfectSheet.count < 64 { imperfectSheet.append(decoded) }
    }
    try imperfect.write(to: url(DatasetFile.trainImperfect))
    if !imperfectSheet.isEmpty {
        try writePNG(imageGrid(imperfectSheet, columns: 8), to: url(DatasetFile.samples + "/imperfect_renders.png"))
    }
    try say(
        "wrote \(imperfect.recordCount) imperfect renders: \(promptSources[.original, default: 0]) still fit their prompt, "
            + "\(promptSources[.other, default: 0]) fit another, \(promptSources[.nothing, default: 0]) show nothing GenEval counts")

    // SUDER's unlabeled pools, labels in separate files.
    var unpairedRandom = stream(6)
    var unpairedPrompts = TokenShardWriter(kind: "unpaired_prompts", fieldCount: 1, vocabularySize: vocabulary.size)
    var unpairedRecords: [MetadataRecord] = []
    for i in 0..<config.unpairedPrompts {
        let record = trainingRecord(i, &unpairedRandom)
        unpairedRecords.append(record)
        unpairedPrompts.append(try vocabulary.encode(record.prompt))
    }
    try unpairedPrompts.write(to: url(DatasetFile.unpairedPrompts))
    try writeMetadataFile(unpairedRecords, to: url(DatasetFile.unpairedPromptRecords))
    var unpairedImages = TokenShardWriter(kind: "unpaired_images", fieldCount: 1, vocabularySize: vocabulary.size)
    var unpairedScenes: [Scene] = []
    for i in 0..<config.unpairedImages {
        let scene = generator.scene(for: trainingRecord(i, &unpairedRandom), using: &unpairedRandom)
        unpairedScenes.append(scene)
        unpairedImages.append(imageTokens(renderScene(scene, canvasSize: config.canvasSize)))
    }
    try unpairedImages.write(to: url(DatasetFile.unpairedImages))
    try writeScenes(unpairedScenes, to: url(DatasetFile.unpairedImageLabels))
    try say("wrote \(unpairedPrompts.recordCount) unpaired prompts and \(unpairedImages.recordCount) unpaired images")

    // GenEval-mini: held-out prompts cycled to the per-category line count, each with ground-truth
    // images after the VQ round trip in GenEval's folder layout.
    var evalRandom = stream(7)
    var evalRecords: [MetadataRecord] = []
    for category in Category.allCases {
        let heldOut = splits[category]!.heldOut.shuffled(using: &evalRandom)
        for i in 0..<config.evalPromptsPerCategory { evalRecords.append(heldOut[i % heldOut.count]) }
    }
    try writeMetadataFile(evalRecords, to: url(DatasetFile.evalMetadata))
    var sampleSheet: [RGBImage] = []
    for (index, record) in evalRecords.enumerated() {
        var decoded: [RGBImage] = []
        for _ in 0..<config.imagesPerEvalPrompt {
            let clean = renderScene(generator.scene(for: record, using: &evalRandom), canvasSize: config.canvasSize)
            report.cleanRenderImages += 1
            if !evaluateGenEval(image: clean, record: record).correct { report.cleanRenderFailures += 1 }
            let roundTrip = codebook.decode(codes: encoder.encode(clean))
            report.roundTripSummary.add(category: record.tag, correct: evaluateGenEval(image: roundTrip, record: record).correct)
            decoded.append(roundTrip)
            if index % config.evalPromptsPerCategory == 0 && sampleSheet.count < 48 { sampleSheet += [clean, roundTrip] }
        }
        try writeGenEvalSamples(record: record, images: decoded, index: index, outDir: url(DatasetFile.evalGroundTruth))
    }
    try say(
        "wrote \(evalRecords.count) eval prompts and \(report.cleanRenderImages) ground-truth images; detector wrong on \(report.cleanRenderFailures) clean renders"
    )
    if !sampleSheet.isEmpty {
        try writePNG(imageGrid(sampleSheet, columns: 8), to: url(DatasetFile.samples + "/eval_clean_and_roundtrip.png"))
    }

    // Held-out images for understanding: scenes from every prompt space, captions and POPE.
    var understandingRandom = stream(8)
    var evalImages = TokenShardWriter(kind: "eval_images", fieldCount: 1, vocabularySize: vocabulary.size)
    var evalScenes: [Scene] = []
    var pope = PopeSplit.allCases.map { TokenShardWriter(kind: "pope_\($0.rawValue)", fieldCount: 3, vocabularySize: vocabulary.size) }
    for i in 0..<config.evalImages {
        let category = Category.allCases[i % Category.allCases.count]
        let record = promptSpace(category).randomElement(using: &understandingRandom)!
        let scene = generator.scene(for: record, using: &understandingRandom)
        let tokens = imageTokens(renderScene(scene, canvasSize: config.canvasSize))
        evalScenes.append(scene)
        evalImages.append(tokens)
        for (s, split) in PopeSplit.allCases.enumerated() {
            for probe in makeProbes(scene: scene, split: split, yesCount: config.popeYesPerImage, popularity: popularity, generator: &understandingRandom) {
                pope[s].append(tokens, try vocabulary.encode(probe.question), [try vocabulary.id(of: probe.answer ? "yes" : "no")])
            }
        }
    }
    try evalImages.write(to: url(DatasetFile.evalImages))
    try writeScenes(evalScenes, to: url(DatasetFile.evalScenes))
    for (s, split) in PopeSplit.allCases.enumerated() { try pope[s].write(to: url(DatasetFile.evalProbes(split))) }
    try say("wrote \(evalImages.recordCount) eval images with captions and \(pope[0].recordCount) POPE probes per split")

    report.seconds = Date().timeIntervalSince(start)
    try writeSummary(config: config, report: report, to: url(DatasetFile.summary))
    announce("ground truth after the VQ round trip, GenEval-mini:\n" + report.roundTripSummary.table)
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

private func writeSummary(config: WorldConfig, report: DatasetReport, to url: URL) throws {
    let configText = config.fields.map { "\"\($0.name)\": \($0.value)" }.joined(separator: ", ")
    let text =
        "{\"config\": {\(configText)}, \"roundtrip_geneval\": \(report.roundTripSummary.json), "
        + "\"clean_render_detector_failures\": \(report.cleanRenderFailures), \"clean_render_images\": \(report.cleanRenderImages), "
        + "\"seconds\": \(String(format: "%.2f", report.seconds))}\n"
    try text.write(to: url, atomically: true, encoding: .utf8)
}
