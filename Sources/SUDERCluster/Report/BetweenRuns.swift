import Foundation
import World

/// Each run's SUDER model against the first run's, paired over the same prompts: what an ablation
/// row changed relative to a reference row. Only runs that share the first run's base weights and
/// its eval prompts and sampling settings are compared (their images then share sampling seeds);
/// the others are named with the reason. The prompts' categories come from the first run's data.
func againstFirstSection(_ runs: [RunRecord], labels: [String], split: EvalSplit) -> String {
    guard runs.count > 1, let reference = try? runs[0].summary(split).get(),
        let referenceModel = reference.models[EvaluatedModel.suder.rawValue]
    else { return "" }
    var out = "## Against \(labels[0]) (\(split.rawValue) split)\n\n"
    let metadataFile = runs[0].directory.appendingPathComponent(StageName.data.rawValue)
        .appendingPathComponent(DatasetFile.evalMetadata(split))
    let records: [MetadataRecord]
    do { records = try readMetadataFile(metadataFile) } catch {
        return out + "Missing: the prompts' categories (\(error)).\n\n"
    }
    guard reference.settings.promptLines.allSatisfy(records.indices.contains) else {
        return out + "Missing: \(metadataFile.path) has fewer lines than \(labels[0])'s summary scored.\n\n"
    }
    let scored = reference.settings.promptLines.map { records[$0] }

    var compared: [(label: String, delta: EvalComparison)] = [], skipped: [String] = []
    for (label, run) in zip(labels, runs).dropFirst() {
        guard let summary = try? run.summary(split).get(), let model = summary.models[EvaluatedModel.suder.rawValue] else {
            skipped.append("\(label) (no SUDER model evaluated on \(split.rawValue))")
            continue
        }
        guard sameSampling(summary.settings, reference.settings) else {
            skipped.append("\(label) (other eval prompts or sampling settings)")
            continue
        }
        let ownBase = summary.models[EvaluatedModel.base.rawValue]?.weightsChecksum
        guard let ownBase, ownBase == reference.models[EvaluatedModel.base.rawValue]?.weightsChecksum else {
            skipped.append("\(label) (another base model)")
            continue
        }
        let bootstrap = pairedBootstrap(
            categories: scored.map(\.tag), prompts: scored.map(\.prompt), base: referenceModel.geneval.correctPerPrompt,
            suder: model.geneval.correctPerPrompt, imagesPerPrompt: reference.settings.imagesPerPrompt)
        compared.append((label, EvalComparison(base: referenceModel, suder: model, bootstrap: bootstrap)))
    }
    out +=
        "Each run's SUDER model minus \(labels[0])'s, on the same prompts with the same sampling seeds, from the same base. "
        + "GenEval-mini intervals are 95% from the paired bootstrap over prompts of the evaluation tables (resampling the "
        + "prompts' score differences between the two runs); understanding rows are plain differences.\n"
    if !skipped.isEmpty { out += "Not compared: \(skipped.joined(separator: ", ")).\n" }
    out += "\n"
    guard !compared.isEmpty else { return out }
    // The first run's SUDER model stands where the base stands in a run's own comparison.
    let rows = evalRows.filter { !$0.name.hasPrefix("pope/") || $0.name.hasSuffix("/f1") }.map { row in
        [row.name] + compared.map { row.delta($0.delta).map(formatDelta) ?? "-" }
    }
    return out + table(header: ["metric"] + compared.map { "\($0.label) - \(labels[0])" }, rows: rows)
}

private func sameSampling(_ a: EvalSummarySettings, _ b: EvalSummarySettings) -> Bool {
    a.promptLines == b.promptLines && a.imagesPerPrompt == b.imagesPerPrompt && a.seed == b.seed
        && a.temperature == b.temperature && a.topK == b.topK && a.cfgWeight == b.cfgWeight
}

/// The rounds' diagnostics that show whether an objective holds its likelihood, as the mean of
/// the first and of the last `window` rounds of each run.
func roundsInBriefSection(_ runs: [RunRecord], labels: [String], window: Int = 10) -> String {
    let present = zip(labels, runs).compactMap { label, run in
        (try? run.suderMetrics.get()).map { (label: label, rounds: $0.filter { !$0.isEvaluation }) }
    }.filter { !$0.rounds.isEmpty }
    guard !present.isEmpty else { return "" }
    let keys = briefRoundKeys.filter { key in present.contains { $0.rounds.contains { $0.cells[key] != nil } } }
    guard !keys.isEmpty else { return "" }
    var out = "## SUDER rounds in brief\n\n"
    out +=
        "Mean of the first \(window) rounds -> mean of the last \(window) (fewer when a run has fewer); `-` where a run "
        + "does not log the key. A falling `logps/chosen` while the margins grow is likelihood displacement; "
        + "`oracle_sample_accuracy/generation` is the detector's acceptance of the generator's own samples (measured, never trained on).\n\n"
    func mean(_ lines: ArraySlice<MetricsLine>, _ key: String) -> Double? {
        let values = lines.compactMap { $0.cells[key].flatMap(Double.init) }.filter(\.isFinite)
        return values.isEmpty ? nil : values.reduce(0, +) / Double(values.count)
    }
    let rows = keys.map { key in
        [key]
            + present.map { run in
                guard let first = mean(run.rounds.prefix(window), key), let last = mean(run.rounds.suffix(window), key) else { return "-" }
                return String(format: "%.3f -> %.3f", first, last)
            }
    }
    return out + table(header: ["metric"] + present.map(\.label), rows: rows)
}

private let briefRoundKeys =
    ["generation", "understanding"].flatMap { direction in
        ["logps/chosen", "logps/rejected", "rewards/margins", "loss", "kl", "guard/scale"].map { "\(direction)/\($0)" }
    } + ["oracle_sample_accuracy/generation", "oracle_sample_accuracy/understanding", "fidelity/generation", "fidelity/understanding"]
