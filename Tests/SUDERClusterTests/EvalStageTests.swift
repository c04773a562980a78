import GenEvalMini
import Model
import World
import XCTest

@testable import ClusterRuntime
@testable import SUDERCluster

#if canImport(FoundationXML)
    import FoundationXML
#endif

final class EvalStageTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("suder-evalstage-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    // MARK: - Bootstrap

    /// Six categories of `perCategory` records, in file order.
    func categories(_ perCategory: Int) -> [Category] {
        Category.allCases.flatMap { Array(repeating: $0, count: perCategory) }
    }

    /// A prompt of its own for every line.
    func distinctPrompts(_ tags: [Category]) -> [String] { tags.indices.map { "prompt \($0)" } }

    /// Two counting prompts of ten lines each, one gaining an image on every line and one losing
    /// one: a bootstrap over lines would give about +-0.11; over prompts the interval reaches
    /// each prompt's own delta, because a resample may draw the same prompt twice.
    func testBootstrapResamplesPromptsWithAllTheirLines() {
        let tags = [Category](repeating: .counting, count: 20)
        let prompts = (0..<20).map { $0 % 2 == 0 ? "a photo of two circles" : "a photo of three squares" }
        let base = tags.map { _ in 2 }, suder = (0..<20).map { $0 % 2 == 0 ? 3 : 1 }
        let result = pairedBootstrap(categories: tags, prompts: prompts, base: base, suder: suder, imagesPerPrompt: 4)
        XCTAssertEqual(result.categories[.counting]?.delta ?? .nan, 0, accuracy: 1e-12)
        XCTAssertEqual(result.categories[.counting]?.low ?? .nan, -0.25, accuracy: 1e-12)
        XCTAssertEqual(result.categories[.counting]?.high ?? .nan, 0.25, accuracy: 1e-12)
        XCTAssertEqual(result.distinctPrompts[.counting], 2)
    }

    /// Two prompts with the same mean still show their lines' sampling noise: the second stage
    /// resamples each drawn prompt's lines.
    func testBootstrapOfTwoAgreeingPromptsKeepsTheLinesNoise() {
        let tags = [Category](repeating: .twoObject, count: 40)
        let prompts = (0..<40).map { $0 < 20 ? "a photo of a circle and a square" : "a photo of a cross and a triangle" }
        let base = tags.map { _ in 2 }, suder = (0..<40).map { $0 % 2 == 0 ? 3 : 1 }
        let result = pairedBootstrap(categories: tags, prompts: prompts, base: base, suder: suder, imagesPerPrompt: 4)
        let interval = try! XCTUnwrap(result.categories[.twoObject])
        XCTAssertEqual(interval.delta, 0, accuracy: 1e-12)
        // Lines of sd 0.25: the mean of 40 has sd 0.04; the prompts agree, so little more.
        XCTAssertLessThan(interval.low, -0.04)
        XCTAssertGreaterThan(interval.high, 0.04)
        XCTAssertLessThan(interval.high, 0.15)
    }

    func testBootstrapOfIdenticalModelsIsExactlyZero() {
        let tags = categories(10)
        let base = tags.indices.map { $0 * 7 % 5 }  // 0...4 correct of 4 images
        let result = pairedBootstrap(categories: tags, prompts: distinctPrompts(tags), base: base, suder: base, imagesPerPrompt: 4)
        XCTAssertEqual(result.overall, DeltaInterval(delta: 0, low: 0, high: 0))
        for category in Category.allCases { XCTAssertEqual(result.categories[category], DeltaInterval(delta: 0, low: 0, high: 0)) }
    }

    func testBootstrapOfBalancedDisagreementIsAnIntervalAroundZero() {
        // In every category half the prompts gain an image and half lose one: delta 0, but the
        // resamples spread on both sides.
        let tags = categories(20)
        let base = tags.map { _ in 2 }
        let suder = tags.indices.map { $0 % 2 == 0 ? 3 : 1 }
        let result = pairedBootstrap(categories: tags, prompts: distinctPrompts(tags), base: base, suder: suder, imagesPerPrompt: 4)
        XCTAssertEqual(result.overall.delta, 0, accuracy: 1e-12)
        XCTAssertLessThan(result.overall.low, -0.01)
        XCTAssertGreaterThan(result.overall.high, 0.01)
        // Each category mean has sd 0.25 / sqrt(20) = 0.056; the overall averages six of them.
        XCTAssertEqual(result.overall.high, 1.96 * 0.25 / (20.0 * 6).squareRoot(), accuracy: 0.01)
        XCTAssertEqual(result.overall.low, -result.overall.high, accuracy: 0.01)
    }

    func testBootstrapOfAModelBetterOnEveryPromptIsPositive() {
        let tags = categories(8)
        let base = tags.indices.map { $0 % 3 }
        let suder = tags.indices.map { $0 % 3 + 1 + ($0 % 2) }
        let result = pairedBootstrap(categories: tags, prompts: distinctPrompts(tags), base: base, suder: suder, imagesPerPrompt: 4)
        XCTAssertGreaterThan(result.overall.low, 0)
        XCTAssertLessThanOrEqual(result.overall.low, result.overall.delta)
        XCTAssertGreaterThanOrEqual(result.overall.high, result.overall.delta)
        for category in Category.allCases { XCTAssertGreaterThan(result.categories[category]!.low, 0, category.rawValue) }
    }

    func testBootstrapOverallIsTheUnweightedMeanOfCategories() {
        // Two counting prompts gain one image of four each; ten colors prompts are unchanged.
        // Weighting by prompts would give 0.5 / 12; GenEval's unweighted mean gives 0.125.
        let tags = [Category](repeating: .counting, count: 2) + [Category](repeating: .colors, count: 10)
        let base = tags.map { _ in 1 }
        let suder = tags.map { $0 == .counting ? 2 : 1 }
        let result = pairedBootstrap(categories: tags, prompts: distinctPrompts(tags), base: base, suder: suder, imagesPerPrompt: 4)
        XCTAssertEqual(result.overall, DeltaInterval(delta: 0.125, low: 0.125, high: 0.125))
        XCTAssertEqual(result.categories[.counting], DeltaInterval(delta: 0.25, low: 0.25, high: 0.25))
        XCTAssertNil(result.categories[.position])
    }

    func testBootstrapIsReproducibleAndDependsOnItsSeed() {
        let tags = categories(12)
        let base = tags.indices.map { $0 * 5 % 5 }, suder = tags.indices.map { $0 * 3 % 5 }
        let a = pairedBootstrap(categories: tags, prompts: distinctPrompts(tags), base: base, suder: suder, imagesPerPrompt: 4)
        let b = pairedBootstrap(categories: tags, prompts: distinctPrompts(tags), base: base, suder: suder, imagesPerPrompt: 4)
        let c = pairedBootstrap(categories: tags, prompts: distinctPrompts(tags), base: base, suder: suder, imagesPerPrompt: 4, seed: 99)
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.overall.delta, c.overall.delta)
        XCTAssertNotEqual(a.categories, c.categories, "another seed draws other resamples")
    }

    func testPercentileInterpolatesBetweenRanks() {
        XCTAssertEqual(percentile([0, 10], 0.5), 5)
        XCTAssertEqual(percentile([1, 2, 3, 4, 5], 0.25), 2)
        XCTAssertEqual(percentile([7], 0.975), 7)
    }

    // MARK: - Record selection

    func testSelectionCoversEveryCategoryInFileOrder() {
        let tags = categories(100)
        XCTAssertEqual(selectEvalRecords(tags, maxPrompts: 0), Array(0..<600))
        XCTAssertEqual(selectEvalRecords(tags, maxPrompts: 1000), Array(0..<600))
        XCTAssertEqual(selectEvalRecords(tags, maxPrompts: 12), [0, 1, 100, 101, 200, 201, 300, 301, 400, 401, 500, 501])
        let seven = selectEvalRecords(tags, maxPrompts: 7)
        XCTAssertEqual(seven, [0, 1, 100, 200, 300, 400, 500])
    }

    // MARK: - Summary file

    func testSummaryJSONHasEveryFieldAndReadsBack() throws {
        let summary = fabricatedSummary(baseCorrect: [4, 0, 2, 2, 1, 3], suderCorrect: [4, 1, 3, 2, 2, 3], step: 20)
        let data = try summary.encoded()
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertEqual(object["format"] as? String, "suder-eval-summary/1")
        let settings = try XCTUnwrap(object["settings"] as? [String: Any])
        XCTAssertEqual(settings["images_per_prompt"] as? Int, 4)
        XCTAssertEqual(settings["prompt_lines"] as? [Int], [0, 1, 2, 3, 4, 5])
        let models = try XCTUnwrap(object["models"] as? [String: Any])
        XCTAssertEqual(Set(models.keys), ["base", "suder"])
        let base = try XCTUnwrap(models["base"] as? [String: Any])
        XCTAssertEqual(base["step"] as? Int, 20)
        XCTAssertEqual(base["caption_accuracy"] as? Double, 0.5)
        XCTAssertEqual(base["caption_images"] as? Int, 10)
        let geneval = try XCTUnwrap(base["geneval"] as? [String: Any])
        XCTAssertEqual(geneval["images"] as? Int, 24)
        XCTAssertEqual(geneval["correct_per_prompt"] as? [Int], [4, 0, 2, 2, 1, 3])
        let overall = try XCTUnwrap(geneval["overall"] as? Double)
        XCTAssertEqual(overall, (1.0 + 0 + 0.5 + 0.5 + 0.25 + 0.75) / 6, accuracy: 1e-12)
        let counting = try XCTUnwrap((geneval["categories"] as? [String: Any])?["counting"] as? [String: Any])
        XCTAssertEqual(counting["score"] as? Double, 0.5)
        XCTAssertEqual(counting["correct"] as? Int, 2)
        XCTAssertEqual(counting["images"] as? Int, 4)
        XCTAssertEqual(counting["prompts"] as? Int, 1)
        let pope = try XCTUnwrap((base["pope"] as? [String: Any])?["adversarial"] as? [String: Any])
        for key in ["probes", "accuracy", "precision", "recall", "f1", "yes_ratio"] { XCTAssertNotNil(pope[key], key) }
        XCTAssertEqual(pope["yes_ratio"] as? Double, 0.75)

        let delta = try XCTUnwrap(object["delta"] as? [String: Any])
        XCTAssertTrue((delta["method"] as? String)?.contains("within each category") == true)
        XCTAssertEqual(delta["resamples"] as? Int, 2000)
        let overallDelta = try XCTUnwrap(delta["geneval_overall"] as? [String: Any])
        XCTAssertEqual(try XCTUnwrap(overallDelta["delta"] as? Double), 3.0 / 24, accuracy: 1e-12)
        XCTAssertNotNil(overallDelta["low"])
        XCTAssertNotNil(overallDelta["high"])
        XCTAssertEqual(((delta["geneval_categories"] as? [String: Any])?["two_object"] as? [String: Any])?["delta"] as? Double, 0.25)
        XCTAssertNotNil((delta["pope_f1"] as? [String: Any])?["random"])

        let decoded = try EvalSummary.decode(data)
        XCTAssertEqual(decoded.models, summary.models)
        XCTAssertEqual(decoded.delta, summary.delta)
    }

    /// One record per category.
    let fabricatedRecords = Category.allCases.map {
        MetadataRecord(tag: $0, include: [ObjectRequirement(shape: .circle, count: 1)], prompt: "a photo of a circle")
    }

    /// One record per category, four images each; understanding numbers fixed.
    func fabricatedSummary(baseCorrect: [Int], suderCorrect: [Int], step: Int, seed: Int = 7) -> EvalSummary {
        let records = fabricatedRecords
        var config = try! ResolvedConfig.resolve(file: nil, overrides: ["run.seed=\(seed)"])
        config = try! config.setting("eval.images_per_prompt", "4")
        var summary = EvalSummary(settings: EvalSummarySettings(EvalSettings(config), promptLines: Array(records.indices)))
        func evaluation(_ correct: [Int], captions: Double) -> ModelEvaluation {
            let truth = [true, true, false, false], predicted = [true, true, true, false]
            let pope = Dictionary(uniqueKeysWithValues: PopeSplit.allCases.map { ($0, PopeMetrics(truth: truth, predicted: predicted)) })
            let header = CheckpointHeader(stage: "pretrain", step: step, configYAML: "", tensors: [])
            return ModelEvaluation(
                checkpoint: header, directory: URL(fileURLWithPath: "/run/pretrain"),
                genEval: genEvalSummary(correct, records: records, imagesPerPrompt: 4), correctPerRecord: correct, records: records,
                understanding: UnderstandingScores(UnderstandingRun(captionAccuracy: captions, captionCount: 10, pope: pope)), seconds: 1)
        }
        let base = evaluation(baseCorrect, captions: 0.5), suder = evaluation(suderCorrect, captions: 0.6)
        summary.models["base"] = base
        summary.models["suder"] = suder
        summary.delta = EvalComparison(
            base: base, suder: suder,
            bootstrap: pairedBootstrap(
                categories: records.map(\.tag), prompts: records.map(\.prompt), base: baseCorrect, suder: suderCorrect, imagesPerPrompt: 4))
        return summary
    }

    // MARK: - Report

    /// A run directory with a config, pretrain and SUDER metrics written by hand, and an eval summary.
    func fabricatedRun(
        _ name: String, seed: Int, suderCorrect: [Int], withSuderMetrics: Bool = true, baseWeights: String? = nil, reward: String = "self"
    ) throws -> URL {
        let run = directory.appendingPathComponent(name)
        for stage in ["pretrain", "suder", "eval"] {
            try FileManager.default.createDirectory(at: run.appendingPathComponent(stage), withIntermediateDirectories: true)
        }
        let config = try ResolvedConfig.resolve(
            file: nil, overrides: ["run.seed=\(seed)", "model.d_model=32", "runtime.threads=\(seed)", "suder.reward=\(reward)"])
        try config.yaml().write(to: run.appendingPathComponent("config.yaml"), atomically: true, encoding: .utf8)
        try """
        {"step": 10, "loss/generation": 5.5, "lr": 0.001}
        {"step": 20, "loss/generation": 4.25, "lr": 0.0005, "tokens_per_s": 13005.4}
        {"step": 20, "eval/geneval_overall": 0.125, "eval/caption_accuracy": 0.5}

        """.write(to: run.appendingPathComponent("pretrain/metrics.jsonl"), atomically: true, encoding: .utf8)
        try "finished at step 20\n".write(to: run.appendingPathComponent("pretrain/DONE"), atomically: true, encoding: .utf8)
        if withSuderMetrics {
            try """
            {"round": 1, "loss": 0.6931, "rewards/margins": 0.01, "rewards/accuracies": 0.5, "reward_fidelity/generation": 0.625}
            {"round": 2, "loss": 0.65, "rewards/margins": 0.2, "rewards/accuracies": 0.75, "grad_norm/generation": 1.5}

            """.write(to: run.appendingPathComponent("suder/metrics.jsonl"), atomically: true, encoding: .utf8)
        }
        var summary = fabricatedSummary(baseCorrect: [2, 2, 2, 2, 2, 2], suderCorrect: suderCorrect, step: 20, seed: seed)
        summary.models["base"]!.weightsChecksum = baseWeights
        summary.rewardSource = reward
        try summary.encoded().write(to: run.appendingPathComponent("eval/summary.json"))
        return run
    }

    /// Two bases with two SUDER seeds each, a random-pair control and one run evaluated on test
    /// twice: base means +0.125 and +0.25, a t-interval over the two base means (t = 12.706 with one
    /// degree of freedom), the control in its own labelled rows, and the test count.
    func testReportAveragesOverBasesAndLabelsControlsAndCountsTestEvaluations() throws {
        let a1 = try fabricatedRun("a-seed1", seed: 1, suderCorrect: [3, 3, 3, 3, 3, 3], baseWeights: "aaaa")
        let a2 = try fabricatedRun("a-seed2", seed: 2, suderCorrect: [2, 2, 2, 2, 2, 2], baseWeights: "aaaa")
        let b1 = try fabricatedRun("b-seed1", seed: 1, suderCorrect: [3, 3, 3, 3, 3, 3], baseWeights: "bbbb")
        let b2 = try fabricatedRun("b-seed2", seed: 2, suderCorrect: [3, 3, 3, 3, 3, 3], baseWeights: "bbbb")
        let random = try fabricatedRun("a-random", seed: 1, suderCorrect: [2, 2, 2, 3, 2, 2], baseWeights: "aaaa", reward: "random")
        let randomB = try fabricatedRun("b-random", seed: 1, suderCorrect: [2, 2, 2, 2, 2, 2], baseWeights: "bbbb", reward: "random")
        let testDirectory = a1.appendingPathComponent("eval/test")
        try FileManager.default.createDirectory(at: testDirectory, withIntermediateDirectories: true)
        var test = fabricatedSummary(baseCorrect: [2, 2, 2, 2, 2, 2], suderCorrect: [2, 3, 2, 2, 2, 2], step: 20)
        test.split = "test"
        try test.encoded().write(to: testDirectory.appendingPathComponent("summary.json"))
        try "{\"split\": \"test\"}\n{\"split\": \"test\"}\n".write(
            to: a1.appendingPathComponent("eval/test-evaluations.jsonl"), atomically: true, encoding: .utf8)

        let report = try makeReport(runDirectories: [a1, a2, b1, b2, random, randomB])
        XCTAssertTrue(report.contains("## Across bases (dev split)"), report)
        XCTAssertTrue(report.contains("| base 1 | weights xxh64 aaaa | a-seed1, a-seed2, a-random |"), report)
        let half = 12.706 * 0.0625  // sd of (0.125, 0.25) over sqrt(2)
        XCTAssertTrue(
            report.contains(
                "| geneval/overall | 2 | 4 | +0.1875 | " + String(format: "[%+.4f, %+.4f]", 0.1875 - half, 0.1875 + half)
                    + " | base 1 +0.1250, base 2 +0.2500 |"), report)
        XCTAssertTrue(report.contains("### reward: random pairs (control)"), report)
        XCTAssertTrue(report.contains("| a-random (random) base |"), report)
        // The control's geneval/overall: base 1 gains one image of four in one category of six.
        XCTAssertTrue(report.contains("| geneval/overall | 2 | 2 | +0.0208 |"), report)
        XCTAssertTrue(report.contains("reward random pairs (control); test split evaluated 0 times"), report)
        XCTAssertTrue(report.contains("## Evaluation (test split)"), report)
        XCTAssertTrue(report.contains("| a-seed1 | 2 |"), report)
        XCTAssertTrue(report.contains("a-seed1: 6 GenEval-mini prompts"), report)
        XCTAssertTrue(report.contains("a-seed2: missing (no \(a2.path)/eval/test/summary.json)"), report)
    }

    func testReportOfOneRunShowsEveryPartAndSaysWhatIsMissing() throws {
        let run = try fabricatedRun("seed1", seed: 1, suderCorrect: [3, 3, 3, 3, 3, 3], withSuderMetrics: false)
        let report = try makeReport(runDirectories: [run])
        XCTAssertTrue(report.contains("| seed1 | \(run.path) | missing | done | unfinished | unfinished |"), report)
        // Settings against the defaults; runtime keys never show.
        XCTAssertTrue(report.contains("| model.d_model | 32 | 192 |"), report)
        XCTAssertTrue(report.contains("| run.seed | 1 | 1234 |"), report)
        XCTAssertFalse(report.contains("runtime.threads"), report)
        // The last metrics line and the last eval line of pretraining.
        XCTAssertTrue(report.contains("| loss/generation | 4.25 |"), report)
        XCTAssertTrue(report.contains("| lr | 0.0005 |"), report)
        XCTAssertTrue(report.contains("| tokens_per_s | 13005 |"), report)
        XCTAssertTrue(report.contains("| eval/geneval_overall | 0.125 |"), report)
        XCTAssertTrue(report.contains("seed1: missing (no \(run.path)/suder/metrics.jsonl)"), report)
        // Every category gains one image of four, with a degenerate interval.
        XCTAssertTrue(report.contains("| geneval/overall | 0.5000 | 0.7500 | +0.2500 [+0.2500, +0.2500] |"), report)
        XCTAssertTrue(report.contains("| caption_accuracy | 0.5000 | 0.6000 | +0.1000 |"), report)
        XCTAssertFalse(report.contains("## Across runs"), report)
    }

    func testReportOfSeveralRunsComparesConfigsAndSpreadsDeltas() throws {
        let a = try fabricatedRun("seed1", seed: 1, suderCorrect: [3, 3, 3, 3, 3, 3])
        let b = try fabricatedRun("seed2", seed: 2, suderCorrect: [2, 2, 2, 2, 2, 2])
        let c = directory.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: c, withIntermediateDirectories: true)
        let report = try makeReport(runDirectories: [a, b, c])
        XCTAssertTrue(report.contains("| run.seed | 1 | 2 |"), report)
        XCTAssertTrue(report.contains("| model.d_model | 32 | 192 |"), report)
        XCTAssertTrue(report.contains("empty: missing (no \(c.path)/config.yaml)"), report)
        XCTAssertTrue(report.contains("empty: missing (no \(c.path)/eval/summary.json)"), report)
        // The SUDER table takes whatever keys the lines have; absent cells are dashes.
        XCTAssertTrue(report.contains("| round | grad_norm/generation | loss | reward_fidelity/generation | rewards/accuracies | rewards/margins |"), report)
        XCTAssertTrue(report.contains("| 1 | - | 0.6931 | 0.625 | 0.5 | 0.01 |"), report)
        XCTAssertTrue(report.contains("| 2 | 1.5 | 0.65 | - | 0.75 | 0.2 |"), report)
        // Deltas +0.25 and 0: mean 0.125, sample std 0.1768; one run's interval excludes 0.
        XCTAssertTrue(report.contains("| geneval/overall | 2 | +0.1250 | 0.1768 | +0.0000 | +0.2500 | 1 |"), report)
        XCTAssertTrue(report.contains("| caption_accuracy | 2 | +0.1000 | 0.0000 |"), report)
    }

    /// Ablation rows against a reference row from the same base: paired over the same prompts, and
    /// runs from another base or with other eval sampling named, not compared.
    func testReportComparesRunsOfOneBaseAgainstTheFirstRun() throws {
        let reference = try fabricatedRun("objective-dpo", seed: 1, suderCorrect: [3, 3, 3, 3, 3, 3], baseWeights: "aaaa")
        let row = try fabricatedRun("direction-generation", seed: 1, suderCorrect: [2, 2, 2, 2, 3, 2], baseWeights: "aaaa")
        let otherBase = try fabricatedRun("other-base", seed: 1, suderCorrect: [2, 2, 2, 2, 2, 2], baseWeights: "bbbb")
        let otherSeed = try fabricatedRun("other-seed", seed: 2, suderCorrect: [2, 2, 2, 2, 2, 2], baseWeights: "aaaa")
        let runs = [reference, row, otherBase, otherSeed]
        XCTAssertTrue(try makeReport(runDirectories: runs).contains("## Against objective-dpo (dev split)\n\nMissing: the prompts' categories"))

        let metadata = reference.appendingPathComponent("data").appendingPathComponent(DatasetFile.evalMetadata(.dev))
        try FileManager.default.createDirectory(at: metadata.deletingLastPathComponent(), withIntermediateDirectories: true)
        try writeMetadataFile(fabricatedRecords, to: metadata)
        let report = try makeReport(runDirectories: runs)
        XCTAssertTrue(
            report.contains("Not compared: other-base (another base model), other-seed (other eval prompts or sampling settings)."), report)
        XCTAssertTrue(report.contains("| metric | direction-generation - objective-dpo |"), report)
        // One image of four fewer in five categories of six, one line each: degenerate intervals.
        let category = Category.allCases[4].rawValue
        XCTAssertTrue(report.contains("| geneval/\(category) | +0.0000 [+0.0000, +0.0000] |"), report)
        XCTAssertTrue(report.contains("| geneval/overall | -0.2083 [-0.2083, -0.2083] |"), report)
        XCTAssertTrue(report.contains("| caption_accuracy | +0.0000 |"), report)
        XCTAssertFalse(report.contains("pope/random/accuracy | +"), report)
    }

    /// The first and last rounds' means of the likelihood keys, and a dash where a run lacks one.
    func testRoundsInBriefShowTheFirstAndLastRoundsMeans() throws {
        let falling = try fabricatedRun("simpo", seed: 1, suderCorrect: [2, 2, 2, 2, 2, 2])
        try """
        {"round": 1, "generation/logps/chosen": -0.5, "generation/rewards/margins": 0.1}
        {"round": 2, "generation/logps/chosen": -1.0, "generation/rewards/margins": 0.2}
        {"round": 3, "generation/logps/chosen": -1.5, "generation/rewards/margins": 0.4}

        """.write(to: falling.appendingPathComponent("suder/metrics.jsonl"), atomically: true, encoding: .utf8)
        let other = try fabricatedRun("dpo", seed: 1, suderCorrect: [2, 2, 2, 2, 2, 2])
        let runs = [falling, other].map(RunRecord.init)
        let brief = roundsInBriefSection(runs, labels: ["simpo", "dpo"], window: 2)
        XCTAssertTrue(brief.contains("| metric | simpo | dpo |"), brief)
        XCTAssertTrue(brief.contains("| generation/logps/chosen | -0.750 -> -1.250 | - |"), brief)
        XCTAssertTrue(brief.contains("| generation/rewards/margins | 0.150 -> 0.300 | - |"), brief)
        XCTAssertFalse(brief.contains("understanding/"), brief)
        XCTAssertEqual(roundsInBriefSection([other].map(RunRecord.init), labels: ["dpo"]), "")
    }

    func testHTMLReportOverlaysRunsInWellFormedChartsAndSaysWhatIsMissing() throws {
        let a = try fabricatedRun("seed1", seed: 1, suderCorrect: [3, 3, 3, 3, 3, 3])
        let b = try fabricatedRun("seed2", seed: 2, suderCorrect: [2, 2, 2, 2, 2, 2], withSuderMetrics: false)
        let html = try makeHTMLReport(runDirectories: [a, b])
        XCTAssertTrue(html.hasPrefix("<!DOCTYPE html>"))
        XCTAssertFalse(html.contains("<script"))
        // Both runs in one chart, each series named by run and key.
        XCTAssertTrue(html.contains(">seed1: loss/generation</text>") && html.contains(">seed2: loss/generation</text>"), html)
        XCTAssertTrue(html.contains("not logged: Validation loss"), html)
        XCTAssertTrue(html.contains(">seed1 base</text>") && html.contains(">seed2 suder</text>"), html)
        // The deltas carry the summary's paired intervals (seed1's is degenerate, seed2's is 0).
        XCTAssertTrue(html.contains("GenEval-mini: SUDER - base"))
        XCTAssertTrue(html.contains("seed1: no eval metadata in its data directory"), html)
        let charts = html.components(separatedBy: "<svg ").dropFirst().map { "<svg " + $0.components(separatedBy: "</svg>")[0] + "</svg>" }
        // Pretraining: loss, learning rate, quick evaluations; evaluation: scores, deltas, understanding.
        XCTAssertEqual(charts.count, 3 + 3)
        for chart in charts { XCTAssertTrue(XMLParser(data: Data(chart.utf8)).parse(), chart) }
        XCTAssertThrowsError(try makeHTMLReport(runDirectories: [directory.appendingPathComponent("nope")]))
    }

    func testReportRefusesAMissingRunDirectory() {
        XCTAssertThrowsError(try makeReport(runDirectories: [directory.appendingPathComponent("nope")]))
    }

    // MARK: - The stage end to end (one process)

    /// A run directory with a small world and the same random model as its finished "pretrained"
    /// and "SUDER" checkpoints: the paired seeds then give identical samples and a zero delta.
    private func identicalModelsRun() throws -> (job: JobContext, dataDirectory: URL) {
        let run = directory.appendingPathComponent("run")
        var world = WorldConfig()
        world.trainPairs = 60; world.trainCaptions = 30; world.trainProbes = 30; world.trainImperfect = 30
        world.unpairedPrompts = 6; world.unpairedImages = 6
        world.evalPromptsPerCategory = 3; world.evalImages = 8
        world.kmeansImages = 120; world.kmeansIterations = 2
        let dataDirectory = run.appendingPathComponent("data")
        try generateDataset(config: world, outDir: dataDirectory) { _ in }
        let comm = SingleProcessCommunicator()
        try CheckpointStore(directory: dataDirectory, comm: comm).markDone(step: 0)

        let config = try ResolvedConfig.resolve(
            file: nil,
            overrides: [
                "model.d_model=16", "model.n_layers=1", "model.n_heads=2", "eval.images_per_prompt=2", "eval.max_prompts=0",
                "runtime.progress=off", "runtime.threads=1", "model.micro_batch=8",
            ])
        let job = JobContext(comm: comm, config: config, runDir: run)
        let dataset = try DatasetReader(directory: dataDirectory)
        let model = Transformer(config: ModelSettings(config).modelConfig(vocabulary: dataset.vocabulary), seed: 3, batchCapacity: 8)
        let optimizer = AdamW(parameterTable: model.parameterTable, parameterCount: model.parameterCount, weightDecay: 0)
        for (stage, step) in [(StageName.pretrain, 20), (.suder, 2)] {
            let store = CheckpointStore(directory: job.stageDirectory(stage.rawValue), comm: comm)
            _ = try store.save(
                makeCheckpoint(stage: stage, step: step, job: job, dataIdentity: try dataIdentity(job), model: model, optimizer: optimizer))
            try store.markDone(step: step)
        }
        return (job, dataDirectory)
    }

    func testEvalStageOfIdenticalModelsGivesZeroDeltasAndRescorableFolders() throws {
        let (job, dataDirectory) = try identicalModelsRun()
        try runEvalStage(job)

        let evalDirectory = job.stageDirectory("eval")
        XCTAssertTrue(try job.stageFinished("eval"))
        let summary = try EvalSummary.decode(try Data(contentsOf: evalDirectory.appendingPathComponent("summary.json")))
        let base = try XCTUnwrap(summary.models["base"]), suder = try XCTUnwrap(summary.models["suder"])
        XCTAssertEqual(summary.settings.promptLines, Array(0..<18))
        XCTAssertEqual(base.geneval.images, 36)
        XCTAssertEqual(base.step, 20)
        XCTAssertEqual(suder.step, 2)
        XCTAssertEqual(base.geneval, suder.geneval)
        XCTAssertEqual(base.captionImages, 8)
        XCTAssertEqual(base.pope.count, 3)
        XCTAssertEqual(summary.delta?.genevalOverall, DeltaInterval(delta: 0, low: 0, high: 0))

        // Rescoring the written folder against the eval metadata gives the summary's numbers.
        let metadata = try readMetadataFile(dataDirectory.appendingPathComponent(DatasetFile.evalMetadata))
        for name in ["base", "suder"] {
            let rescored = try scoreGenEvalFolder(images: evalDirectory.appendingPathComponent(name), metadata: metadata)
            XCTAssertEqual(rescored.imageCount, 36)
            XCTAssertEqual(rescored.overall, summary.models[name]!.geneval.overall, accuracy: 1e-12)
            for category in Category.allCases {
                XCTAssertEqual(rescored.correctImages[category] ?? 0, summary.models[name]!.geneval.categories[category.rawValue]?.correct)
            }
            let sheet = try readPNG(evalDirectory.appendingPathComponent("\(name)_samples.png"))
            XCTAssertGreaterThan(sheet.width, 32)
        }

        // The test split after dev finished: the DONE marker does not stop it, its results go to
        // eval/test/, dev's stay as they were, and each evaluation adds a line to the log.
        let devSummary = try Data(contentsOf: evalDirectory.appendingPathComponent("summary.json"))
        try runEvalCommand(job: job, split: .test)
        try runEvalCommand(job: job, split: .test)
        let test = try EvalSummary.decode(try Data(contentsOf: evalDirectory.appendingPathComponent("test/summary.json")))
        XCTAssertEqual(test.split, "test")
        XCTAssertEqual(try Data(contentsOf: evalDirectory.appendingPathComponent("summary.json")), devSummary)
        let testMetadata = try readMetadataFile(dataDirectory.appendingPathComponent(DatasetFile.evalMetadata(.test)))
        XCTAssertEqual(test.models["base"]?.geneval.prompts, testMetadata.count)
        XCTAssertNotEqual(testMetadata.map(\.prompt), metadata.map(\.prompt), "test scores its own prompts")
        let rescoredTest = try scoreGenEvalFolder(images: evalDirectory.appendingPathComponent("test/base"), metadata: testMetadata)
        XCTAssertEqual(rescoredTest.overall, test.models["base"]!.geneval.overall, accuracy: 1e-12)
        let log = try String(contentsOf: evalDirectory.appendingPathComponent("test-evaluations.jsonl"), encoding: .utf8)
        let entries = try log.split(separator: "\n").map { try XCTUnwrap(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        XCTAssertEqual(entries.count, 2)
        XCTAssertEqual(entries[0]["config_hash"] as? String, resultConfigHash(job.config))
        XCTAssertEqual(try XCTUnwrap(entries[0]["config_hash"] as? String).count, 16)
        XCTAssertNotNil(entries[1]["time"] as? String)
        let checkpoints = try XCTUnwrap(entries[1]["checkpoints"] as? [String: String])
        XCTAssertTrue(checkpoints["base"]?.contains("pretrain/step-000000000020 (step 20, weights xxh64 ") == true, "\(checkpoints)")
        XCTAssertTrue(checkpoints["suder"]?.contains("suder/step-000000000002") == true, "\(checkpoints)")
        // A runtime setting does not change the hash; a result setting does.
        XCTAssertEqual(resultConfigHash(try job.config.setting("runtime.threads", "2")), resultConfigHash(job.config))
        XCTAssertNotEqual(resultConfigHash(try job.config.setting("eval.temperature", "0.5")), resultConfigHash(job.config))

        let report = try makeReport(runDirectories: [job.runDir])
        XCTAssertTrue(
            report.contains(
                "| geneval/overall | \(String(format: "%.4f", base.geneval.overall)) | \(String(format: "%.4f", base.geneval.overall)) | +0.0000 [+0.0000, +0.0000] |"
            ), report)
        XCTAssertTrue(report.contains("## Evaluation (test split)"), report)
        XCTAssertTrue(report.contains("| run | 2 |"), report)
    }

    func testAnEvalBeforeTheSuderStageIsNotDoneAndItsRerunAddsTheSuderModel() throws {
        let (job, _) = try identicalModelsRun()
        let suderDone = job.stageDirectory("suder").appendingPathComponent(CheckpointStore.doneFileName)
        try FileManager.default.removeItem(at: suderDone)
        try runStage(.eval, job: job)
        let evalDirectory = job.stageDirectory("eval")
        let first = try EvalSummary.decode(try Data(contentsOf: evalDirectory.appendingPathComponent("summary.json")))
        XCTAssertEqual(Set(first.models.keys), ["base"])
        XCTAssertFalse(try job.stageFinished("eval"), "an eval without the SUDER model must not mark the stage done")

        try CheckpointStore(directory: job.stageDirectory("suder"), comm: job.comm).markDone(step: 2)
        try runStage(.eval, job: job)
        let second = try EvalSummary.decode(try Data(contentsOf: evalDirectory.appendingPathComponent("summary.json")))
        XCTAssertEqual(Set(second.models.keys), ["base", "suder"])
        XCTAssertTrue(try job.stageFinished("eval"))
        // The base model's kept parts were used, not evaluated again.
        XCTAssertEqual(second.models["base"]?.seconds, first.models["base"]?.seconds)
        XCTAssertNotNil(second.delta)
    }

    func testADamagedSuderModelStopsTheEvalBeforeAnySampling() throws {
        let (job, _) = try identicalModelsRun()
        let weights = job.stageDirectory("suder").appendingPathComponent("step-000000000002/weights.zst")
        var bytes = try Data(contentsOf: weights)
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: weights)
        XCTAssertThrowsError(try runEvalStage(job)) { error in
            XCTAssertTrue("\(error)".contains("the stage's final model is damaged or missing"), "\(error)")
        }
        let baseSamples = job.stageDirectory("eval").appendingPathComponent("base")
        XCTAssertFalse(FileManager.default.fileExists(atPath: baseSamples.path), "the base model was sampled first")
    }

    func testAModelPathThatIsAFileOrMissingIsNamed() throws {
        let (job, _) = try identicalModelsRun()
        let model = Transformer(config: ModelSettings(job.config).modelConfig(vocabulary: try openDataset(job).vocabulary), seed: 1, batchCapacity: 8)
        let file = job.runDir.appendingPathComponent("config-copy.yaml")
        try Data("x".utf8).write(to: file)
        for (url, problem) in [(file, "is a file"), (job.runDir.appendingPathComponent("nothing"), "does not exist")] {
            XCTAssertThrowsError(try loadWeights(from: url, into: model, job: job)) { error in
                XCTAssertEqual("\(error)", "\(url.path) \(problem): give a stage directory (e.g. <run-dir>/pretrain) or one of its step-* checkpoints")
            }
        }
        XCTAssertEqual(try loadWeights(from: job.stageDirectory("pretrain"), into: model, job: job).header.step, 20)
    }

    func testAnEvalFolderThatIsAFileIsRefusedBeforeAnySampling() throws {
        let (job, _) = try identicalModelsRun()
        try Data("not a folder".utf8).write(to: job.stageDirectory("eval"))
        let started = Date()
        XCTAssertThrowsError(try runEvalStage(job)) { error in
            XCTAssertTrue("\(error)".contains("\(job.stageDirectory("eval").path) is a file, not a directory"), "\(error)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 5)
    }

    func testAStoppedEvalContinuesAfterItsKeptPartsOfTheSameCheckpoint() throws {
        let (job, _) = try identicalModelsRun()
        let evalDirectory = job.stageDirectory("eval")
        let parts = EvalParts(directory: evalDirectory.appendingPathComponent(EvalParts.directoryName), comm: job.comm)
        // Kept GenEval-mini marks a fresh evaluation of this random model cannot give (all 18
        // prompts' 2 images correct): the base model's for its checkpoint (stopped before its
        // captions), the SUDER model's for another checkpoint.
        let allCorrect = Array(repeating: 2, count: 18)
        let baseCheckpoint = job.stageDirectory("pretrain").appendingPathComponent("step-000000000020").path
        try parts.write(EvalPart(checkpoint: baseCheckpoint, correctPerRecord: allCorrect, seconds: 5), for: .base)
        try parts.write(EvalPart(checkpoint: "/elsewhere/suder/step-000000000002", correctPerRecord: allCorrect), for: .suder)
        XCTAssertEqual(try parts.read(.base, checkpoint: baseCheckpoint).correctPerRecord, allCorrect)
        XCTAssertNil(try parts.read(.suder, checkpoint: "/other").correctPerRecord)

        try runEvalStage(job)

        let summary = try EvalSummary.decode(try Data(contentsOf: evalDirectory.appendingPathComponent("summary.json")))
        let base = try XCTUnwrap(summary.models["base"]), suder = try XCTUnwrap(summary.models["suder"])
        XCTAssertEqual(base.geneval.correctPerPrompt, allCorrect)
        XCTAssertEqual(base.geneval.overall, 1)
        XCTAssertGreaterThanOrEqual(base.seconds, 5)
        // The captions and POPE were still to do for base: computed now, the same as for the
        // identical SUDER model.
        XCTAssertEqual(base.captionAccuracy, suder.captionAccuracy)
        XCTAssertEqual(base.pope, suder.pope)
        XCTAssertNotEqual(suder.geneval.correctPerPrompt, allCorrect, "a part of another checkpoint was reused")
        XCTAssertFalse(FileManager.default.fileExists(atPath: parts.directory.path), "parts are removed once the summary is written")
    }
}
