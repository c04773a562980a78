import Foundation
import GenEvalMini
import Model
import World
import XCTest

@testable import ClusterRuntime
@testable import SUDERCluster

/// `suder generate` and `suder caption` in one process, on a small world and a random model saved
/// as a checkpoint (the mechanics; the command-line and multi-rank behaviour is in Tests/report/run.sh).
final class ModelCommandTests: XCTestCase {
    var directory: URL!
    var run: URL!
    var job: JobContext!
    var model: Transformer!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("suder-commands-\(UUID().uuidString)")
        run = directory.appendingPathComponent("run")
        let dataDirectory = run.appendingPathComponent("data")
        try generateDataset(config: .smallTestWorld, outDir: dataDirectory) { _ in }
        let comm = SingleProcessCommunicator()
        try CheckpointStore(directory: dataDirectory, comm: comm).markDone(step: 0)
        let config = try ResolvedConfig.resolve(
            file: nil,
            overrides: [
                "model.d_model=16", "model.n_layers=1", "model.n_heads=2", "runtime.progress=off", "runtime.threads=1", "model.micro_batch=8",
            ])
        try writeFileAtomically(Data(config.yaml().utf8), to: run.appendingPathComponent("config.yaml"))
        job = JobContext(comm: comm, config: config, runDir: run)
        let dataset = try DatasetReader(directory: dataDirectory)
        model = Transformer(config: ModelSettings(config).modelConfig(vocabulary: dataset.vocabulary), seed: 3, batchCapacity: 8)
        try savePretrainCheckpoint(step: 5)
    }

    func savePretrainCheckpoint(step: Int) throws {
        let optimizer = AdamW(parameterTable: model.parameterTable, parameterCount: model.parameterCount, weightDecay: 0)
        let store = CheckpointStore(directory: job.stageDirectory("pretrain"), comm: job.comm)
        try store.save(makeCheckpoint(stage: .pretrain, step: step, job: job, dataIdentity: try dataIdentity(job), model: model, optimizer: optimizer))
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func open(_ checkpoint: String = "pretrain", data: URL? = nil) throws -> TrainedModel {
        try openTrainedModel(checkpoint: run.appendingPathComponent(checkpoint), data: data, comm: SingleProcessCommunicator())
    }

    func captionOptions(_ images: [URL], count: Int = 1, temperature: Double = 0, ask: String? = nil) -> CaptionOptions {
        CaptionOptions(
            checkpoint: run.appendingPathComponent("pretrain"), data: nil, images: images, count: count, temperature: temperature,
            seed: nil, ask: ask)
    }

    func testOpensAStageDirectoryOrAStepDirectoryAndSaysWhatIsMissing() throws {
        XCTAssertEqual(try open().checkpoint.header.step, 5)
        XCTAssertEqual(try open("pretrain/step-000000000005").checkpoint.header.step, 5)
        XCTAssertThrowsError(try open("suder")) { XCTAssertTrue("\($0)".contains("not a directory")) }
        XCTAssertThrowsError(try open(data: directory.appendingPathComponent("nowhere"))) {
            XCTAssertTrue("\($0)".contains("vocabulary and codebook"), "\($0)")
        }
        try FileManager.default.removeItem(at: run.appendingPathComponent("data"))
        XCTAssertThrowsError(try open()) { XCTAssertTrue("\($0)".contains("give --data DIR"), "\($0)") }
    }

    /// A finished stage's model is the step its DONE marker records: when that checkpoint is
    /// damaged, readers (generate, caption, eval, `--init`, export) say so rather than use an earlier
    /// model, and leave the directory as it was.
    func testADamagedFinalCheckpointOfAFinishedStageIsAnErrorThatChangesNothing() throws {
        let stage = run.appendingPathComponent("pretrain")
        try savePretrainCheckpoint(step: 6)
        try CheckpointStore(directory: stage, comm: job.comm).markDone(step: 6)
        XCTAssertEqual(try open().checkpoint.header.step, 6)
        try flipByte(in: stage.appendingPathComponent("step-000000000006/weights.zst"), at: 100)
        let before = try FileManager.default.contentsOfDirectory(atPath: stage.path).sorted()
        let out = directory.appendingPathComponent("model.safetensors")
        for (what, read) in [("open", { _ = try self.open() }), ("export", { try exportSafetensors(checkpointDirectory: stage, to: out) })] {
            XCTAssertThrowsError(try read(), what) { error in
                for part in ["step-000000000006", "finished at step 6", "final model", "checksum"] {
                    XCTAssertTrue("\(error)".contains(part), "\(what): '\(part)' missing from: \(error)")
                }
            }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: stage.path).sorted(), before)
        XCTAssertEqual(try String(contentsOf: stage.appendingPathComponent("latest"), encoding: .utf8), "step-000000000006\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
    }

    /// While a stage trains (no DONE marker) readers take its newest valid checkpoint and leave a
    /// damaged newer one in place: moving it aside is the training job's.
    func testAReaderOfAnUnfinishedStageSkipsADamagedCheckpointWithoutMovingIt() throws {
        let stage = run.appendingPathComponent("pretrain")
        try savePretrainCheckpoint(step: 6)
        try flipByte(in: stage.appendingPathComponent("step-000000000006/weights.zst"), at: 100)
        let before = try FileManager.default.contentsOfDirectory(atPath: stage.path).sorted()
        XCTAssertEqual(try open().checkpoint.header.step, 5)
        let exported = try exportSafetensors(checkpointDirectory: stage, to: directory.appendingPathComponent("model.safetensors"))
        XCTAssertEqual(exported.lastPathComponent, "step-000000000005")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: stage.path).sorted(), before)
        XCTAssertEqual(try String(contentsOf: stage.appendingPathComponent("latest"), encoding: .utf8), "step-000000000006\n")
    }

    func testAWordOutsideTheVocabularyIsNamedWithTheVocabularyListed() throws {
        let vocabulary = try open().tasks.vocabulary
        XCTAssertThrowsError(try encodeUserText("a photo of a purple dragon", what: "--prompt", vocabulary: vocabulary)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("'dragon'"), text)
            XCTAssertTrue(text.contains("circle circles square"), text)
        }
        XCTAssertEqual(try encodeUserText("a photo of two red circles", what: "--prompt", vocabulary: vocabulary).count, 6)
    }

    func testGenerateWritesThePNGsAndAnEnlargedGridAndRefusesToOverwrite() throws {
        let opened = try open()
        let out = directory.appendingPathComponent("out")
        let options = GenerateOptions(
            checkpoint: run.appendingPathComponent("pretrain"), data: nil, prompt: "a photo of two red circles",
            metadata: nil, count: 3, seed: 11, guidanceWeight: nil, temperature: nil, out: out, gridScale: 4)
        try generate(options, opened)
        let images = try (0..<3).map { try readPNG(out.appendingPathComponent(String(format: "%04d.png", $0))) }
        XCTAssertTrue(images.allSatisfy { $0.width == 32 && $0.height == 32 })
        let grid = try readPNG(out.appendingPathComponent(generateGridName))
        XCTAssertEqual(grid, enlarged(imageGrid(images, columns: 3), scale: 4))
        XCTAssertEqual(grid.width, (3 * 32 + 4 * 2) * 4)
        // Nearest neighbour: every 4x4 block is one pixel of the small grid.
        XCTAssertEqual(Array(grid.pixels[0..<3]), Array(grid.pixels[(3 * (3 * grid.width + 3))..<(3 * (3 * grid.width + 3) + 3)]))
        // The images are the eval stage's draws for (record 0, k) under the same seed.
        let settings = ImageSampling(opened.job.config, section: "eval")
        let prompt = try opened.tasks.vocabulary.encode("a photo of two red circles")
        let direct = opened.tasks.sampleImages(
            prompts: [prompt, prompt, prompt],
            seeds: (0..<3).map { streamSeed(11, StreamPurpose.evalImage, 0, UInt64($0)) }, settings: settings)
        XCTAssertEqual(try direct.map { try opened.tasks.oracle.decodeImage(tokens: $0) }, images)
        XCTAssertThrowsError(try generate(options, opened)) { XCTAssertTrue("\($0)".contains("already holds"), "\($0)") }
    }

    /// An output that cannot be a directory is refused on rank 0 before any image is sampled; a
    /// missing one is created then, with its parents.
    func testGenerateCreatesItsOutputDirectoryBeforeSamplingOrNamesWhyItCannot() throws {
        let opened = try open()
        let file = directory.appendingPathComponent("file")
        try Data("x".utf8).write(to: file)
        let options = { (out: URL) in
            GenerateOptions(
                checkpoint: self.run.appendingPathComponent("pretrain"), data: nil, prompt: "a photo of two red circles",
                metadata: nil, count: 1, seed: 11, guidanceWeight: nil, temperature: nil, out: out, gridScale: 1)
        }
        let underFile = file.appendingPathComponent("sub")
        XCTAssertThrowsError(try generate(options(underFile), opened)) { error in
            XCTAssertEqual("\(error)", "--out \(underFile.path): \(file.path) is a file, not a directory")
        }
        // Outside the files a test may create: creating it fails as the kernel says (as root too).
        if FileManager.default.fileExists(atPath: "/proc/self") {
            XCTAssertThrowsError(try generate(options(URL(fileURLWithPath: "/proc/suder-out")), opened)) { error in
                XCTAssertTrue("\(error)".hasPrefix("--out /proc/suder-out: cannot "), "\(error)")
            }
        }
        let nested = directory.appendingPathComponent("new/nested")
        try generate(options(nested), opened)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: nested.path).sorted(), ["0000.png", generateGridName])
    }

    func testCaptionOfEvalScenePNGsIsTheEvalStagesCaptionWithSUDERsReward() throws {
        let opened = try open()
        let tasks = opened.tasks
        let evalImages = Array(try opened.dataset.evalImages().prefix(3))
        let files = try evalImages.enumerated().map { i, example -> URL in
            let file = directory.appendingPathComponent("scene\(i).png")
            try writePNG(renderScene(example.scene, canvasSize: 32), to: file)
            return file
        }
        let results = try caption(captionOptions(files, ask: "is there a red circle ?"), opened)
        XCTAssertEqual(results.count, 3)
        // The PNG of a scene tokenizes to the eval set's own tokens, so the caption is the eval
        // stage's greedy caption of that image and the reward is the SUDER stage's.
        let tokens = evalImages.map(\.image)
        let encoder = VQEncoder(codebook: tasks.oracle.codebook)
        XCTAssertEqual(try files.map { tasks.vocabulary.imageTokens(codes: encoder.encode(try readPNG($0))) }, tokens)
        let greedy = tasks.sampleCaptions(images: tokens, seeds: [0, 1, 2], temperature: 0, topK: 0)
        let rewards = tasks.imageGivenText(images: tokens, texts: greedy.map(tasks.captionText)).map(\.mean)
        let probes = try tasks.probeAnswerLogProbabilities(
            images: tokens, questions: tokens.map { _ in try tasks.vocabulary.encode("is there a red circle ?") })
        for i in 0..<3 {
            XCTAssertEqual(results[i].captions.count, 1)
            XCTAssertEqual(results[i].captions[0].text, tasks.vocabulary.describe(tasks.captionText(greedy[i])))
            XCTAssertEqual(results[i].captions[0].selfReward, rewards[i])
            XCTAssertLessThan(rewards[i], 0)
            XCTAssertEqual(results[i].probe?.yes, probes[i].yes)
            XCTAssertEqual(results[i].probe?.no, probes[i].no)
            XCTAssertTrue(results[i].text.contains("self-reward"))
        }
        // Several sampled captions: one line each, reproducible for the seed.
        let sampled = try caption(captionOptions([files[0]], count: 3, temperature: 1), opened)
        XCTAssertEqual(sampled[0].captions.count, 3)
        XCTAssertEqual(try caption(captionOptions([files[0]], count: 3, temperature: 1), opened)[0].captions.map(\.text), sampled[0].captions.map(\.text))
        XCTAssertThrowsError(try caption(captionOptions([files[0]], count: 2, temperature: 0), opened))
    }

    func testBadImageFilesAreClearErrorsNamingTheFileAndTheExpectedImage() throws {
        let opened = try open()
        let wrongSize = directory.appendingPathComponent("big.png")
        try writePNG(RGBImage(width: 64, height: 48, fill: (0, 0, 0)), to: wrongSize)
        let notPNG = directory.appendingPathComponent("notes.png")
        try Data("not an image".utf8).write(to: notPNG)
        let folder = directory.appendingPathComponent("folder.png")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let fifo = directory.appendingPathComponent("pipe.png")
        XCTAssertEqual(mkfifo(fifo.path, 0o600), 0)
        let missing = directory.appendingPathComponent("missing.png")
        let cases: [(URL, String)] = [
            (wrongSize, "is 64x48 pixels"), (notPNG, "not a readable PNG"), (folder, "is a directory"),
            (fifo, "not a regular file"), (missing, "cannot read"),
        ]
        for (file, problem) in cases {
            XCTAssertThrowsError(try caption(captionOptions([file]), opened)) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains(file.path), text)
                XCTAssertTrue(text.contains(problem), text)
                XCTAssertTrue(text.contains("a 32x32 PNG image"), text)
            }
        }
    }
}
