import Foundation
import XCTest

@testable import SUDERCluster

#if canImport(FoundationXML)
    import FoundationXML
#endif

final class SVGChartTests: XCTestCase {
    /// The chart must be well-formed XML, or a browser shows nothing.
    func assertWellFormed(_ svg: String, file: StaticString = #filePath, line: UInt = #line) {
        let parser = XMLParser(data: Data(svg.utf8))
        XCTAssertTrue(parser.parse(), "not well-formed: \(parser.parserError.map { "\($0)" } ?? "?")", file: file, line: line)
    }

    func count(_ needle: String, in text: String) -> Int { text.components(separatedBy: needle).count - 1 }

    func testScaleRoundsOutToWholeTicksAndMapsEnds() {
        let scale = LinearScale(values: [0.3, 9.3], range: (100, 500))
        XCTAssertEqual(scale.domain.low, 0)
        XCTAssertEqual(scale.domain.high, 10)
        XCTAssertEqual(scale.ticks, [0, 2, 4, 6, 8, 10])
        XCTAssertEqual(scale.position(0), 100)
        XCTAssertEqual(scale.position(10), 500)
        XCTAssertEqual(scale.position(5), 300)
        // An inverted pixel range (y axes grow downwards).
        let y = LinearScale(values: [-3, 3], range: (200, 0))
        XCTAssertEqual(y.position(y.domain.low), 200)
        XCTAssertEqual(y.position(y.domain.high), 0)
    }

    func testTickStepsAreOneTwoOrFiveTimesAPowerOfTen() {
        XCTAssertEqual(LinearScale.tickStep(low: 0, high: 1), 0.2, accuracy: 1e-12)
        XCTAssertEqual(LinearScale.tickStep(low: 0, high: 3000), 1000, accuracy: 1e-9)
        XCTAssertEqual(LinearScale.tickStep(low: -12.9, high: -12.8), 0.02, accuracy: 1e-12)
        XCTAssertEqual(tickLabel(0.30000000000000004), "0.3")
        XCTAssertEqual(tickLabel(2500), "2500")
        XCTAssertEqual(tickLabel(3e-4), "3e-04")
    }

    func testOneValueGetsARangeAroundIt() {
        let scale = LinearScale(values: [5], range: (0, 100))
        XCTAssertLessThan(scale.domain.low, 5)
        XCTAssertGreaterThan(scale.domain.high, 5)
        XCTAssertEqual(scale.position(5), 50, accuracy: 1e-9)
        let zero = LinearScale(values: [0, 0], range: (0, 100))
        XCTAssertEqual(zero.position(0), 50, accuracy: 1e-9)
        // NaN and infinities do not stretch the domain.
        let ignoring = LinearScale(values: [1, .nan, 2, .infinity], range: (0, 1))
        XCTAssertEqual(ignoring.domain.high, 2)
    }

    func testLineChartHasAxesTicksLegendAndOnePathPerSeries() {
        let svg = lineChart(
            title: "loss <a & b>", xLabel: "step",
            series: [
                ChartSeries(name: "generation", points: [(0, 5), (10, 4), (20, 3.5)]),
                ChartSeries(name: "understanding", points: [(0, 2), (20, 1)]),
            ])
        assertWellFormed(svg)
        XCTAssertTrue(svg.contains("loss &lt;a &amp; b&gt;"))
        XCTAssertEqual(count("<path d=\"M", in: svg), 2)
        XCTAssertTrue(svg.contains("data-points=\"3\""))
        XCTAssertTrue(svg.contains(">generation</text>") && svg.contains(">understanding</text>"))
        // x ticks 0..20 and y ticks around 1..5 are labelled.
        XCTAssertTrue(svg.contains(">20</text>"))
        XCTAssertTrue(svg.contains(">5</text>"))
        XCTAssertFalse(svg.lowercased().contains("nan"))
    }

    func testEmptyChartSaysNoDataAndStaysWellFormed() {
        for series in [[], [ChartSeries(name: "only gaps", points: [(0, .nan), (1, .nan)])]] {
            let svg = lineChart(title: "empty", xLabel: "step", series: series)
            assertWellFormed(svg)
            XCTAssertTrue(svg.contains("no data"))
            XCTAssertFalse(svg.contains("<path"))
        }
        let bars = barChart(title: "empty", categories: ["a"], series: [BarSeries(name: "s", values: [nil], intervals: [nil])])
        assertWellFormed(bars)
        XCTAssertTrue(bars.contains("no data"))
    }

    func testOnePointSeriesIsADot() {
        let svg = lineChart(title: "one", xLabel: "round", series: [ChartSeries(name: "margin", points: [(3, 0.25)])])
        assertWellFormed(svg)
        XCTAssertEqual(count("<circle", in: svg), 1)
        XCTAssertFalse(svg.contains("<path d="))
        XCTAssertTrue(svg.contains("data-points=\"1\""))
        // Whole-number x values (rounds) get no fractional ticks.
        let rounds = lineChart(title: "two rounds", xLabel: "round", series: [ChartSeries(name: "loss", points: [(1, 0.5), (2, 0.4)])])
        XCTAssertTrue(rounds.contains(">1</text>") && rounds.contains(">2</text>"))
        XCTAssertFalse(rounds.contains(">1.2</text>") || rounds.contains(">1.5</text>"))
    }

    func testNaNValuesBreakTheLine() {
        let svg = lineChart(
            title: "gaps", xLabel: "step",
            series: [
                ChartSeries(name: "s", points: [(0, 1), (1, 2), (2, .nan), (3, 4), (4, 5), (5, .infinity), (6, 3)])
            ])
        assertWellFormed(svg)
        XCTAssertTrue(svg.contains("data-segments=\"3\""))
        XCTAssertTrue(svg.contains("data-points=\"5\""))
        // Two lines of two points each (two moves, two line-tos) and the lone last point as a dot.
        let path = String(svg[svg.range(of: "<path d=\"")!.upperBound...].prefix { $0 != "\"" })
        XCTAssertEqual(count("M", in: path), 2)
        XCTAssertEqual(count("L", in: path), 2)
        XCTAssertEqual(count("<circle", in: svg), 1)
        XCTAssertFalse(svg.lowercased().contains("nan") || svg.contains("inf"))
    }

    func testBarChartIncludesZeroAndDrawsIntervals() {
        let svg = barChart(
            title: "delta", categories: ["counting", "colors"],
            series: [
                BarSeries(name: "suder - base", values: [0.1, -0.05], intervals: [(0.05, 0.15), nil])
            ])
        assertWellFormed(svg)
        XCTAssertEqual(count("<rect", in: svg), 2)
        XCTAssertEqual(count("class=\"interval\"", in: svg), 1)
        XCTAssertTrue(svg.contains(">0</text>"))
        // The negative bar hangs below the zero line: its top is the zero line's y.
        let zeroLine = LinearScale(values: [0.1, -0.05, 0.05, 0.15], including: [0], range: (250, 30)).position(0)
        XCTAssertTrue(svg.contains("y=\"\(String(format: "%.1f", zeroLine))\" width"))
        let scores = barChart(title: "scores", categories: ["a"], series: [BarSeries(name: "s", values: [0], intervals: [])], including: [1])
        XCTAssertTrue(scores.contains(">1</text>"))
        XCTAssertFalse(scores.contains(">-"))
    }
}
