import ClusterRuntime
import Foundation
import GenEvalMini
import World

/// `suder report --html FILE`: one self-contained page (inline SVG charts, PNG samples as data
/// URIs, no script, nothing fetched) with the runs' training curves, evaluation bars with their
/// intervals and base-vs-SUDER sample grids marked with the detector's verdicts. Several runs are
/// overlaid in the same charts. Reads files only, like the Markdown report (`runReportCommand`).
public func makeHTMLReport(runDirectories: [URL]) throws -> String {
    // The Markdown report's checks and readers: the same runs, the same gaps.
    _ = try makeReport(runDirectories: runDirectories)
    let runs = runDirectories.map(RunRecord.init)
    let labels = runLabels(runDirectories)
    var body =
        "<h1>\(htmlReportTitle)</h1>\n<table><tr><th>run</th><th>directory</th>"
        + StageName.allCases.map { "<th>\($0.rawValue)</th>" }.joined() + "</tr>\n"
    for (label, run) in zip(labels, runs) {
        body +=
            "<tr><td>\(escapeXML(label))</td><td>\(escapeXML(run.directory.path))</td>"
            + StageName.allCases.map { "<td>\(run.stageStatus($0))</td>" }.joined() + "</tr>\n"
    }
    body += "</table>\n"

    let pretrain = zip(labels, runs).compactMap { label, run in (try? run.pretrainMetrics.get()).map { (label, $0) } }
    body +=
        "<h2>Pretraining</h2>\n"
        + chartSection(
            pretrain, x: "step",
            charts: [
                ("Training loss", ["loss/generation", "loss/understanding", "loss/probes"]),
                ("Validation loss", ["eval/val_loss/generation", "eval/val_loss/understanding"]),
                ("Learning rate", ["lr"]),
                ("Quick evaluations", ["eval/geneval_overall", "eval/caption_accuracy"]),
            ])
    let suder = zip(labels, runs).compactMap { label, run in (try? run.suderMetrics.get()).map { (label, $0) } }
    body += "<h2>SUDER rounds</h2>\n"
    for direction in Direction.allCases.map(\.rawValue) {
        body +=
            "<h3>\(direction)</h3>\n"
            + chartSection(
                suder, x: "round",
                charts: [
                    ("\(direction): loss", ["\(direction)/loss"]),
                    ("\(direction): rewards/margins", ["\(direction)/rewards/margins"]),
                    ("\(direction): rewards/chosen and rewards/rejected", ["\(direction)/rewards/chosen", "\(direction)/rewards/rejected"]),
                    ("\(direction): logps/chosen and logps/rejected", ["\(direction)/logps/chosen", "\(direction)/logps/rejected"]),
                    ("\(direction): self-reward mean", ["\(direction)/self_reward_mean"]),
                    ("\(direction): reward fidelity", ["fidelity/\(direction)", "fidelity_auc/\(direction)"]),
                    ("\(direction): oracle accuracy of the samples", ["oracle_sample_accuracy/\(direction)"]),
                ])
    }
    body +=
        "<h3>Quick evaluations</h3>\n"
        + chartSection(
            suder, x: "round",
            charts: [
                ("Quick evaluations during SUDER", ["eval/geneval_overall", "eval/caption_accuracy"])
            ])
    body += evaluationSection(runs, labels: labels)
    body += gridSection(runs, labels: labels)
    return htmlPage(title: htmlReportTitle, body: body)
}

let htmlReportTitle = "SUDER report"
/// What every HTML report begins with: a rerun replaces a file that begins so.
let htmlReportKind = OutputFileKind(name: "HTML report", signature: htmlPageStart(title: htmlReportTitle))

/// The eval prompts shown as image grids: this many, spread over the categories.
let reportGridPrompts = 12

func htmlPageStart(title: String) -> String {
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>\(escapeXML(title))</title>\n"
}

func htmlPage(title: String, body: String) -> String {
    htmlPageStart(title: title) + """
        <style>
        body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1200px; }
        table { border-collapse: collapse; margin: 0.5em 0 1em; }
        td, th { border: 1px solid #ccc; padding: 2px 6px; font-size: 13px; text-align: left; vertical-align: top; }
        .charts { display: flex; flex-wrap: wrap; gap: 12px; }
        svg.chart { border: 1px solid #ddd; background: #fff; }
        img.sample { width: 64px; height: 64px; image-rendering: pixelated; border: 3px solid; margin: 1px; }
        img.accepted { border-color: #2a9d3a; }
        img.rejected { border-color: #d62728; }
        .note { color: #666; font-size: 13px; }
        </style></head>
        <body>
        \(body)
        </body></html>

        """
}

/// Line charts of metrics.jsonl keys over `x`; each run's key is one series. Charts whose keys
/// no run logged are named in a note instead of drawn empty.
func chartSection(_ runs: [(label: String, lines: [MetricsLine])], x: String, charts: [(title: String, keys: [String])]) -> String {
    guard !runs.isEmpty else { return "<p class=\"note\">no run has these metrics</p>\n" }
    var out = "<div class=\"charts\">\n", missing: [String] = []
    for (title, keys) in charts {
        var series: [ChartSeries] = []
        for (label, lines) in runs {
            for key in keys {
                let points = metricPoints(lines, x: x, y: key)
                guard points.contains(where: { $0.y.isFinite }) else { continue }
                let name = [runs.count > 1 ? label : nil, keys.count > 1 ? key : nil].compactMap { $0 }.joined(separator: ": ")
                series.append(ChartSeries(name: name.isEmpty ? key : name, points: points))
            }
        }
        if series.isEmpty { missing.append(title); continue }
        out += lineChart(title: title, xLabel: x, series: series) + "\n"
    }
    out += "</div>\n"
    if !missing.isEmpty { out += "<p class=\"note\">not logged: \(escapeXML(missing.joined(separator: "; ")))</p>\n" }
    return out
}

/// (x, y) of the lines holding key `y`; a null or non-numeric value is a gap.
func metricPoints(_ lines: [MetricsLine], x: String, y: String) -> [(x: Double, y: Double)] {
    lines.compactMap { line in
        // SUDER's evaluation lines carry `step` (the round) instead of `round`.
        guard let xValue = (line.cells[x] ?? line.cells["step"]).flatMap(Double.init), let text = line.cells[y] else { return nil }
        return (xValue, Double(text) ?? .nan)
    }
}

// MARK: - Evaluation

/// GenEval-mini per category for base and SUDER with a bootstrap interval per model (over
/// prompts), the deltas with the eval stage's paired intervals, then captions and POPE-mini.
func evaluationSection(_ runs: [RunRecord], labels: [String]) -> String {
    var out = "<h2>Evaluation</h2>\n"
    let present = zip(labels, runs).compactMap { label, run in (try? run.evalSummary.get()).map { (label: label, run: run, summary: $0) } }
    guard !present.isEmpty else { return out + "<p class=\"note\">no run has an eval summary</p>\n" }
    let categories = Category.allCases.map(\.rawValue) + ["overall"]
    var scores: [BarSeries] = [], deltas: [BarSeries] = [], understanding: [BarSeries] = []
    var rows = ""
    let understandingNames = ["captions"] + PopeSplit.allCases.map { "POPE \($0.rawValue) F1" }
    for (label, run, summary) in present {
        let prefix = present.count > 1 ? "\(label) " : ""
        let split = summary.split.flatMap(EvalSplit.init(rawValue:)) ?? .dev
        let records = (try? DatasetReader(directory: run.directory.appendingPathComponent(StageName.data.rawValue)).evalMetadata(split: split))
            .map { all in summary.settings.promptLines.compactMap { $0 < all.count ? all[$0] : nil } }
        for model in EvaluatedModel.allCases {
            guard let evaluation = summary.models[model.rawValue] else { continue }
            let values = categories.map { $0 == "overall" ? evaluation.geneval.overall : evaluation.geneval.categories[$0]?.score }
            var intervals: [(low: Double, high: Double)?] = categories.map { _ in nil }
            if let records, records.count == evaluation.geneval.correctPerPrompt.count {
                let tags = records.map(\.tag)
                // The bootstrap of a model against a model that gets nothing right: the interval of its own score.
                let bootstrap = pairedBootstrap(
                    categories: tags, prompts: records.map(\.prompt), base: tags.map { _ in 0 }, suder: evaluation.geneval.correctPerPrompt,
                    imagesPerPrompt: summary.settings.imagesPerPrompt)
                intervals = categories.map { name in
                    let interval = name == "overall" ? bootstrap.overall : Category(rawValue: name).flatMap { bootstrap.categories[$0] }
                    return interval.map { ($0.low, $0.high) }
                }
            }
            scores.append(BarSeries(name: prefix + model.rawValue, values: values, intervals: intervals))
            understanding.append(
                BarSeries(
                    name: prefix + model.rawValue,
                    values: [evaluation.captionAccuracy] + PopeSplit.allCases.map { evaluation.pope[$0.rawValue]?.f1 },
                    intervals: []))
            rows +=
                "<tr><td>\(escapeXML(prefix + model.rawValue))</td><td>\(evaluation.step)</td>"
                + ([evaluation.geneval.overall, evaluation.captionAccuracy]
                + PopeSplit.allCases.flatMap {
                    [evaluation.pope[$0.rawValue]?.accuracy, evaluation.pope[$0.rawValue]?.f1, evaluation.pope[$0.rawValue]?.yesRatio]
                }).map { "<td>\($0.map { String(format: "%.4f", $0) } ?? "-")</td>" }.joined() + "</tr>\n"
        }
        if let delta = summary.delta {
            let intervals = categories.map { $0 == "overall" ? delta.genevalOverall : delta.genevalCategories[$0] }
            deltas.append(
                BarSeries(
                    name: prefix + "suder - base", values: intervals.map { $0?.delta },
                    intervals: intervals.map { $0.map { ($0.low, $0.high) } }))
        }
    }
    out +=
        "<p class=\"note\">Model intervals: 95% percentile bootstrap over prompts within each category. Delta intervals: the eval stage's "
        + "\(escapeXML(bootstrapMethod)).</p>\n<div class=\"charts\">\n"
    out += barChart(title: "GenEval-mini per category", yLabel: "score", categories: categories, series: scores, including: [1]) + "\n"
    if !deltas.isEmpty { out += barChart(title: "GenEval-mini: SUDER - base", yLabel: "delta", categories: categories, series: deltas) + "\n" }
    out +=
        barChart(
            title: "Captions and POPE-mini", yLabel: "accuracy / F1", categories: understandingNames.map { $0.replacingOccurrences(of: "POPE ", with: "") },
            series: understanding, including: [1]) + "\n</div>\n"
    out +=
        "<table><tr><th>model</th><th>step</th><th>GenEval-mini</th><th>caption accuracy</th>"
        + PopeSplit.allCases.map { "<th>POPE \($0.rawValue) acc</th><th>F1</th><th>yes ratio</th>" }.joined() + "</tr>\n" + rows + "</table>\n"
    return out
}

// MARK: - Image grids

/// For a fixed set of eval prompts (the same in every run), each model's samples side by side,
/// framed green when the detector accepts the image for the prompt and red when it does not.
func gridSection(_ runs: [RunRecord], labels: [String]) -> String {
    var out =
        "<h2>Samples</h2>\n<p class=\"note\">The eval stage's samples of \(reportGridPrompts) eval prompts; "
        + "green frame: the detector accepts the image for the prompt (GenEval-mini's verdict), red: it does not.</p>\n"
    for (label, run) in zip(labels, runs) {
        guard let summary = try? run.evalSummary.get() else { continue }
        guard let metadata = try? DatasetReader(directory: run.directory.appendingPathComponent(StageName.data.rawValue)).evalMetadata() else {
            out += "<p class=\"note\">\(escapeXML(label)): no eval metadata in its data directory</p>\n"
            continue
        }
        let lines = summary.settings.promptLines.filter { $0 < metadata.count }
        let shown = selectEvalRecords(lines.map { metadata[$0].tag }, maxPrompts: reportGridPrompts).map { lines[$0] }
        let models = EvaluatedModel.allCases.filter { summary.models[$0.rawValue] != nil }
        out += "<h3>\(escapeXML(label))</h3>\n<table><tr><th>prompt</th>" + models.map { "<th>\($0.rawValue)</th>" }.joined() + "</tr>\n"
        for line in shown {
            let record = metadata[line]
            out += "<tr><td>\(escapeXML(record.prompt))<br><span class=\"note\">\(record.tag.rawValue)</span></td>"
            for model in models {
                let samples = run.directory.appendingPathComponent(StageName.eval.rawValue).appendingPathComponent(model.rawValue)
                    .appendingPathComponent(String(format: "%05d", line)).appendingPathComponent("samples")
                out += "<td>" + sampleImages(in: samples, record: record) + "</td>"
            }
            out += "</tr>\n"
        }
        out += "</table>\n"
    }
    return out
}

/// The folder's PNGs as inline images with the detector's verdict; unreadable files are named.
func sampleImages(in folder: URL, record: MetadataRecord) -> String {
    let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0.hasSuffix(".png") }.sorted()
    guard !names.isEmpty else { return "<span class=\"note\">no samples in \(escapeXML(folder.path))</span>" }
    return names.map { name in
        let file = folder.appendingPathComponent(name)
        guard let bytes = FileManager.default.contents(atPath: file.path), let image = try? decodePNG([UInt8](bytes)) else {
            return "<span class=\"note\">unreadable \(escapeXML(name))</span>"
        }
        let verdict = evaluateGenEval(image: image, record: record)
        let title = (verdict.correct ? "accepted" : "rejected") + ": " + verdict.reason
        return "<img class=\"sample \(verdict.correct ? "accepted" : "rejected")\" alt=\"\(escapeXML(title))\" title=\"\(escapeXML(title))\" "
            + "src=\"data:image/png;base64,\(bytes.base64EncodedString())\">"
    }.joined()
}
