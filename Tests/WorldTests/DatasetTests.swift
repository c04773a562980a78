import GenEvalMini
import XCTest

@testable import World

/// The `data` stage end to end on a small world: files, reader, determinism, scoring, oracle.
final class DatasetTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("world-data-\(UUID().uuidString)")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    static func smallConfig(seed: UInt64 = 42) -> WorldConfig {
        var config = WorldConfig()
        config.trainPairs = 240
        config.trainCaptions = 60
        config.trainProbes = 60
        config.trainImperfect = 60
        config.unpairedPrompts = 30
        config.unpairedImages = 30
        config.evalPromptsPerCategory = 4
        config.evalImages = 24
        config.kmeansImages = 240
        config.kmeansIterations = 3
        config.seed = seed
        return config
    }

    func generate(_ config: WorldConfig, into name: String) throws -> URL {
        let out = directory.appendingPathComponent(name)
        var lines: [String] = []
        try generateDataset(config: config, outDir: out) { lines.append($0) }
        XCTAssertTrue(lines.contains { $0.contains("wrote 240 training pairs") }, lines.joined(separator: "\n"))
        return out
    }

    func testDatasetReadsBackWithValidatedFields() throws {
        let out = try generate(Self.smallConfig(), into: "a")
        let reader = try DatasetReader(directory: out)
        let vocabulary = reader.vocabulary
        let codebook = try reader.codebook()
        XCTAssertEqual(vocabulary.codebookSize, codebook.codeCount)

        let pairs = try reader.trainPairs()
        XCTAssertEqual(pairs.count, 240)
        XCTAssertTrue(pairs.allSatisfy { $0.image.count == 64 && $0.prompt.count <= maxPromptTokens })
        XCTAssertTrue(try vocabulary.decode(pairs[0].prompt).hasPrefix("a photo of"))
        XCTAssertEqual(try reader.trainCaptions().count, 60)
        let probes = try reader.trainProbes()
        XCTAssertEqual(probes.count, 60)
        XCTAssertTrue(probes.contains { $0.answer } && probes.contains { !$0.answer })
        XCTAssertEqual(try reader.unpairedPrompts().count, 30)
        XCTAssertEqual(try reader.unpairedImages().count, 30)
        XCTAssertEqual(try reader.unpairedPromptRecords().count, 30)
        XCTAssertEqual(try reader.unpairedImageScenes().count, 30)

        // Eval prompts are disjoint from training prompts except single_object's four; the
        // default accessors read dev.
        let training = Set(pairs.map { try! vocabulary.decode($0.prompt) } + (try reader.unpairedPrompts()).map { try! vocabulary.decode($0) })
        let eval = try reader.evalMetadata()
        XCTAssertEqual(eval, try reader.evalMetadata(split: .dev))
        XCTAssertEqual(eval.count, 24)
        for split in EvalSplit.allCases {
            for record in try reader.evalMetadata(split: split) where record.tag != .singleObject {
                XCTAssertFalse(training.contains(record.prompt), record.prompt)
            }
        }

        // Understanding eval: captions of the stored scenes are correct for the stored images,
        // the oracle agrees, and POPE probes have balanced answers.
        let oracle = Oracle(vocabulary: vocabulary, codebook: codebook)
        let evalImages = try reader.evalImages()
        XCTAssertEqual(evalImages, try reader.evalImages(split: .dev))
        XCTAssertEqual(evalImages.count, 24)
        XCTAssertEqual(try reader.evalImages(split: .test).count, 24)
        for item in evalImages + (try reader.evalImages(split: .test)) {
            let caption = try vocabulary.encode(canonicalCaption(item.scene)) + [Vocabulary.eos]
            XCTAssertEqual(oracle.captionReward(captionTokens: caption, scene: item.scene), 1)
            XCTAssertEqual(oracle.captionReward(captionTokens: [Vocabulary.boi], scene: item.scene), 0)
        }
        for split in PopeSplit.allCases {
            let probes = try reader.evalProbes(split)
            XCTAssertEqual(probes, try reader.evalProbes(split, split: .dev))
            XCTAssertEqual(probes.count, 48)
            XCTAssertEqual(probes.filter(\.answer).count, 24)
            XCTAssertEqual(try reader.evalProbes(split, split: .test).filter(\.answer).count, 24)
        }

        // GenEval-mini on the ground-truth folder, through PNG files and through memory.
        for split in EvalSplit.allCases {
            let folderSummary = try scoreGenEvalFolder(images: reader.evalGroundTruthDirectory(split: split), metadata: try reader.evalMetadata(split: split))
            XCTAssertEqual(folderSummary.imageCount, 24 * 4)
            XCTAssertGreaterThanOrEqual(folderSummary.overall, 0.98, "\(split): detector on the round-tripped ground truth")
        }
        let pair = pairs[0]
        let record = try parseMetadataLines(String(contentsOf: out.appendingPathComponent(DatasetFile.unpairedPromptRecords), encoding: .utf8))[0]
        XCTAssertEqual(try vocabulary.encode(record.prompt), try reader.unpairedPrompts()[0])
        XCTAssertEqual(
            oracle.imageReward(imageTokens: pair.image, record: MetadataRecord.singleObject(.circle))
                + oracle.imageReward(imageTokens: pair.image, record: MetadataRecord.singleObject(.square))
                + oracle.imageReward(imageTokens: pair.image, record: MetadataRecord.singleObject(.triangle))
                + oracle.imageReward(imageTokens: pair.image, record: MetadataRecord.singleObject(.cross)), 1,
            "the first pair is a single_object scene: exactly one class matches")
        XCTAssertEqual(oracle.imageReward(imageTokens: pair.prompt, record: record), 0, "text tokens are not an image")
    }

    /// Imperfect renders are described by training prompts or "a photo of nothing", and the
    /// scene-based rule keeps its teaching purpose: the detector (read here only to check, never
    /// to label) finds nothing GenEval counts in most images described as nothing.
    func testImperfectRendersCarryTrainingPrompts() throws {
        let out = try generate(Self.smallConfig(), into: "a")
        let reader = try DatasetReader(directory: out)
        let vocabulary = reader.vocabulary, codebook = try reader.codebook()
        let training = Set(try reader.prompts(split: .train).map(\.prompt))
        let examples = try reader.trainImperfect()
        XCTAssertEqual(examples.count, 60)
        var nothing = 0, nothingAgreed = 0, kept = 0
        for example in examples {
            let text = try vocabulary.decode(example.prompt)
            if text == ImperfectRenderMaker.nothingPrompt {
                nothing += 1
                let detections = detectObjects(in: codebook.decode(codes: try vocabulary.imageCodes(tokens: example.image)))
                let countsAnObject = ShapeClass.allCases.contains { evaluateGenEval(allDetections: detections, record: .singleObject($0)).correct }
                nothingAgreed += countsAnObject ? 0 : 1
            } else {
                kept += 1
                XCTAssertTrue(training.contains(text), "\(text) is not a training prompt")
            }
        }
        XCTAssertTrue(nothing > 0 && kept > 0, "60 damaged renders should include both kinds of description")
        XCTAssertGreaterThanOrEqual(
            Double(nothingAgreed), 0.5 * Double(nothing), "\(nothingAgreed) of \(nothing) 'nothing' images hold no object the detector counts")
    }

    func testGenerationIsDeterministicBySeed() throws {
        let a = try generate(Self.smallConfig(seed: 1), into: "a")
        let b = try generate(Self.smallConfig(seed: 1), into: "b")
        let c = try generate(Self.smallConfig(seed: 2), into: "c")
        for name in [
            DatasetFile.codebook, DatasetFile.trainPairs, DatasetFile.trainProbes, DatasetFile.trainImperfect, DatasetFile.unpairedImages,
            DatasetFile.evalMetadata, DatasetFile.evalProbes(.adversarial), "eval/dev/groundtruth/00003/samples/0002.png",
            "eval/test/groundtruth/00003/samples/0002.png", DatasetFile.prompts(.test),
        ] {
            XCTAssertEqual(try Data(contentsOf: a.appendingPathComponent(name)), try Data(contentsOf: b.appendingPathComponent(name)), name)
        }
        XCTAssertNotEqual(
            try Data(contentsOf: a.appendingPathComponent(DatasetFile.trainPairs)),
            try Data(contentsOf: c.appendingPathComponent(DatasetFile.trainPairs)))
    }

    func testMissingAndMismatchedFilesGiveClearErrors() throws {
        let out = try generate(Self.smallConfig(), into: "a")
        try FileManager.default.removeItem(at: out.appendingPathComponent(DatasetFile.codebook))
        let reader = try DatasetReader(directory: out)
        XCTAssertThrowsError(try reader.codebook()) { error in
            XCTAssertEqual(error as? WorldError, .missingFile(path: out.appendingPathComponent(DatasetFile.codebook).path))
        }
        // A captions shard in the pairs' place: the kind in the header catches it.
        try FileManager.default.removeItem(at: out.appendingPathComponent(DatasetFile.trainPairs))
        try FileManager.default.copyItem(at: out.appendingPathComponent(DatasetFile.trainCaptions), to: out.appendingPathComponent(DatasetFile.trainPairs))
        XCTAssertThrowsError(try reader.trainPairs()) { XCTAssertTrue("\($0)".contains("kind 'train_captions', expected 'train_pairs'"), "\($0)") }
        // A folder scored against the wrong metadata is refused.
        var other = try reader.evalMetadata()
        other[0] = MetadataRecord.counting(.cross, 4)
        XCTAssertThrowsError(try scoreGenEvalFolder(images: out.appendingPathComponent(DatasetFile.evalGroundTruth), metadata: other)) {
            XCTAssertTrue("\($0)".contains("differs from metadata line 1"), "\($0)")
        }
        // A vocabulary written before the task markers existed: refused, saying to regenerate.
        let vocabularyURL = out.appendingPathComponent(DatasetFile.vocabulary)
        let current = try String(contentsOf: vocabularyURL, encoding: .utf8)
        try current.replacingOccurrences(of: ", \"<caption>\", \"<prompt>\"", with: "").write(to: vocabularyURL, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try DatasetReader(directory: out)) {
            XCTAssertTrue("\($0)".contains("written by another version; run the data stage again"), "\($0)")
        }
        // A dataset from before the splits: refused, saying to regenerate.
        try current.write(to: vocabularyURL, atomically: true, encoding: .utf8)
        XCTAssertNoThrow(try DatasetReader(directory: out))
        try FileManager.default.removeItem(at: out.appendingPathComponent(DatasetFile.prompts(.train)))
        XCTAssertThrowsError(try DatasetReader(directory: out)) {
            XCTAssertTrue("\($0)".contains("written before the train/dev/test splits; run the data stage again"), "\($0)")
        }
        // More understanding images than a coarse world (9 places per object) has unseen scenes:
        // running out is an error, not an endless search.
        var crowded = Self.smallConfig()
        crowded.positionStep = 8
        crowded.evalImages = 12_000
        XCTAssertThrowsError(try generateDataset(config: crowded, outDir: directory.appendingPathComponent("crowded")) { _ in }) {
            XCTAssertTrue("\($0)".contains("scene for a dev understanding image is left that the training data does not show"), "\($0)")
        }
        var bad = WorldConfig(); bad.canvasSize = 30
        XCTAssertThrowsError(try generateDataset(config: bad, outDir: directory.appendingPathComponent("x")) { _ in }) {
            XCTAssertTrue("\($0)".contains("multiple of patchSize"), "\($0)")
        }
    }
}

/// Noise must not pass GenEval-mini: images of random codes hold blobs of every colour, and
/// only confident detections (shape IoU above GenEval's threshold analogue) may count.
final class DetectorNoiseTests: XCTestCase {
    func testRandomCodeImagesRarelyPassSingleObjectPrompts() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("world-noise-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        try generateDataset(config: DatasetTests.smallConfig(), outDir: directory) { _ in }
        let reader = try DatasetReader(directory: directory)
        let codebook = try reader.codebook()
        var generator = SplitMix64RNG(seed: 5)
        var passed = 0, total = 0, confidences: [Double] = []
        for _ in 0..<100 {
            let codes = (0..<64).map { _ in Int32(Int.random(in: 0..<codebook.codeCount, using: &generator)) }
            let image = codebook.decode(codes: codes)
            confidences += detectObjects(in: image).map(\.confidence)
            for shape in ShapeClass.allCases {
                let record = MetadataRecord(tag: .singleObject, include: [ObjectRequirement(shape: shape, count: 1)], prompt: "a photo of a \(shape.rawValue)")
                passed += evaluateGenEval(image: image, record: record).correct ? 1 : 0
                total += 1
            }
        }
        confidences.sort()
        let median = confidences.isEmpty ? 0 : confidences[confidences.count / 2]
        XCTAssertLessThan(Double(passed) / Double(total), 0.05, "noise passed \(passed)/\(total); median blob confidence \(median)")
    }
}
