import GenEvalMini
import XCTest

@testable import World

/// The prompt space splits into train, dev and test by equivalence class; held-out (colour, shape)
/// combinations reach no training item; understanding eval images show unseen scenes; training
/// data is written without the detector or the scorer.
final class SplitTests: XCTestCase {
    static let splits: PromptSplits = {
        var generator = SplitMix64RNG(seed: WorldConfig().seed, stream: 1)
        return splitPromptSpace(generator: &generator)
    }()

    /// One small dataset (default seed, so its split is `splits`) shared by the file-level checks, with the judge calls counted while it is
    /// written: `judgeCallsBeforeEval` is the count at the first ground-truth judgement minus the
    /// count at the start, and `trainingFilesAtFirstJudgement` whether every training file was
    /// already on disk then.
    static let dataset: (directory: URL, judgeCallsBeforeEval: Int?, trainingFilesAtFirstJudgement: Bool, judgeCallsTotal: Int) = {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("world-splits-\(UUID().uuidString)")
        let trainingFiles = [
            DatasetFile.trainPairs, DatasetFile.trainCaptions, DatasetFile.trainProbes, DatasetFile.trainImperfect,
            DatasetFile.unpairedPrompts, DatasetFile.unpairedImages,
        ]
        let start = JudgeCalls.count
        var beforeEval: Int?
        var filesPresent = false
        try! writeDataset(
            config: DatasetTests.smallConfig(seed: WorldConfig().seed), outDir: directory,
            judge: { image, record in
                if beforeEval == nil {
                    beforeEval = JudgeCalls.count - start
                    filesPresent = trainingFiles.allSatisfy { FileManager.default.fileExists(atPath: directory.appendingPathComponent($0).path) }
                }
                return evaluateGenEval(image: image, record: record).correct
            }, progress: { _ in })
        return (directory, beforeEval, filesPresent, JudgeCalls.count - start)
    }()

    func words(_ records: [MetadataRecord]) -> Set<String> { Set(records.flatMap { Vocabulary.splitWords($0.prompt) }) }

    func testSwapsAndMirrorsShareAClass() {
        XCTAssertEqual(equivalenceClass(of: .twoObject(.circle, .square)), equivalenceClass(of: .twoObject(.square, .circle)))
        XCTAssertEqual(equivalenceClass(of: .position(.circle, .leftOf, .square)), equivalenceClass(of: .position(.square, .rightOf, .circle)))
        XCTAssertEqual(equivalenceClass(of: .position(.circle, .above, .square)), equivalenceClass(of: .position(.square, .below, .circle)))
        XCTAssertNotEqual(equivalenceClass(of: .position(.circle, .leftOf, .square)), equivalenceClass(of: .position(.circle, .rightOf, .square)))
        XCTAssertEqual(equivalenceClass(of: .colorAttr(.red, .circle, .blue, .square)), equivalenceClass(of: .colorAttr(.blue, .square, .red, .circle)))
        XCTAssertNotEqual(equivalenceClass(of: .colorAttr(.red, .circle, .blue, .square)), equivalenceClass(of: .colorAttr(.blue, .circle, .red, .square)))
        XCTAssertNotEqual(equivalenceClass(of: .counting(.circle, 2)), equivalenceClass(of: .counting(.circle, 3)))
    }

    func testSplitsAreDisjointByClassAndCoverTheSpace() {
        let splits = Self.splits
        for category in Category.allCases {
            let classes = DataSplit.allCases.map { split in Set(splits.prompts(split, category).map { equivalenceClass(of: $0) }) }
            if categoriesNotHeldOut.contains(category) {
                XCTAssertEqual(classes[0], classes[1]); XCTAssertEqual(classes[0], classes[2])
                continue
            }
            XCTAssertTrue(
                classes[0].isDisjoint(with: classes[1]) && classes[0].isDisjoint(with: classes[2]) && classes[1].isDisjoint(with: classes[2]),
                "\(category): a class sits in two splits")
            XCTAssertFalse(classes[1].isEmpty || classes[2].isEmpty, "\(category): an eval split has no prompts")
            // Every prompt of a class goes where its class goes: swaps and mirrors included.
            let placed = DataSplit.allCases.flatMap { splits.prompts($0, category) }
            let placedClasses = Set(placed.map { equivalenceClass(of: $0) })
            let space = promptSpace(category)
            XCTAssertEqual(Set(placed.map(\.prompt)), Set(space.filter { placedClasses.contains(equivalenceClass(of: $0)) }.map(\.prompt)))
            XCTAssertEqual(placed.count, Set(placed.map(\.prompt)).count, "\(category): a prompt in two splits")
        }
        XCTAssertEqual(splits.prompts(.dev, .position).count, 6, "three classes of two mirrored prompts")
    }

    func testHeldOutCombinationsStayOutOfTrainAndKeepEveryColourAndShape() {
        let splits = Self.splits
        let dev = Set(splits.heldOutCombinations[.dev]!), test = Set(splits.heldOutCombinations[.test]!)
        XCTAssertEqual(dev.count, ShapeClass.allCases.count)
        XCTAssertTrue(dev.isDisjoint(with: test))
        XCTAssertTrue(Set(dev.map(\.color)).isDisjoint(with: Set(test.map(\.color))), "dev and test hold out different colours")
        let train = splits.allPrompts(.train)
        XCTAssertTrue(train.allSatisfy { Set(namedCombinations($0)).isDisjoint(with: dev.union(test)) })
        XCTAssertTrue(splits.allPrompts(.dev).allSatisfy { Set(namedCombinations($0)).isDisjoint(with: test) })
        XCTAssertTrue(splits.allPrompts(.test).allSatisfy { Set(namedCombinations($0)).isDisjoint(with: dev) })
        XCTAssertTrue(splits.prompts(.dev, .colors).allSatisfy { dev.contains(namedCombinations($0)[0]) })
        // Composition, not unseen words: each colour and each shape alone is named in train.
        let trainCombinations = Set(train.flatMap(namedCombinations))
        XCTAssertEqual(Set(trainCombinations.map(\.color)), Set(ObjectColor.allCases))
        XCTAssertEqual(Set(trainCombinations.map(\.shape)), Set(ShapeClass.allCases))
        XCTAssertEqual(splits.allowedCombinations(.train), Set(ObjectKind.all).subtracting(dev.union(test)))
    }

    func testEveryDevAndTestWordOccursInTrain() {
        let trainWords = words(Self.splits.allPrompts(.train))
        for split in [DataSplit.dev, .test] {
            XCTAssertTrue(
                words(Self.splits.allPrompts(split)).isSubset(of: trainWords),
                "\(split): unseen words \(words(Self.splits.allPrompts(split)).subtracting(trainWords))")
        }
    }

    func testPromptFilesHoldEverySplitInGenEvalFormat() throws {
        let reader = try DatasetReader(directory: Self.dataset.directory)
        for split in DataSplit.allCases {
            let records = try reader.prompts(split: split)
            XCTAssertEqual(records.map(\.prompt), Self.splits.allPrompts(split).map(\.prompt), "\(split) (default seed)")
            XCTAssertEqual(records, Self.splits.allPrompts(split))
        }
        for path in ["eval/dev/metadata.jsonl", "eval/test/pope_adversarial.bin", "eval/test/images.bin", "eval/dev/groundtruth/00000/samples/0000.png"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: Self.dataset.directory.appendingPathComponent(path).path), path)
        }
        let summary = try String(contentsOf: Self.dataset.directory.appendingPathComponent(DatasetFile.summary), encoding: .utf8)
        XCTAssertTrue(summary.contains("\"not_held_out\": [\"single_object\"]"), summary)
    }

    /// Every text a training item carries (paired, imperfect and unpaired prompts, captions, probe
    /// questions) and every object its clean images show: no held-out combination.
    func testHeldOutCombinationsReachNoTrainingItem() throws {
        let reader = try DatasetReader(directory: Self.dataset.directory)
        let vocabulary = reader.vocabulary, codebook = try reader.codebook()
        let heldOut = Set(Self.splits.heldOutCombinations.values.flatMap { $0 })
        func named(_ text: String) -> [ObjectKind] {
            if let claim = try? parseCaption(text) { return claim.objects.map { ObjectKind(color: $0.color, shape: $0.shape) } }
            // Prompts and questions: "<colour> <shape>" word pairs.
            let words = Vocabulary.splitWords(text)
            var kinds: [ObjectKind] = []
            for (first, second) in zip(words, words.dropFirst()) {
                if let color = ObjectColor(rawValue: first), let shape = ShapeClass(rawValue: second) { kinds.append(ObjectKind(color: color, shape: shape)) }
            }
            return kinds
        }
        var texts = try reader.trainPairs().map(\.prompt) + reader.trainImperfect().map(\.prompt) + reader.unpairedPrompts()
        texts += try reader.trainCaptions().map(\.caption) + reader.trainProbes().map(\.question)
        var seenColors = Set<ObjectColor>(), seenShapes = Set<ShapeClass>()
        for tokens in texts {
            let text = try vocabulary.decode(tokens)
            let kinds = named(text)
            XCTAssertTrue(Set(kinds).isDisjoint(with: heldOut), "training text '\(text)' names a held-out combination")
            seenColors.formUnion(kinds.map(\.color)); seenShapes.formUnion(kinds.map(\.shape))
        }
        XCTAssertEqual(seenColors, Set(ObjectColor.allCases), "every colour alone occurs in training text")
        XCTAssertEqual(seenShapes, Set(ShapeClass.allCases))
        let images = try reader.trainPairs().map(\.image) + reader.trainCaptions().map(\.image) + reader.trainProbes().map(\.image) + reader.unpairedImages()
        for image in images {
            for object in detectObjects(in: codebook.decode(codes: try vocabulary.imageCodes(tokens: image))) {
                XCTAssertFalse(
                    heldOut.contains(ObjectKind(color: object.color, shape: object.shape)), "a training image shows a held-out \(object.color) \(object.shape)")
            }
        }
        for scene in try reader.unpairedImageScenes() {
            XCTAssertTrue(scene.objects.allSatisfy { !heldOut.contains(ObjectKind(color: $0.color, shape: $0.shape)) })
        }
    }

    /// No caption or POPE eval image repeats an image of the training data (pairs, captions,
    /// probes, imperfect renders, unpaired images), and dev and test share none.
    func testUnderstandingEvalImagesShowUnseenScenes() throws {
        let reader = try DatasetReader(directory: Self.dataset.directory)
        var training = Set(try reader.trainPairs().map(\.image) + reader.trainImperfect().map(\.image))
        training.formUnion(try reader.trainCaptions().map(\.image) + reader.trainProbes().map(\.image) + reader.unpairedImages())
        let trainingScenes = Set(try reader.unpairedImageScenes().map(\.identity))
        var shown = training
        for split in EvalSplit.allCases {
            let images = try reader.evalImages(split: split)
            XCTAssertEqual(images.count, 24)
            for item in images {
                XCTAssertFalse(shown.contains(item.image), "\(split): an eval image repeats a training or earlier eval image")
                XCTAssertFalse(trainingScenes.contains(item.scene.identity))
                shown.insert(item.image)
            }
            for pope in PopeSplit.allCases {
                XCTAssertTrue(try reader.evalProbes(pope, split: split).allSatisfy { !training.contains($0.image) })
            }
        }
    }

    /// Training data is written before the judge ever runs, and the judge does not run while it is:
    /// the detector and scorer count their calls in the process.
    func testTrainingDataNeverRunsTheDetectorOrScorer() {
        let dataset = Self.dataset
        XCTAssertEqual(dataset.judgeCallsBeforeEval, 0, "the detector or scorer ran while training data was written")
        XCTAssertTrue(dataset.trainingFilesAtFirstJudgement, "the judge ran before every training file was written")
        XCTAssertGreaterThan(dataset.judgeCallsTotal, 0, "the counter must see the ground-truth check")
    }
}
