import ClusterRuntime
import Foundation
import GenEvalMini
import Model
import World

/// `suder eval [--split dev|test]`: the dev split through the eval stage (skipped once its DONE
/// marker is written, as every stage), the test split evaluated whenever it is asked for, and each
/// time recorded in `<run-dir>/eval/test-evaluations.jsonl` so a report can say how often it was
/// looked at.
public func runEvalCommand(job: JobContext, split: EvalSplit) throws {
    switch split {
    case .dev: try runStage(.eval, job: job)
    case .test: try runEvalStage(job, split: .test)
    }
}

/// Where an eval split's results go: dev in `<run-dir>/eval/` (the eval stage's own folder, with
/// its DONE marker), test in `<run-dir>/eval/test/`, so neither overwrites the other.
func evalResultsDirectory(_ job: JobContext, split: EvalSplit) -> URL {
    let stage = job.stageDirectory(StageName.eval.rawValue)
    return split == .dev ? stage : stage.appendingPathComponent(split.rawValue, isDirectory: true)
}

/// One line per evaluation of the test split: `<run-dir>/eval/test-evaluations.jsonl`.
let testEvaluationsFileName = "test-evaluations.jsonl"

/// GenEval-mini, caption accuracy and POPE-mini of the base model (pretrain) and, when the SUDER
/// stage finished, of the SUDER model, on one eval split. Both models draw their images with the
/// same seeds, so the comparison is paired; the deltas carry a paired bootstrap interval over
/// prompts. Writes `summary.json`, GenEval-layout sample folders and a sample sheet per model in
/// the split's results folder, and prints a table. Only dev marks the stage done, and only with
/// both models: an eval before the SUDER stage finished keeps the base model's parts, so a rerun
/// after it adds the SUDER model without redoing the base model.
func runEvalStage(_ job: JobContext, split: EvalSplit = .dev) throws {
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
        console.print(
            "eval: no finished suder stage in \(job.stageDirectory(StageName.suder.rawValue).path); evaluating the base model only "
                + "(eval is not marked done: run it again after the suder stage to add the SUDER model)")
    }

    let allRecords = try dataset.evalMetadata(split: split)
    let lines = selectEvalRecords(allRecords.map(\.tag), maxPrompts: settings.maxPrompts)
    let records = lines.map { allRecords[$0] }
    let images = try dataset.evalImages(split: split)
    var probes: [PopeSplit: [ProbeExample]] = [:]
    for pope in PopeSplit.allCases { probes[pope] = try dataset.evalProbes(pope, split: split) }
    let imagesPerPrompt = settings.imagesPerPrompt
    if split == .test {
        console.print(
            "eval: the TEST split; this evaluation is recorded in \(evalResultsDirectory(job, split: .dev).appendingPathComponent(testEvaluationsFileName).path)"
        )
    }
    console.print(
        "eval (\(split.rawValue) split): \(models.map(\.rawValue).joined(separator: " and ")) on \(records.count) of \(allRecords.count) GenEval-mini prompts "
            + "x \(imagesPerPrompt) images, \(images.count) caption images, POPE "
            + PopeSplit.allCases.map { "\($0.rawValue) \(probes[$0]?.count ?? 0)" }.joined(separator: ", ") + " probes, over \(comm.size) rank(s)")

    // Scoring needs no optimizer; the sampler keeps its own KV cache, so the activations only
    // have to hold a scoring micro-batch.
    let model = Transformer(config: modelConfig, seed: 0, batchCapacity: modelSettings.microBatch)
    // Each model's weights are loaded into this one transformer in turn. The first is loaded
    // before its sampling anyway; the others are read once now, so a damaged SUDER model stops
    // the eval before the base model's sampling, not after it.
    for name in models.dropFirst() { _ = try loadWeights(from: job.stageDirectory(name.stage.rawValue), into: model, job: job) }
    let tasks = try UnifiedModelTasks(model: model, dataset: dataset)
    let evalDirectory = evalResultsDirectory(job, split: split)
    // Checked before any sampling, not first when the first part is written.
    try comm.rootDecides {
        if let problem = directoryProblem(evalDirectory, create: true) { throw AllRanksError("eval: \(problem)") }
    }
    var summary = EvalSummary(settings: EvalSummarySettings(settings, promptLines: lines))
    summary.split = split.rawValue
    summary.rewardSource = job.config.string("suder.reward")
    var perRecord: [EvaluatedModel: [Int]] = [:]
    let parts = EvalParts(directory: evalDirectory.appendingPathComponent(EvalParts.directoryName, isDirectory: true), comm: comm)
    var checkpoints: [String: String] = [:]
    for name in models {
        var started = DispatchTime.now().uptimeNanoseconds
        let checkpoint = try loadWeights(from: job.stageDirectory(name.stage.rawValue), into: model, job: job)
        let checkpointPath = job.stageDirectory(name.stage.rawValue).appendingPathComponent(CheckpointStore.directoryName(step: checkpoint.header.step)).path
        // Every rank decodes rank 0's file, so all skip the same parts.
        var part = try parts.read(name, checkpoint: checkpointPath)
        /// Records a finished part on rank 0 (the others only keep the control flow), then stops
        /// here if a stop signal arrived during it.
        func keep(_ update: (inout EvalPart) -> Void, done what: String) throws {
            update(&part)
            part.seconds += elapsedSeconds(since: started)
            started = DispatchTime.now().uptimeNanoseconds
            try parts.write(part, for: name)
            if StopSignals.shouldCheckpointAndStop(comm) {
                console.print("eval: stop requested; \(what) is kept in \(parts.directory.path), a rerun continues after it")
                comm.exitTogether(code: RequeueExitCode.checkpointed.rawValue)
            }
        }
        if part.correctPerRecord == nil {
            let progress = console.progress("eval \(name.rawValue): GenEval-mini", total: records.count, unit: "prompts")
            let genEval = try runGenEval(
                records: records, tasks: tasks, imagesPerPrompt: imagesPerPrompt, settings: settings.imageSampling,
                seed: settings.seed, comm: comm, keepImages: true, progress: progress)
            // Rank 0 holds the gathered results and writes the sample folders.
            try comm.rootDecides {
                guard let genEval else { return }
                do {
                    try writeSampleFolders(
                        genEval, records: records, lines: lines, tasks: tasks,
                        to: evalDirectory.appendingPathComponent(name.rawValue, isDirectory: true),
                        sheet: evalDirectory.appendingPathComponent("\(name.rawValue)_samples.png"))
                } catch {
                    throw AllRanksError("eval \(name.rawValue): \(error)", exitCode: 1)
                }
            }
            try keep({ $0.correctPerRecord = genEval?.correctPerRecord ?? [] }, done: "GenEval-mini of \(name.rawValue)")
        } else {
            console.print("eval \(name.rawValue): GenEval-mini already done (\(parts.directory.path))")
        }
        if part.understanding == nil {
            console.print("eval \(name.rawValue): captions of \(images.count) images and POPE-mini")
            let understanding = try runUnderstandingEval(images: images, probes: probes, tasks: tasks, comm: comm)
            try keep({ $0.understanding = understanding.map(UnderstandingScores.init) }, done: "the captions and POPE-mini of \(name.rawValue)")
        } else {
            console.print("eval \(name.rawValue): captions and POPE-mini already done (\(parts.directory.path))")
        }
        guard comm.isRoot, let correct = part.correctPerRecord, let understanding = part.understanding else { continue }
        let evaluation = ModelEvaluation(
            checkpoint: checkpoint.header, directory: job.stageDirectory(name.stage.rawValue),
            genEval: genEvalSummary(correct, records: records, imagesPerPrompt: imagesPerPrompt),
            correctPerRecord: correct, records: records, understanding: understanding, seconds: part.seconds)
        console.print(
            "eval \(name.rawValue): "
                + String(format: "GenEval-mini %.4f, captions %.4f (%.0f s)", evaluation.geneval.overall, evaluation.captionAccuracy, part.seconds))
        summary.models[name.rawValue] = evaluation
        perRecord[name] = correct
        checkpoints[name.rawValue] = evaluation.checkpointIdentity
    }

    try comm.rootDecides {
        if let base = perRecord[.base], let suder = perRecord[.suder] {
            summary.delta = EvalComparison(
                base: summary.models[EvaluatedModel.base.rawValue]!, suder: summary.models[EvaluatedModel.suder.rawValue]!,
                bootstrap: pairedBootstrap(
                    categories: records.map(\.tag), prompts: records.map(\.prompt), base: base, suder: suder,
                    imagesPerPrompt: imagesPerPrompt))
        }
        defer { console.print(summary.table) }
        do {
            try writeFileAtomically(try summary.encoded(), to: evalDirectory.appendingPathComponent(EvalSummary.fileName))
        } catch {
            throw AllRanksError("eval: cannot write the summary: \(error)", exitCode: 1)
        }
        if split == .test {
            try recordTestEvaluation(job, checkpoints: checkpoints, prompts: records.count)
        }
    }
    if models.contains(.suder) {
        if split == .dev { try CheckpointStore(directory: evalDirectory, comm: comm).markDone(step: 0) }
        try parts.remove()
    }
    console.print(
        "eval: summary in \(evalDirectory.appendingPathComponent(EvalSummary.fileName).path); "
            + "rescore with `suder eval geneval --metadata \(job.stageDirectory(StageName.data.rawValue).appendingPathComponent(DatasetFile.evalMetadata(split)).path) "
            + "--images \(evalDirectory.appendingPathComponent(EvaluatedModel.base.rawValue).path)`")
}

/// Rank 0: appends this test evaluation (time, config hash, the checkpoints evaluated) to
/// `<run-dir>/eval/test-evaluations.jsonl`, rewriting the file atomically so a crash keeps the
/// earlier lines.
func recordTestEvaluation(_ job: JobContext, checkpoints: [String: String], prompts: Int) throws {
    let url = evalResultsDirectory(job, split: .dev).appendingPathComponent(testEvaluationsFileName)
    let entry: [String: Any] = [
        "time": ISO8601DateFormatter().string(from: Date()), "split": EvalSplit.test.rawValue,
        "config_hash": resultConfigHash(job.config), "checkpoints": checkpoints, "prompts": prompts,
    ]
    do {
        var data = FileManager.default.contents(atPath: url.path) ?? Data()
        data.append(try JSONSerialization.data(withJSONObject: entry, options: [.sortedKeys, .withoutEscapingSlashes]))
        data.append(0x0A)
        try writeFileAtomically(data, to: url)
    } catch {
        throw AllRanksError("eval: cannot record the test evaluation in \(url.path): \(error)", exitCode: 1)
    }
}

/// xxh64 of the settings that change results (every key but the result-neutral ones such as
/// `runtime.*`), so two test evaluations under one hash evaluated one frozen config.
func resultConfigHash(_ config: ResolvedConfig) -> String {
    let keys = config.values.keys.sorted().filter { key in !configSchema.resultNeutralPrefixes.contains { key.hasPrefix($0) } }
    let text = keys.map { "\($0): \(config.values[$0]!)" }.joined(separator: "\n")
    return String(format: "%016llx", xxhash64(Array(text.utf8)))
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
    /// Distinct prompts behind each category's interval.
    var distinctPrompts: [Category: Int]
}

/// Below this many distinct prompts a category's interval says little about prompt-to-prompt
/// variance (a bootstrap over n units shrinks their variance by (n - 1) / n and can only mix those
/// n); the summary and the report mark such categories.
let fewPromptsForAnInterval = 5

let bootstrapMethod =
    "paired two-stage bootstrap over prompts: within each category, resample its distinct prompts with replacement "
    + "(a prompt with all of its metadata lines and their images), then resample the lines of each drawn prompt "
    + "with replacement, so the interval covers prompt-to-prompt variance and sampling noise; both models use the same "
    + "draws (their images share sampling seeds); each category's mean is recomputed and the overall is the unweighted "
    + "mean of the category means; percentile interval (2.5%, 97.5%). A category with fewer than \(fewPromptsForAnInterval) "
    + "distinct prompts (two_object and counting have 2 per eval split) is marked: its interval mixes those few prompts "
    + "and their lines, and understates how much another set of prompts could differ"
let bootstrapResamples = 2000
let bootstrapSeed: UInt64 = 20_250_607

/// Paired bootstrap of the GenEval-mini deltas. `base[i]` and `suder[i]` are the correct images
/// (of `imagesPerPrompt`) of metadata line i for the two models, `categories[i]` its category and
/// `prompts[i]` its prompt (lines with the same prompt are one unit of the first stage).
func pairedBootstrap(
    categories: [Category], prompts: [String], base: [Int], suder: [Int], imagesPerPrompt: Int,
    resamples: Int = bootstrapResamples, seed: UInt64 = bootstrapSeed
) -> BootstrapResult {
    precondition(
        categories.count == prompts.count && categories.count == base.count && base.count == suder.count, "pairedBootstrap: ragged inputs")
    // Per-line score differences, grouped by category, then by prompt in order of first line.
    let present = Category.allCases.filter { c in categories.contains(c) }
    let groups: [[[Double]]] = present.map { c in
        var order: [String] = [], byPrompt: [String: [Double]] = [:]
        for i in categories.indices where categories[i] == c {
            if byPrompt[prompts[i]] == nil { order.append(prompts[i]) }
            byPrompt[prompts[i], default: []].append(Double(suder[i] - base[i]) / Double(imagesPerPrompt))
        }
        return order.map { byPrompt[$0]! }
    }
    func mean(_ values: [Double]) -> Double { values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count) }
    let observed = groups.map { mean($0.flatMap { $0 }) }
    var overallDraws: [Double] = [], categoryDraws = [[Double]](repeating: [], count: present.count)
    overallDraws.reserveCapacity(resamples)
    var rng = Xoshiro256RNG(seed: seed)
    for _ in 0..<resamples {
        var sum = 0.0
        for (g, promptLines) in groups.enumerated() {
            // Mean over the lines of the drawn prompts, as the observed mean is over lines.
            var total = 0.0, lineCount = 0
            for _ in promptLines.indices {
                let lines = promptLines[Int(rng.next() % UInt64(promptLines.count))]
                for _ in lines.indices { total += lines[Int(rng.next() % UInt64(lines.count))] }
                lineCount += lines.count
            }
            let categoryMean = total / Double(lineCount)
            categoryDraws[g].append(categoryMean)
            sum += categoryMean
        }
        overallDraws.append(sum / Double(max(1, groups.count)))
    }
    func interval(_ delta: Double, _ draws: [Double]) -> DeltaInterval {
        let sorted = draws.sorted()
        return DeltaInterval(delta: delta, low: percentile(sorted, 0.025), high: percentile(sorted, 0.975))
    }
    var byCategory: [Category: DeltaInterval] = [:], distinct: [Category: Int] = [:]
    for (g, category) in present.enumerated() {
        byCategory[category] = interval(observed[g], categoryDraws[g])
        distinct[category] = groups[g].count
    }
    return BootstrapResult(overall: interval(mean(observed), overallDraws), categories: byCategory, distinctPrompts: distinct)
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
    /// The eval split (`dev` or `test`); nil in summaries written before the splits, which were dev.
    var split: String?
    /// `suder.reward` of the run (`self`, `oracle`, `random`, `shuffled`); nil in older summaries.
    var rewardSource: String?
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
            let few = (delta?.distinctPrompts?[key] ?? fewPromptsForAnInterval) < fewPromptsForAnInterval
            row("geneval/" + key + (few ? "*" : ""), base?.geneval.categories[key]?.score, suder?.geneval.categories[key]?.score, delta?.genevalCategories[key])
        }
        row("geneval/overall", base?.geneval.overall, suder?.geneval.overall, delta?.genevalOverall)
        row("caption_accuracy", base?.captionAccuracy, suder?.captionAccuracy, nil)
        for split in PopeSplit.allCases {
            row("pope/\(split.rawValue)/accuracy", base?.pope[split.rawValue]?.accuracy, suder?.pope[split.rawValue]?.accuracy, nil)
            row("pope/\(split.rawValue)/f1", base?.pope[split.rawValue]?.f1, suder?.pope[split.rawValue]?.f1, nil)
            row("pope/\(split.rawValue)/yes_ratio", base?.pope[split.rawValue]?.yesRatio, suder?.pope[split.rawValue]?.yesRatio, nil)
        }
        if lines.contains(where: { $0.hasPrefix("geneval/") && $0.contains("* ") }) {
            lines.append("* fewer than \(fewPromptsForAnInterval) distinct prompts: the interval understates prompt-to-prompt variance")
        }
        lines.insert("eval split: \(split ?? EvalSplit.dev.rawValue)", at: 0)
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
    /// xxh64 of the checkpoint's weights (hex): the same model wherever its directory was copied,
    /// which is how the report finds the runs that share a base. Nil in older summaries.
    var weightsChecksum: String?
    var geneval: GenEvalScores
    var captionAccuracy: Double
    var captionImages: Int
    /// By POPE split.
    var pope: [String: PopeScores]
    var seconds: Double

    init(
        checkpoint: CheckpointHeader, directory: URL, genEval summary: GenEvalSummary, correctPerRecord: [Int],
        records: [MetadataRecord], understanding: UnderstandingScores, seconds: Double
    ) {
        self.checkpoint = directory.appendingPathComponent(CheckpointStore.directoryName(step: checkpoint.step)).path
        step = checkpoint.step
        weightsChecksum = checkpoint.sections.first { $0.name == "weights" }.map { String(format: "%016llx", $0.checksum) }
        var categories: [String: CategoryScore] = [:]
        for category in Category.allCases {
            guard let score = summary.score(category) else { continue }
            categories[category.rawValue] = CategoryScore(
                score: score, correct: summary.correctImages[category] ?? 0,
                images: summary.totalImages[category] ?? 0,
                prompts: records.filter { $0.tag == category }.count)
        }
        geneval = GenEvalScores(
            overall: summary.overall, images: summary.imageCount, prompts: records.count,
            categories: categories, correctPerPrompt: correctPerRecord)
        captionAccuracy = understanding.captionAccuracy
        captionImages = understanding.captionImages
        pope = understanding.pope
        self.seconds = seconds
    }

    /// The checkpoint and its weights, as the test-evaluation log records them.
    var checkpointIdentity: String { checkpoint + " (step \(step), weights xxh64 \(weightsChecksum ?? "unknown"))" }
}

/// suder - base: GenEval-mini with paired bootstrap intervals, understanding as plain differences.
struct EvalComparison: Codable, Equatable {
    var method: String
    var resamples: Int
    var seed: UInt64
    var genevalOverall: DeltaInterval
    var genevalCategories: [String: DeltaInterval]
    /// Distinct prompts per category behind the intervals; nil in summaries written before the
    /// bootstrap resampled prompts.
    var distinctPrompts: [String: Int]?
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
        distinctPrompts = Dictionary(uniqueKeysWithValues: bootstrap.distinctPrompts.map { ($0.key.rawValue, $0.value) })
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
