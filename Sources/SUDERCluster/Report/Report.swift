import ClusterRuntime
import Foundation
import World

/// `suder report --run-dir DIR [--run-dir DIR ...] [--out FILE] [--html FILE] [--force]`: Markdown
/// from what the stages wrote (config.yaml, metrics.jsonl, eval/summary.json for dev,
/// eval/test/summary.json and eval/test-evaluations.jsonl for test), to standard output unless
/// `out` or `html` is given. Reads files only, so it needs no MPI. Anything missing is reported as
/// missing; nothing is recomputed or guessed. Both destinations are checked before any run is read
/// (`checkOutputFile`): an earlier report is replaced, anything else only with `force`.
public func runReportCommand(runDirectories: [URL], out: URL?, html: URL? = nil, force: Bool = false) throws {
    if let html, html.standardizedFileURL == out?.standardizedFileURL { throw AllRanksError("--out and --html name the same file \(html.path)") }
    if let out { try checkOutputFile(out, option: "--out", kind: markdownReportKind, force: force) }
    if let html {
        try checkOutputFile(html, option: "--html", kind: htmlReportKind, force: force)
        try writeFileAtomically(Data(makeHTMLReport(runDirectories: runDirectories).utf8), to: html)
        print("HTML report written to \(html.path)")
        guard out != nil else { return }
    }
    let markdown = try makeReport(runDirectories: runDirectories)
    if let out {
        try writeFileAtomically(Data(markdown.utf8), to: out)
        print("report written to \(out.path)")
    } else {
        print(markdown, terminator: "")
    }
}

/// What every Markdown report begins with: a rerun replaces a file that begins so.
let markdownReportKind = OutputFileKind(name: "Markdown report", signature: "# SUDER report\n")

/// The report of one or more runs (e.g. seeds of one experiment), as Markdown.
public func makeReport(runDirectories: [URL]) throws -> String {
    guard !runDirectories.isEmpty else { throw AllRanksError("report: give at least one --run-dir") }
    for directory in runDirectories {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw AllRanksError("report: run directory \(directory.path) does not exist")
        }
    }
    let runs = runDirectories.map(RunRecord.init)
    let labels = runLabels(runDirectories)
    var out = markdownReportKind.signature + "\n"
    out += table(
        header: ["run", "directory"] + StageName.allCases.map(\.rawValue),
        rows: zip(labels, runs).map { label, run in [label, run.directory.path] + StageName.allCases.map(run.stageStatus) })
    out += configSection(runs, labels: labels)
    out += pretrainSection(runs, labels: labels)
    out += roundsInBriefSection(runs, labels: labels)
    out += suderSection(runs, labels: labels)
    for split in EvalSplit.allCases {
        // The test section appears once any run has looked at test.
        guard split == .dev || runs.contains(where: { $0.testEvaluations > 0 || (try? $0.summary(split).get()) != nil }) else { continue }
        out += evalSection(runs, labels: labels, split: split)
        out += spreadSection(runs, labels: labels, split: split)
        out += basesSection(runs, labels: labels, split: split)
        out += againstFirstSection(runs, labels: labels, split: split)
    }
    return out
}

/// What one run directory holds; a part that is missing or unreadable carries the reason instead.
struct RunRecord {
    let directory: URL
    let config: Result<ResolvedConfig, ReportGap>
    let pretrainMetrics: Result<[MetricsLine], ReportGap>
    let suderMetrics: Result<[MetricsLine], ReportGap>
    let evalSummary: Result<EvalSummary, ReportGap>
    let testSummary: Result<EvalSummary, ReportGap>
    /// Lines of `eval/test-evaluations.jsonl`: how many times the test split was evaluated.
    let testEvaluations: Int

    init(_ directory: URL) {
        self.directory = directory
        let configFile = directory.appendingPathComponent("config.yaml")
        config =
            FileManager.default.fileExists(atPath: configFile.path)
            // Run directories recorded before a key was renamed are read under the new names.
            ? Result { try ResolvedConfig.resolve(file: configFile, overrides: [], schema: configSchema, acceptRenamedKeys: true) }
                .mapError { ReportGap("\(configFile.path): \($0)") }
            : .failure(ReportGap("no \(configFile.path)"))
        pretrainMetrics = readMetricsLines(directory.appendingPathComponent(StageName.pretrain.rawValue).appendingPathComponent("metrics.jsonl"))
        suderMetrics = readMetricsLines(directory.appendingPathComponent(StageName.suder.rawValue).appendingPathComponent("metrics.jsonl"))
        let evalDirectory = directory.appendingPathComponent(StageName.eval.rawValue)
        evalSummary = readEvalSummary(evalDirectory.appendingPathComponent(EvalSummary.fileName))
        testSummary = readEvalSummary(
            evalDirectory.appendingPathComponent(EvalSplit.test.rawValue).appendingPathComponent(EvalSummary.fileName))
        let log = FileManager.default.contents(atPath: evalDirectory.appendingPathComponent(testEvaluationsFileName).path)
        testEvaluations = log.map { String(decoding: $0, as: UTF8.self).split(separator: "\n").count } ?? 0
    }

    func summary(_ split: EvalSplit) -> Result<EvalSummary, ReportGap> { split == .dev ? evalSummary : testSummary }

    /// `suder.reward` of the run: from its summary, else its config; `self` when neither says.
    var rewardSource: RewardSource {
        let name = (try? evalSummary.get())?.rewardSource ?? (try? testSummary.get())?.rewardSource ?? (try? config.get())?.string("suder.reward")
        return name.flatMap(RewardSource.init) ?? .selfReward
    }

    func stageStatus(_ stage: StageName) -> String {
        let folder = directory.appendingPathComponent(stage.rawValue)
        if CheckpointStore.hasDoneMarker(folder) { return "done" }
        return FileManager.default.fileExists(atPath: folder.path) ? "unfinished" : "missing"
    }
}

func readEvalSummary(_ url: URL) -> Result<EvalSummary, ReportGap> {
    guard let data = FileManager.default.contents(atPath: url.path) else { return .failure(ReportGap("no \(url.path)")) }
    return Result { try EvalSummary.decode(data) }.mapError { ReportGap("\(url.path) is unreadable: \($0)") }
}

/// Why a part of the report is missing.
struct ReportGap: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One metrics.jsonl line: each key's value as table text.
struct MetricsLine {
    var cells: [String: String] = [:]
    var keys: [String] { Array(cells.keys) }
    var isEvaluation: Bool { cells.keys.contains { $0.hasPrefix("eval/") } }
}

func readMetricsLines(_ url: URL) -> Result<[MetricsLine], ReportGap> {
    guard let data = FileManager.default.contents(atPath: url.path) else { return .failure(ReportGap("no \(url.path)")) }
    var lines: [MetricsLine] = []
    for (number, text) in String(decoding: data, as: UTF8.self).split(separator: "\n").enumerated() {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            return .failure(ReportGap("\(url.path) line \(number + 1) is not a JSON object"))
        }
        var line = MetricsLine()
        for (key, value) in object {
            if let number = value as? NSNumber, !(value is String) {
                line.cells[key] = formatMetric(number.doubleValue)
            } else if value is NSNull {
                line.cells[key] = "null"
            } else {
                line.cells[key] = "\(value)"
            }
        }
        lines.append(line)
    }
    guard !lines.isEmpty else { return .failure(ReportGap("\(url.path) is empty")) }
    return .success(lines)
}

/// Four significant digits, but large values (tokens/s) without an exponent.
func formatMetric(_ value: Double) -> String {
    if value == value.rounded(), abs(value) < 1e15 { return String(Int(value)) }
    return abs(value) >= 1000 ? String(format: "%.0f", value) : String(format: "%.4g", value)
}

/// Keys in reading order: the step or round counter first, the rest alphabetical (which groups
/// `loss/...`, `rewards/...`, `eval/...`).
func orderedKeys(_ lines: [MetricsLine]) -> [String] {
    let all = Set(lines.flatMap(\.keys))
    let leading = ["round", "step"].filter(all.contains)
    return leading + all.subtracting(leading).sorted()
}

/// Run names for table headers: the folder name, or the whole path where two folder names clash.
func runLabels(_ directories: [URL]) -> [String] {
    let names = directories.map(\.lastPathComponent)
    return directories.map { url in names.filter { $0 == url.lastPathComponent }.count > 1 ? url.path : url.lastPathComponent }
}

func table(header: [String], rows: [[String]]) -> String {
    var out = "| " + header.joined(separator: " | ") + " |\n"
    out += "|" + header.map { _ in " --- |" }.joined() + "\n"
    for row in rows { out += "| " + row.joined(separator: " | ") + " |\n" }
    return out + "\n"
}

func missingNote(_ label: String, _ gap: ReportGap) -> String { "- \(label): missing (\(gap))\n" }

// MARK: - Sections

func configSection(_ runs: [RunRecord], labels: [String]) -> String {
    var out = "## Config\n\n"
    var configs: [(String, ResolvedConfig)] = []
    for (label, run) in zip(labels, runs) {
        switch run.config {
        case .success(let config): configs.append((label, config))
        case .failure(let gap): out += missingNote(label, gap)
        }
    }
    if configs.count < runs.count { out += "\n" }
    guard !configs.isEmpty else { return out }
    let defaults = try? ResolvedConfig.resolve(file: nil, overrides: [])
    let keys = Set(configs.flatMap(\.1.values.keys)).sorted()
    // Runtime keys (threads, progress output) do not change results.
    let relevant = keys.filter { !$0.hasPrefix("runtime.") }
    if configs.count > 1 {
        let differing = relevant.filter { key in Set(configs.map { $0.1.values[key]?.description ?? "-" }).count > 1 }
        out += "Settings that differ between runs:\n\n"
        out +=
            differing.isEmpty
            ? "none\n\n"
            : table(header: ["key"] + configs.map(\.0), rows: differing.map { key in [key] + configs.map { $0.1.values[key]?.description ?? "-" } })
    }
    let shared = relevant.filter { key in
        Set(configs.map { $0.1.values[key]?.description ?? "-" }).count == 1 && configs[0].1.values[key] != defaults?.values[key]
    }
    out += (configs.count > 1 ? "Shared settings" : "Settings") + " that differ from the defaults:\n\n"
    out +=
        shared.isEmpty
        ? "none\n\n"
        : table(
            header: ["key", "value", "default"],
            rows: shared.map { [$0, configs[0].1.values[$0]?.description ?? "-", defaults?.values[$0]?.description ?? "-"] })
    return out
}

func pretrainSection(_ runs: [RunRecord], labels: [String]) -> String {
    var out = "## Pretrain\n\n"
    var present: [(label: String, lines: [MetricsLine])] = []
    for (label, run) in zip(labels, runs) {
        switch run.pretrainMetrics {
        case .success(let lines): present.append((label, lines))
        case .failure(let gap): out += missingNote(label, gap)
        }
    }
    if present.count < runs.count { out += "\n" }
    guard !present.isEmpty else { return out }
    for (title, evaluation) in [("Last metrics line", false), ("Last evaluation line", true)] {
        let picked = present.map { $0.lines.last { $0.isEvaluation == evaluation } }
        out += "\(title):\n\n"
        guard picked.contains(where: { $0 != nil }) else { out += "missing in every run\n\n"; continue }
        out += table(
            header: ["metric"] + present.map(\.label),
            rows: orderedKeys(picked.compactMap { $0 }).map { key in [key] + picked.map { $0.map { $0.cells[key] ?? "-" } ?? "missing" } })
    }
    return out
}

func suderSection(_ runs: [RunRecord], labels: [String]) -> String {
    var out = "## SUDER rounds\n\n"
    for (label, run) in zip(labels, runs) {
        switch run.suderMetrics {
        case .failure(let gap): out += missingNote(label, gap) + "\n"
        case .success(let lines):
            for (title, group) in [("rounds", lines.filter { !$0.isEvaluation }), ("evaluations", lines.filter(\.isEvaluation))] where !group.isEmpty {
                let keys = orderedKeys(group)
                out += "### \(label): \(title)\n\n"
                out += table(header: keys, rows: group.map { line in keys.map { line.cells[$0] ?? "-" } })
            }
        }
    }
    return out
}

/// Rows of the eval tables: (name, value of a model, value of the delta).
struct EvalRow {
    let name: String
    let model: (ModelEvaluation) -> Double?
    let delta: (EvalComparison) -> DeltaInterval?
}

let evalRows: [EvalRow] =
    Category.allCases.map { category in
        EvalRow(
            name: "geneval/\(category.rawValue)", model: { $0.geneval.categories[category.rawValue]?.score },
            delta: { $0.genevalCategories[category.rawValue] })
    } + [
        EvalRow(name: "geneval/overall", model: { $0.geneval.overall }, delta: { $0.genevalOverall }),
        EvalRow(
            name: "caption_accuracy", model: { $0.captionAccuracy },
            delta: { DeltaInterval(delta: $0.captionAccuracy, low: .nan, high: .nan) }),
    ]
    + PopeSplit.allCases.flatMap { split in
        [
            EvalRow(
                name: "pope/\(split.rawValue)/accuracy", model: { $0.pope[split.rawValue]?.accuracy },
                delta: { $0.popeAccuracy[split.rawValue].map { DeltaInterval(delta: $0, low: .nan, high: .nan) } }),
            EvalRow(
                name: "pope/\(split.rawValue)/f1", model: { $0.pope[split.rawValue]?.f1 },
                delta: { $0.popeF1[split.rawValue].map { DeltaInterval(delta: $0, low: .nan, high: .nan) } }),
            EvalRow(name: "pope/\(split.rawValue)/yes_ratio", model: { $0.pope[split.rawValue]?.yesRatio }, delta: { _ in nil }),
        ]
    }

func formatDelta(_ interval: DeltaInterval) -> String {
    let value = String(format: "%+.4f", interval.delta)
    return interval.low.isFinite && interval.high.isFinite ? value + String(format: " [%+.4f, %+.4f]", interval.low, interval.high) : value
}

func evalSection(_ runs: [RunRecord], labels: [String], split: EvalSplit) -> String {
    var out = "## Evaluation (\(split.rawValue) split)\n\n"
    if split == .test {
        out += "Test evaluations per run (each `suder eval --split test` adds one to eval/test-evaluations.jsonl):\n\n"
        out += table(header: ["run", "test evaluations"], rows: zip(labels, runs).map { [$0, "\($1.testEvaluations)"] })
    }
    var present: [(String, EvalSummary, RewardSource, Int)] = []
    for (label, run) in zip(labels, runs) {
        switch run.summary(split) {
        case .success(let summary): present.append((label, summary, run.rewardSource, run.testEvaluations))
        case .failure(let gap): out += missingNote(label, gap)
        }
    }
    if present.count < runs.count { out += "\n" }
    guard !present.isEmpty else { return out }
    for (label, summary, reward, testEvaluations) in present {
        let settings = summary.settings
        let base = summary.models[EvaluatedModel.base.rawValue], suder = summary.models[EvaluatedModel.suder.rawValue]
        out +=
            "- \(label): \(settings.promptLines.count) GenEval-mini prompts x \(settings.imagesPerPrompt) images "
            + "(temperature \(settings.temperature), top-k \(settings.topK), guidance \(settings.cfgWeight), seed \(settings.seed)); "
            + "base \(base.map { "step \($0.step)" } ?? "missing"), suder \(suder.map { "round \($0.step)" } ?? "missing"); "
            + "reward \(reward.label); test split evaluated \(testEvaluations) time\(testEvaluations == 1 ? "" : "s")\n"
    }
    if let method = present.compactMap(\.1.delta).first?.method {
        out += "\nDeltas are suder - base; GenEval-mini intervals are 95% from a \(method). Understanding deltas are plain differences.\n"
    }
    let few = Set(
        present.compactMap(\.1.delta).flatMap { ($0.distinctPrompts ?? [:]).filter { $0.value < fewPromptsForAnInterval }.map(\.key) })
    if !few.isEmpty {
        out += "Marked *: fewer than \(fewPromptsForAnInterval) distinct prompts in this split (\(few.sorted().joined(separator: ", "))).\n"
    }
    out += "\n"
    var header = ["metric"], rows = evalRows.map { row in [few.contains { row.name == "geneval/\($0)" } ? row.name + "*" : row.name] }
    for (label, summary, reward, _) in present {
        let name = reward == .selfReward ? label : "\(label) (\(reward.rawValue))"
        header += ["\(name) base", "\(name) suder", "\(name) delta"]
        let base = summary.models[EvaluatedModel.base.rawValue], suder = summary.models[EvaluatedModel.suder.rawValue]
        for (r, row) in evalRows.enumerated() {
            rows[r] += [
                base.flatMap(row.model).map { String(format: "%.4f", $0) } ?? "missing",
                suder.flatMap(row.model).map { String(format: "%.4f", $0) } ?? "missing",
                summary.delta.flatMap(row.delta).map(formatDelta) ?? "-",
            ]
        }
    }
    return out + table(header: header, rows: rows)
}

/// The runs of one split that have a suder - base comparison, by reward source (self first).
private func comparisons(_ runs: [RunRecord], labels: [String], split: EvalSplit) -> [(RewardSource, [(label: String, run: RunRecord, delta: EvalComparison)])]
{
    let all = zip(labels, runs).compactMap { label, run in (try? run.summary(split).get())?.delta.map { (label: label, run: run, delta: $0) } }
    return RewardSource.allCases.compactMap { source in
        let mine = all.filter { $0.run.rewardSource == source }
        return mine.isEmpty ? nil : (source, mine)
    }
}

/// Mean and spread of each delta over the runs that have one, per reward source.
func spreadSection(_ runs: [RunRecord], labels: [String], split: EvalSplit) -> String {
    guard runs.count > 1 else { return "" }
    var out = "## Across runs (\(split.rawValue) split)\n\n"
    let groups = comparisons(runs, labels: labels, split: split)
    let compared = groups.map(\.1.count).reduce(0, +)
    guard compared > 1 else {
        return out + "\(compared) of \(runs.count) runs have a suder - base comparison; the spread needs at least two.\n\n"
    }
    for (source, deltas) in groups {
        out += "### reward: \(source.label)\n\n"
        guard deltas.count > 1 else {
            out += "One run (\(deltas[0].label)); the spread needs at least two.\n\n"
            continue
        }
        out += "Over the \(deltas.count) runs with a comparison (\(deltas.map(\.label).joined(separator: ", "))); std is the sample standard deviation.\n\n"
        var rows: [[String]] = []
        for row in evalRows {
            let values = deltas.compactMap { row.delta($0.delta)?.delta }
            guard !values.isEmpty else { continue }
            let (mean, std) = meanAndStandardDeviation(values)
            let excludingZero = deltas.compactMap { row.delta($0.delta) }.filter { $0.low.isFinite && ($0.low > 0 || $0.high < 0) }.count
            rows.append([
                row.name, "\(values.count)", String(format: "%+.4f", mean), String(format: "%.4f", std),
                String(format: "%+.4f", values.min()!), String(format: "%+.4f", values.max()!),
                row.name.hasPrefix("geneval/") ? "\(excludingZero)" : "-",
            ])
        }
        out += table(header: ["delta", "runs", "mean", "std", "min", "max", "runs whose 95% CI excludes 0"], rows: rows)
    }
    return out
}

/// The mean gain over pretrained bases, each base one unit: the runs (SUDER seeds) from one base
/// are averaged first, then a t-interval is taken over the base means. Runs share a base when
/// their summaries name the same base weights (xxh64), wherever the directories were copied.
func basesSection(_ runs: [RunRecord], labels: [String], split: EvalSplit) -> String {
    let groups = comparisons(runs, labels: labels, split: split)
    guard groups.contains(where: { $0.1.count > 1 }) else { return "" }
    var out = "## Across bases (\(split.rawValue) split)\n\n"
    out +=
        "Each pretrained base is one unit: a base's mean is the mean delta of its runs, and the interval is a 95% t-interval "
        + "over the base means (mean +- t(0.975, bases - 1) x sd / sqrt(bases)); with one base there is none. "
        + "The paired per-run intervals are in the evaluation table above.\n\n"
    var baseNames: [String: String] = [:]
    for (_, deltas) in groups {
        for entry in deltas {
            let key = baseKey(entry.run, split: split)
            if baseNames[key] == nil { baseNames[key] = "base \(baseNames.count + 1)" }
        }
    }
    out += table(
        header: ["base", "identity", "runs"],
        rows: baseNames.sorted { $0.value.localizedStandardCompare($1.value) == .orderedAscending }.map { key, name in
            [name, key, groups.flatMap(\.1).filter { baseKey($0.run, split: split) == key }.map(\.label).joined(separator: ", ")]
        })
    for (source, deltas) in groups {
        out += "### reward: \(source.label)\n\n"
        var rows: [[String]] = []
        for row in evalRows {
            var byBase: [String: [Double]] = [:]
            for entry in deltas {
                if let value = row.delta(entry.delta)?.delta { byBase[baseKey(entry.run, split: split), default: []].append(value) }
            }
            guard !byBase.isEmpty else { continue }
            let bases = byBase.keys.sorted { baseNames[$0]!.localizedStandardCompare(baseNames[$1]!) == .orderedAscending }
            let baseMeans = bases.map { meanAndStandardDeviation(byBase[$0]!).mean }
            let (mean, std) = meanAndStandardDeviation(baseMeans)
            var interval = "-"
            if baseMeans.count > 1 {
                let half = studentT975(degreesOfFreedom: baseMeans.count - 1) * std / Double(baseMeans.count).squareRoot()
                interval = String(format: "[%+.4f, %+.4f]", mean - half, mean + half)
            }
            rows.append([
                row.name, "\(baseMeans.count)", "\(byBase.values.map(\.count).reduce(0, +))", String(format: "%+.4f", mean), interval,
                zip(bases, baseMeans).map { "\(baseNames[$0.0]!) \(String(format: "%+.4f", $0.1))" }.joined(separator: ", "),
            ])
        }
        out += table(header: ["delta", "bases", "runs", "mean over bases", "95% t-interval over bases", "base means"], rows: rows)
    }
    return out
}

/// A run's base: its summary's base weights checksum, else (older summaries) the base checkpoint path.
private func baseKey(_ run: RunRecord, split: EvalSplit) -> String {
    guard let base = (try? run.summary(split).get())?.models[EvaluatedModel.base.rawValue] else { return "unknown" }
    return base.weightsChecksum.map { "weights xxh64 \($0)" } ?? base.checkpoint
}

/// Mean and sample standard deviation (nan for one value).
func meanAndStandardDeviation(_ values: [Double]) -> (mean: Double, std: Double) {
    let mean = values.reduce(0, +) / Double(values.count)
    let std = values.count > 1 ? (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count - 1)).squareRoot() : .nan
    return (mean, std)
}

/// The 97.5% quantile of Student's t: tabulated to 30 degrees of freedom, beyond that the
/// Cornish-Fisher expansion around the normal quantile (error below 1e-4 there).
func studentT975(degreesOfFreedom n: Int) -> Double {
    let table: [Double] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ]
    precondition(n >= 1, "studentT975: at least one degree of freedom")
    if n <= table.count { return table[n - 1] }
    let z = 1.959964, d = Double(n)
    return z + (z * z * z + z) / (4 * d) + (5 * pow(z, 5) + 16 * z * z * z + 3 * z) / (96 * d * d)
}
