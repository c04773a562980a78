import Foundation

/// Small SVG charts for the HTML report: line charts of metrics over steps and bar charts with
/// intervals. SVG is text, so a chart is a string; nothing is fetched when the page opens.

/// One line: points in x order; a NaN or infinite y is a gap (the line breaks there).
struct ChartSeries {
    var name: String
    var points: [(x: Double, y: Double)]
}

/// One group of bars (e.g. a model) over the chart's categories; nil = not measured.
struct BarSeries {
    var name: String
    var values: [Double?]
    /// The interval drawn over each bar, when there is one.
    var intervals: [(low: Double, high: Double)?]
}

/// Colours that stay apart for the usual handful of runs and directions (Tableau 10).
let chartPalette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]

/// A linear map from a value range onto a pixel range, with readable tick values.
struct LinearScale {
    let domain: (low: Double, high: Double)
    let range: (low: Double, high: Double)

    /// Spans `values` (NaN and infinities ignored), widened when they are all equal; `including`
    /// forces values into the domain (0 for bars).
    init(values: [Double], including: [Double] = [], range: (low: Double, high: Double)) {
        let finite = (values + including).filter(\.isFinite)
        var low = finite.min() ?? 0, high = finite.max() ?? 1
        if low == high {
            // One value (or one point): a range around it, so it sits in the middle.
            let pad = low == 0 ? 1 : abs(low) * 0.1
            low -= pad; high += pad
        }
        // Round outwards to whole ticks so the axis starts and ends on a labelled value.
        let step = LinearScale.tickStep(low: low, high: high)
        domain = ((low / step).rounded(.down) * step, (high / step).rounded(.up) * step)
        self.range = range
    }

    func position(_ value: Double) -> Double {
        range.low + (value - domain.low) / (domain.high - domain.low) * (range.high - range.low)
    }

    /// 1, 2 or 5 times a power of ten, giving about five ticks.
    static func tickStep(low: Double, high: Double) -> Double {
        let raw = (high - low) / 5
        let magnitude = pow(10, (log10(raw)).rounded(.down))
        let fraction = raw / magnitude
        return (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * magnitude
    }

    var ticks: [Double] {
        let step = LinearScale.tickStep(low: domain.low, high: domain.high)
        let count = Int(((domain.high - domain.low) / step).rounded()) + 1
        return (0..<count).map { domain.low + Double($0) * step }
    }
}

/// Tick labels: short, without float noise ("0.3", "1e+04", "2500").
func tickLabel(_ value: Double) -> String {
    if value == 0 { return "0" }
    if abs(value) >= 1e5 || abs(value) < 1e-3 { return String(format: "%.0e", value) }
    return String(format: "%g", (value * 1e6).rounded() / 1e6)
}

func escapeXML(_ text: String) -> String {
    text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
}

/// Layout shared by both chart kinds: the plot area inside the margins, the legend below it.
private struct Frame {
    let width = 520.0, plotHeight = 220.0
    let left = 62.0, right = 12.0, top = 30.0, bottom = 40.0
    let legendRows: Int
    var plotBottom: Double { top + plotHeight }
    var height: Double { plotBottom + bottom + Double(legendRows) * 16 }

    func open(title: String, kind: String) -> String {
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" data-kind=\"\(kind)\" width=\"\(Int(width))\" height=\"\(Int(height))\" "
            + "viewBox=\"0 0 \(Int(width)) \(Int(height))\" font-family=\"sans-serif\" font-size=\"11\">"
            + "<text x=\"\(Int(width / 2))\" y=\"16\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">\(escapeXML(title))</text>"
    }

    func yAxis(_ scale: LinearScale, label: String) -> String {
        var out = ""
        for tick in scale.ticks {
            let y = format(scale.position(tick))
            out += "<line class=\"grid\" x1=\"\(format(left))\" x2=\"\(format(width - right))\" y1=\"\(y)\" y2=\"\(y)\" stroke=\"#e4e4e4\"/>"
            out += "<text x=\"\(format(left - 4))\" y=\"\(y)\" dy=\"4\" text-anchor=\"end\">\(tickLabel(tick))</text>"
        }
        out += "<line x1=\"\(format(left))\" x2=\"\(format(left))\" y1=\"\(format(top))\" y2=\"\(format(plotBottom))\" stroke=\"#444\"/>"
        if !label.isEmpty {
            out += "<text transform=\"translate(12 \(format(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">\(escapeXML(label))</text>"
        }
        return out
    }

    func legend(_ names: [String]) -> String {
        var out = ""
        for (i, name) in names.enumerated() {
            let y = plotBottom + bottom + Double(i) * 16 + 4
            let colour = chartPalette[i % chartPalette.count]
            out += "<line x1=\"\(format(left))\" x2=\"\(format(left + 22))\" y1=\"\(format(y))\" y2=\"\(format(y))\" stroke=\"\(colour)\" stroke-width=\"3\"/>"
            out += "<text class=\"legend\" x=\"\(format(left + 28))\" y=\"\(format(y))\" dy=\"4\">\(escapeXML(name))</text>"
        }
        return out
    }

    func noData() -> String {
        "<text class=\"no-data\" x=\"\(format(width / 2))\" y=\"\(format(top + plotHeight / 2))\" text-anchor=\"middle\" fill=\"#888\">no data</text>"
    }
}

private func format(_ value: Double) -> String { String(format: "%.1f", value) }

/// A line chart; every series gets a colour and a legend entry. A series whose points are all
/// gaps still appears in the legend; a chart without any finite point says "no data".
func lineChart(title: String, xLabel: String, yLabel: String = "", series: [ChartSeries]) -> String {
    let frame = Frame(legendRows: series.count)
    var out = frame.open(title: title, kind: "line")
    let finite = series.flatMap(\.points).filter { $0.x.isFinite && $0.y.isFinite }
    guard !finite.isEmpty else { return out + frame.noData() + frame.legend(series.map(\.name)) + "</svg>" }
    let xScale = LinearScale(values: finite.map(\.x), range: (frame.left, frame.width - frame.right))
    let yScale = LinearScale(values: finite.map(\.y), range: (frame.plotBottom, frame.top))
    out += frame.yAxis(yScale, label: yLabel)
    // Steps and rounds are whole numbers: no tick between two of them.
    let wholeX = finite.allSatisfy { $0.x == $0.x.rounded() }
    for tick in xScale.ticks where !wholeX || tick == tick.rounded() {
        let x = format(xScale.position(tick))
        out += "<line x1=\"\(x)\" x2=\"\(x)\" y1=\"\(format(frame.plotBottom))\" y2=\"\(format(frame.plotBottom + 4))\" stroke=\"#444\"/>"
        out += "<text x=\"\(x)\" y=\"\(format(frame.plotBottom + 16))\" text-anchor=\"middle\">\(tickLabel(tick))</text>"
    }
    out +=
        "<line x1=\"\(format(frame.left))\" x2=\"\(format(frame.width - frame.right))\" y1=\"\(format(frame.plotBottom))\" "
        + "y2=\"\(format(frame.plotBottom))\" stroke=\"#444\"/>"
    out +=
        "<text x=\"\(format(frame.left + (frame.width - frame.left - frame.right) / 2))\" y=\"\(format(frame.plotBottom + 32))\" "
        + "text-anchor=\"middle\">\(escapeXML(xLabel))</text>"
    for (i, line) in series.enumerated() {
        let colour = chartPalette[i % chartPalette.count]
        // Runs of consecutive finite points; a gap starts a new run.
        var runs: [[(x: Double, y: Double)]] = [[]]
        for point in line.points {
            if point.x.isFinite && point.y.isFinite { runs[runs.count - 1].append(point) } else if !runs[runs.count - 1].isEmpty { runs.append([]) }
        }
        let drawn = runs.filter { !$0.isEmpty }
        let path = drawn.filter { $0.count > 1 }.map { run in
            run.enumerated().map { ($0.offset == 0 ? "M" : "L") + format(xScale.position($0.element.x)) + " " + format(yScale.position($0.element.y)) }
                .joined(separator: " ")
        }.joined(separator: " ")
        out +=
            "<g class=\"series\" data-name=\"\(escapeXML(line.name))\" data-points=\"\(drawn.map(\.count).reduce(0, +))\" "
            + "data-segments=\"\(drawn.count)\">"
        if !path.isEmpty { out += "<path d=\"\(path)\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"1.6\"/>" }
        // A point with no neighbour would be invisible as a path: draw it as a dot.
        for run in drawn where run.count == 1 {
            out += "<circle cx=\"\(format(xScale.position(run[0].x)))\" cy=\"\(format(yScale.position(run[0].y)))\" r=\"3\" fill=\"\(colour)\"/>"
        }
        out += "</g>"
    }
    return out + frame.legend(series.map(\.name)) + "</svg>"
}

/// Grouped bars over `categories`, one colour per series, with interval whiskers; the y axis
/// always includes 0 and the values in `including` (e.g. 1 for scores).
func barChart(title: String, yLabel: String = "", categories: [String], series: [BarSeries], including: [Double] = []) -> String {
    let frame = Frame(legendRows: series.count)
    var out = frame.open(title: title, kind: "bar")
    let values = series.flatMap { $0.values.compactMap { $0 } + $0.intervals.compactMap { $0 }.flatMap { [$0.low, $0.high] } }
    guard values.contains(where: \.isFinite), !categories.isEmpty else { return out + frame.noData() + frame.legend(series.map(\.name)) + "</svg>" }
    let yScale = LinearScale(values: values, including: [0] + including, range: (frame.plotBottom, frame.top))
    out += frame.yAxis(yScale, label: yLabel)
    let slot = (frame.width - frame.left - frame.right) / Double(categories.count)
    let barWidth = slot * 0.8 / Double(max(1, series.count))
    let zero = yScale.position(0)
    for (c, category) in categories.enumerated() {
        out +=
            "<text x=\"\(format(frame.left + slot * (Double(c) + 0.5)))\" y=\"\(format(frame.plotBottom + 14))\" text-anchor=\"middle\">"
            + "\(escapeXML(category))</text>"
    }
    out += "<line x1=\"\(format(frame.left))\" x2=\"\(format(frame.width - frame.right))\" y1=\"\(format(zero))\" y2=\"\(format(zero))\" stroke=\"#444\"/>"
    for (s, bars) in series.enumerated() {
        let colour = chartPalette[s % chartPalette.count]
        out += "<g class=\"series\" data-name=\"\(escapeXML(bars.name))\" data-points=\"\(bars.values.compactMap { $0 }.filter(\.isFinite).count)\">"
        for (c, value) in bars.values.enumerated() where c < categories.count {
            guard let value, value.isFinite else { continue }
            let x = frame.left + slot * Double(c) + slot * 0.1 + barWidth * Double(s)
            let y = yScale.position(value)
            out +=
                "<rect x=\"\(format(x))\" y=\"\(format(min(y, zero)))\" width=\"\(format(barWidth * 0.92))\" height=\"\(format(abs(zero - y)))\" "
                + "fill=\"\(colour)\"><title>\(escapeXML("\(bars.name) \(categories[c]): \(String(format: "%.4f", value))"))</title></rect>"
            if c < bars.intervals.count, let interval = bars.intervals[c], interval.low.isFinite, interval.high.isFinite {
                let middle = format(x + barWidth * 0.46)
                out +=
                    "<path class=\"interval\" d=\"M\(middle) \(format(yScale.position(interval.low))) L\(middle) \(format(yScale.position(interval.high))) "
                    + "M\(format(x + barWidth * 0.2)) \(format(yScale.position(interval.low))) L\(format(x + barWidth * 0.72)) \(format(yScale.position(interval.low))) "
                    + "M\(format(x + barWidth * 0.2)) \(format(yScale.position(interval.high))) L\(format(x + barWidth * 0.72)) \(format(yScale.position(interval.high)))\" "
                    + "stroke=\"#222\" fill=\"none\"/>"
            }
        }
        out += "</g>"
    }
    return out + frame.legend(series.map(\.name)) + "</svg>"
}
