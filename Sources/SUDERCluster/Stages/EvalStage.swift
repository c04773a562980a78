import ClusterRuntime
import Foundation
import GenEvalMini
import Model
import World

/// `suder eval`: GenEval-mini, caption accuracy and POPE-mini of the base model (pretrain) and,
/// when the SUDER stage finished, of the SUDER model, on the full eval set. Both models draw their
/// images with the same seeds, so the comparison is paired; the deltas carry a paired bootstrap
/// interval over prompts. Writes `<run-dir>/eval/summary.json`, GenEval-layout sample folders and a
/// sample sheet per model, and prints a table.
func runEvalStage(_ job: JobContext) throws {
    let comm = job.comm, console = job.console
    let settings = EvalSettings(job.config), modelSettings = ModelSettings(job.config)
    let dataset = try openDataset(job)
    let modelConfig = modelSettings.modelConfig(vocabulary: dataset.vocabulary)
    try checkModelFitsWorld(modelConfig, job: job)
    guard try job.stageFinished(StageName.pretrain.rawValue) else {
        throw AllRanksError(
            "eval: no finished pretrain stage in \(job.stageDirectory(StageName.pretrain.rawValue).path): "
                + "run `suder pretrain` (or `suder pipeline --until pretrain`) with this --run-dir first")
    }
    var models = [EvaluatedModel.base]
    if try job.stageFinished(StageName.suder.rawValue) {
        models.append(.suder)
    } else {
        console.print("eval: no finished suder stage in \(job.stageDirectory(StageName.suder.rawValue).path); evaluating the base model only")
    }

    let allRecords = try dataset.evalMetadata()
    let lines = selectEvalRecords(allRecords.map(\.tag), maxPrompts: settings.maxPrompts)
    let records = lines.map { allRecords[$0] }
    let images = try dataset.evalImages()
    var probes: [PopeSplit: [ProbeExample]] = [:]
    for split in PopeSplit.allCases { probes[split] = try dataset.evalProbes(split) }
    let imagesPerPrompt = settings.imagesPerPrompt
    console.print(
        "eval: \(models.map(\.rawValue).joined(separator: " and ")) on \(records.count) of \(allRecords.count) GenEval-mini prompts "
            + "x \(imagesPerPrompt) images, \(images.count) caption images, POPE "
            + PopeSplit.allCases.map { "\($0.rawValue) \(probes[$0]?.count ?? 0)" }.joined(separator: ", ") + " probes, over \(comm.size) rank(s)")

    // Scoring needs no optimizer; the sampler keeps its own KV cache, so the activations only
    // have to hold a scoring micro-batch.
    let model = Transformer(config: modelConfig, seed: 0, batchCapacity: modelSettings.microBatch)
    // Each model's weights are loaded into this one transformer in turn.
    let tasks = try UnifiedModelTasks(model: model, dataset: dataset)
    let evalDirectory = job.stageDirectory(StageName.eval.rawValue)
    var summary = EvalSummary(settings: EvalSummarySettings(settings, promptLines: lines))
    var perRecord: [EvaluatedModel: [Int]] = [:]
    for name in models {
        let started = DispatchTime.now().uptimeNanoseconds
        let checkpoint = try loadWeights(from: job.stageDirectory(name.stage.rawValue), into: model, job: job)
        let progress = console.progress("eval \(name.rawValue): GenEval-mini", total: records.count, unit: "prompts")
        let genEval = try runGenEval(
            records: records, tasks: tasks, imagesPerPrompt: imagesPerPrompt, settings: settings.imageSampling,
            seed: settings.seed, comm: comm, keepImages: true, progress: progress)
        console.print("eval \(name.rawValue): captions of \(images.count) images and POPE-mini")
        let understanding = try runUnderstandingEval(images: images, probes: probes, tasks: tasks, comm: comm)
        let seconds = elapsedSeconds(since: started)
        console.print(
            "eval \(name.rawValue): "
                + String(
                    format: "GenEval-mini %.4f, captions %.4f (%.0f s)",
                    genEval?.summary.overall ?? .nan, understanding?.captionAccuracy ?? .nan, seconds))
        // Rank 0 holds the gathered results and writes every file.
        try comm.rootDecides {
            guard let genEval, let understanding else { return }
            do {
                let folder = evalDirectory.appendingPathComponent(name.rawValue, isDirectory: true)
                try writeSampleFolders(
                    genEval, records: records, lines: lines, tasks: tasks, to: folder,
                    sheet: evalDirectory.appendingPathComponent("\(name.rawValue)_samples.png"))
                summary.models[name.rawValue] = ModelEvaluation(
                    checkpoint: checkpoint.header, directory: job.stageDirectory(name.stage.rawValue),
                    genEval: genEval, records: records, understanding: understanding, seconds: seconds)
                perRecord[name] = genEval.correctPerRecord
            } catch {
                throw AllRanksError("eval \(name.rawValue): \(error)", exitCode: 1)
            }
        }
    }

    try comm.rootDecides {
        if let base = perRecord[.base], let suder = perRecord[.suder] {
            summary.delta = EvalComparison(
                base: summary.models[EvaluatedModel.base.rawValue]!, suder: summary.models[EvaluatedModel.suder.rawValue]!,
                bootstrap: pairedBootstrap(
                    categories: records.map(\.tag), base: base, suder: suder,
                    imagesPerPrompt: imagesPerPrompt))
        }
        defer { console.print(summary.table) }
        do {
            try writeFileAtomically(try summary.encoded(), to: evalDirectory.appendingPathComponent(EvalSummary.fileName))
        } catch {
            throw AllRanksError("eval: cannot write the summary: \(error)", exitCode: 1)
        }
    }
    try CheckpointStore(directory: evalDirectory, comm: comm).markDone(step: 0)
    console.print(
        "eval: summary in \(evalDirectory.appendingPathComponent(EvalSummary.fileName).path); "
            + "rescore with `suder eval geneval --metadata \(job.stageDirectory(StageName.data.rawValue).appendingPathComponent(DatasetFile.evalMetadata).path) "
            + "--images \(evalDirectory.appendingPathComponent(EvaluatedModel.base.rawValue).path)`")
}

/// The models the eval stage compares, named as in the summary and the sample folders.
enum EvaluatedModel: String, CaseIterable {
    case base, suder

    /// The stage whose newest checkpoint holds the model.
    var stage: StageName { self == .base ? .pretrain : .suder }
}

/// Line numbers (0-based) of the eval metadata to score: all of them for `maxPrompts` 0, else
/// `maxPrompts` lines taken from the categories in turn, each category in file order, so a
/// small budget still covers every category. Returned in file order.
func selectEvalRecords(_ tags: [Category], maxPrompts: Int) -> [Int] {
    guard maxPrompts > 0, maxPrompts < tags.count else { return Array(tags.indices) }
    var queues = Category.allCases.map { category in tags.indices.filter { tags[$0] == category }[...] }
    var chosen: [Int] = []
    while chosen.count < maxPrompts {
        for c in queues.indices where chosen.count < maxPrompts {
            if let line = queues[c].popFirst() { chosen.append(line) }
        }
    }
    return chosen.sorted()
}

/// Rank 0: the samples in GenEval's folder layout (`<folder>/<metadata line:05d>/samples/<k:04d>.png`),
/// checked by rescoring the folder from disk, and a sheet of the first sample of 48 prompts from
/// all categories (one category a row of 8 for the eval set's per-category blocks).
func writeSampleFolders(
    _ run: GenEvalRun, records: [MetadataRecord], lines: [Int], tasks: UnifiedModelTasks, to folder: URL,
    sheet: URL
) throws {
    // A previous eval of this run may have scored other lines; its folders must not mix in.
    try? FileManager.default.removeItem(at: folder)
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let onSheet = Set(selectEvalRecords(records.map(\.tag), maxPrompts: 48))
    var sheetImages: [RGBImage] = []
    for (i, record) in records.enumerated() {
        let decoded = try run.images[i].map { try tasks.oracle.decodeImage(tokens: $0) }
        try writeGenEvalSamples(record: record, images: decoded, index: lines[i], outDir: folder)
        if onSheet.contains(i), let first = decoded.first { sheetImages.append(first) }
    }
    let rescored = try scoreGenEvalFolder(images: folder, metadata: nil)
    guard rescored == run.summary else {
        throw AllRanksError("rescoring \(folder.path) from its PNG files gives \(rescored.overall), the in-memory score was \(run.summary.overall)")
    }
    if !sheetImages.isEmpty { try writePNG(imageGrid(sheetImages, columns: 8), to: sheet) }
}

// MARK: - Paired bootstrap

/// A difference suder - base with its bootstrap percentile interval.
struct DeltaInterval: Codable, Equatable {
    var delta: Double
    var low: Double
    var high: Double
}

struct BootstrapResult: Equatable {
    var overall: DeltaInterval
    var categories: [Category: DeltaInterval]
}

let bootstrapMethod =
    "paired bootstrap over prompts: resample prompt records with replacement within each category "
    + "(the same records for both models, whose images share sampling seeds), recompute each category's mean and the overall "
    + "as the unweighted mean of the category means; percentile interval (2.5%, 97.5%)"
let bootstrapResamples = 2000
let bootstrapSeed: UInt64 = 20_250_607

/// Paired bootstrap of the GenEval-mini deltas. `base[i]` and `suder[i]` are the correct images
/// (of `imagesPerPrompt`) of record i for the two models, `categories[i]` its category.
func pairedBootstrap(
    categories: [Category], base: [Int], suder: [Int], imagesPerPrompt: Int,
    resamples: Int = bootstrapResamples, seed: UInt64 = bootstrapSeed
) -> BootstrapResult {
    precondition(categories.count == base.count && base.count == suder.count, "pairedBootstrap: ragged inputs")
    // Per-record score differences, grouped by category.
    let present = Category.allCases.filter { c in categories.contains(c) }
    let groups = present.map { c in categories.indices.filter { categories[$0] == c }.map { Double(suder[$0] - base[$0]) / Double(imagesPerPrompt) } }
    func mean(_ values: [Double]) -> Double { values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count) }
    let observed = groups.map(mean)
    var overallDraws: [Double] = [], categoryDraws = [[Double]](repeating: [], count: present.count)
    overallDraws.reserveCapacity(resamples)
    var rng = Xoshiro256RNG(seed: seed)
    for _ in 0..<resamples {
        var sum = 0.0
        for (g, group) in groups.enumerated() {
            var total = 0.0
            for _ in group.indices { total += group[Int(rng.next() % UInt64(group.count))] }
            let categoryMean = total / Double(group.count)
            categoryDraws[g].append(categoryMean)
            sum += categoryMean
        }
        overallDraws.append(sum / Double(max(1, groups.count)))
    }
    func interval(_ delta: Double, _ draws: [Double]) -> DeltaInterval {
        let sorted = draws.sorted()
        return DeltaInterval(delta: delta, low: percentile(sorted, 0.025), high: percentile(sorted, 0.975))
    }
    var byCategory: [Category: DeltaInterval] = [:]
    for (g, category) in present.enumerated() { byCategory[category] = interval(observed[g], categoryDraws[g]) }
    return BootstrapResult(overall: interval(mean(observed), overallDraws), categories: byCategory)
}

/// Linear interpolation between the closest ranks of sorted values.
func percentile(_ sorted: [Double], _ q: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    let position = q * Double(sorted.count - 1)
    let lower = Int(position.rounded(.down)), upper = min(lower + 1, sorted.count - 1)
    return sorted[lower] + (sorted[upper] - sorted[lower]) * (position - Double(lower))
}

// MARK: - Summary file

/// `<run-dir>/eval/summary.json`: what the eval stage measured, read back by `suder report`.
struct EvalSummary: Codable {
    static let fileName = "summary.json"
    static let currentFormat = "suder-eval-summary/1"

    var format = EvalSummary.currentFormat
    var settings: EvalSummarySettings
    /// By model name (`base`, `suder`).
    var models: [String: ModelEvaluation] = [:]
    /// suder - base, when both were evaluated.
    var delta: EvalComparison?

    init(settings: EvalSummarySettings) { self.settings = settings }

    func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        var data = try encoder.encode(self)
        data.append(0x0A)
        return data
    }

    static func decode(_ data: Data) throws -> EvalSummary {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(EvalSummary.self, from: data)
    }

    /// base, suder and delta [95% CI] side by side, one metric a line.
    var table: String {
        let base = models[EvaluatedModel.base.rawValue], suder = models[EvaluatedModel.suder.rawValue]
        var lines = ["metric".padding(toLength: 26, withPad: " ", startingAt: 0) + "    base   suder   delta [95% CI]"]
        func number(_ value: Double?) -> String { value.map { String(format: "%7.4f", $0) } ?? "      -" }
        func row(_ name: String, _ b: Double?, _ s: Double?, _ d: DeltaInterval?) {
            var line = name.padding(toLength: 26, withPad: " ", startingAt: 0) + " " + number(b) + " " + number(s)
            if let d {
                line += String(format: "  %+.4f [%+.4f, %+.4f]", d.delta, d.low, d.high)
            } else if let b, let s {
                line += String(format: "  %+.4f", s - b)
            }
            lines.append(line)
        }
        for category in Category.allCases {
            let key = category.rawValue
            guard base?.geneval.categories[key] != nil || suder?.geneval.categories[key] != nil else { continue }
            row("geneval/" + key, base?.geneval.categories[key]?.score, suder?.geneval.categories[key]?.score, delta?.genevalCategories[key])
        }
        row("geneval/overall", base?.geneval.overall, suder?.geneval.overall, delta?.genevalOverall)
        row("caption_accuracy", base?.captionAccuracy, suder?.captionAccuracy, nil)
        for split in PopeSplit.allCases {
            row("pope/\(split.rawValue)/accuracy", base?.pope[split.rawValue]?.accuracy, suder?.pope[split.rawValue]?.accuracy, nil)
            row("pope/\(split.rawValue)/f1", base?.pope[split.rawValue]?.f1, suder?.pope[split.rawValue]?.f1, nil)
            row("pope/\(split.rawValue)/yes_ratio", base?.pope[split.rawValue]?.yesRatio, suder?.pope[split.rawValue]?.yesRatio, nil)
        }
        return lines.joined(separator: "\n")
    }
}

/// The settings an evaluation ran with, as the summary records them.
struct EvalSummarySettings: Codable {
    var seed: Int
    var imagesPerPrompt: Int
    var temperature: Double
    var topK: Int
    var cfgWeight: Double
    var maxPrompts: Int
    /// Eval metadata lines (0-based) scored, which are also the sample folder names.
    var promptLines: [Int]

    init(_ settings: EvalSettings, promptLines: [Int]) {
        seed = Int(settings.seed)
        imagesPerPrompt = settings.imagesPerPrompt
        temperature = settings.temperature
        topK = settings.imageSampling.topK
        cfgWeight = settings.cfgWeight
        maxPrompts = settings.maxPrompts
        self.promptLines = promptLines
    }
}

struct CategoryScore: Codable, Equatable {
    var score: Double
    var correct: Int
    var images: Int
    var prompts: Int
}

struct GenEvalScores: Codable, Equatable {
    var overall: Double
    var images: Int
    var prompts: Int
    /// By GenEval tag.
    var categories: [String: CategoryScore]
    /// Correct images per scored prompt, in `settings.promptLines` order (for recomputing intervals).
    var correctPerPrompt: [Int]
}

struct PopeScores: Codable, Equatable {
    var probes: Int
    var accuracy: Double
    var precision: Double
    var recall: Double
    var f1: Double
    var yesRatio: Double
}

struct ModelEvaluation: Codable, Equatable {
    var checkpoint: String
    var step: Int
    var geneval: GenEvalScores
    var captionAccuracy: Double
    var captionImages: Int
    /// By POPE split.
    var pope: [String: PopeScores]
    var seconds: Double

    init(
        checkpoint: CheckpointHeader, directory: URL, genEval run: GenEvalRun, records: [MetadataRecord],
        understanding: UnderstandingRun, seconds: Double
    ) {
        self.checkpoint = directory.appendingPathComponent(CheckpointStore.directoryName(step: checkpoint.step)).path
        step = checkpoint.step
        var categories: [String: CategoryScore] = [:]
        for category in Category.allCases {
            guard let score = run.summary.score(category) else { continue }
            categories[category.rawValue] = CategoryScore(
                score: score, correct: run.summary.correctImages[category] ?? 0,
                images: run.summary.totalImages[category] ?? 0,
                prompts: records.filter { $0.tag == category }.count)
        }
        geneval = GenEvalScores(
            overall: run.summary.overall, images: run.summary.imageCount, prompts: records.count,
            categories: categories, correctPerPrompt: run.correctPerRecord)
        captionAccuracy = understanding.captionAccuracy
        captionImages = understanding.captionCount
        var pope: [String: PopeScores] = [:]
        for (split, metrics) in understanding.pope {
            pope[split.rawValue] = PopeScores(
                probes: metrics.count, accuracy: metrics.accuracy, precision: metrics.precision,
                recall: metrics.recall, f1: metrics.f1, yesRatio: metrics.yesRatio)
        }
        self.pope = pope
        self.seconds = seconds
    }
}

/// suder - base: GenEval-mini with paired bootstrap intervals, understanding as plain differences.
struct EvalComparison: Codable, Equatable {
    var method: String
    var resamples: Int
    var seed: UInt64
    var genevalOverall: DeltaInterval
    var genevalCategories: [String: DeltaInterval]
    var captionAccuracy: Double
    /// F1 difference per POPE split.
    var popeF1: [String: Double]
    var popeAccuracy: [String: Double]

    init(base: ModelEvaluation, suder: ModelEvaluation, bootstrap: BootstrapResult) {
        method = bootstrapMethod
        resamples = bootstrapResamples
        seed = bootstrapSeed
        genevalOverall = bootstrap.overall
        genevalCategories = Dictionary(uniqueKeysWithValues: bootstrap.categories.map { ($0.key.rawValue, $0.value) })
        captionAccuracy = suder.captionAccuracy - base.captionAccuracy
        var f1: [String: Double] = [:], accuracy: [String: Double] = [:]
        for (split, scores) in suder.pope {
            guard let before = base.pope[split] else { continue }
            f1[split] = scores.f1 - before.f1
            accuracy[split] = scores.accuracy - before.accuracy
        }
        popeF1 = f1
        popeAccuracy = accuracy
    }
}
