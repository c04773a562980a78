import XCTest

@testable import GenEvalMini
@testable import World

/// GenEval's rules: geometry, counting with exclusions, colour attribution, metadata parsing.
final class GenEvalTests: XCTestCase {
    func box(_ cx: Double, _ cy: Double, size: Double = 4) -> Box {
        Box(x1: cx - size / 2, y1: cy - size / 2, x2: cx + size / 2, y2: cy + size / 2)
    }

    func detection(_ shape: ShapeClass, _ color: ObjectColor, _ cx: Double, _ cy: Double, confidence: Double = 1) -> DetectedObject {
        DetectedObject(shape: shape, color: color, box: box(cx, cy), area: 16, confidence: confidence)
    }

    func testRelationsFollowGenEvalGeometry() {
        let target = box(16, 16)
        XCTAssertEqual(genEvalRelations(of: box(6, 16), relativeTo: target), [.leftOf])
        XCTAssertEqual(genEvalRelations(of: box(26, 16), relativeTo: target), [.rightOf])
        XCTAssertEqual(genEvalRelations(of: box(16, 6), relativeTo: target), [.above], "image y grows downwards")
        XCTAssertEqual(genEvalRelations(of: box(16, 26), relativeTo: target), [.below])
        // A clean diagonal has both components above 0.5 of the offset's length.
        XCTAssertEqual(genEvalRelations(of: box(6, 6), relativeTo: target), [.leftOf, .above])
        // Offsets within 0.1 x (sum of extents) count as no relation: 0.7 < 0.1 * 8.
        XCTAssertEqual(genEvalRelations(of: box(16.7, 16), relativeTo: target), [])
        // Just past the margin: revised dx = 1.0 - 0.8 = 0.2 of |offset| 1.0 -> not > 0.5.
        XCTAssertEqual(genEvalRelations(of: box(17, 16), relativeTo: target), [])
        // revised dx = 2 - 0.8 = 1.2 of 2 = 0.6 > 0.5.
        XCTAssertEqual(genEvalRelations(of: box(18, 16), relativeTo: target), [.rightOf])
        // A mostly vertical offset is not also "left of": dx = (-3 - 0.8)/|(-3,-10)| < 0.5.
        XCTAssertEqual(genEvalRelations(of: box(13, 6), relativeTo: target), [.above])
    }

    func testCountingUsesExclusions() {
        let record = MetadataRecord.counting(.circle, 3)
        let three = [detection(.circle, .red, 4, 4), detection(.circle, .blue, 14, 4), detection(.circle, .red, 24, 4)]
        XCTAssertTrue(evaluateGenEval(detections: three, record: record).correct)
        let two = Array(three.prefix(2))
        XCTAssertEqual(evaluateGenEval(detections: two, record: record).reason, "expected circle>=3, found 2")
        let four = three + [detection(.circle, .green, 24, 24)]
        let verdict = evaluateGenEval(detections: four, record: record)
        XCTAssertFalse(verdict.correct)
        XCTAssertEqual(verdict.reason, "expected circle<4, found 4")
        // Other classes do not count.
        XCTAssertTrue(evaluateGenEval(detections: three + [detection(.square, .red, 24, 24)], record: record).correct)
    }

    func testColorIsJudgedOnTheMostConfidentInstances() {
        let record = MetadataRecord.colors(.red, .square)
        let blueFirst = [detection(.square, .blue, 4, 4, confidence: 0.9), detection(.square, .red, 20, 20, confidence: 0.8)]
        XCTAssertFalse(evaluateGenEval(detections: blueFirst, record: record).correct)
        let redFirst = [detection(.square, .blue, 4, 4, confidence: 0.7), detection(.square, .red, 20, 20, confidence: 0.8)]
        XCTAssertTrue(evaluateGenEval(detections: redFirst, record: record).correct)
    }

    func testColorAttribution() {
        let record = MetadataRecord.colorAttr(.red, .circle, .blue, .square)
        XCTAssertTrue(evaluateGenEval(detections: [detection(.circle, .red, 4, 4), detection(.square, .blue, 20, 20)], record: record).correct)
        let swapped = [detection(.circle, .blue, 4, 4), detection(.square, .red, 20, 20)]
        let verdict = evaluateGenEval(detections: swapped, record: record)
        XCTAssertFalse(verdict.correct)
        XCTAssertTrue(verdict.reason.contains("expected red circle>=1, found 0 red"), verdict.reason)
    }

    func testPositionNeedsItsTargetAndTheRelation() {
        let record = MetadataRecord.position(.circle, .leftOf, .square)  // a circle left of a square
        XCTAssertEqual(record.prompt, "a photo of a circle left of a square")
        XCTAssertTrue(evaluateGenEval(detections: [detection(.circle, .red, 4, 16), detection(.square, .blue, 24, 16)], record: record).correct)
        XCTAssertFalse(evaluateGenEval(detections: [detection(.circle, .red, 24, 16), detection(.square, .blue, 4, 16)], record: record).correct)
        let noTarget = evaluateGenEval(detections: [detection(.circle, .red, 4, 16)], record: record)
        XCTAssertEqual(noTarget.reason, "expected square>=1, found 0\nno target for circle to be left of")
    }

    func testSummaryIsTheUnweightedMeanOfCategories() {
        var summary = GenEvalSummary()
        for i in 0..<4 { summary.add(category: .counting, correct: i == 0) }  // 0.25
        summary.add(category: .colors, correct: true)  // 1.0
        XCTAssertEqual(summary.score(.counting), 0.25)
        XCTAssertEqual(summary.overall, 0.625, accuracy: 1e-12)
        XCTAssertTrue(summary.json.hasPrefix("{\"overall\": 0.625000, \"images\": 5"), summary.json)
    }

    func testMetadataRoundTripsAndMatchesGenEvalFormat() throws {
        let record = MetadataRecord.counting(.cross, 4)
        XCTAssertEqual(
            record.jsonLine,
            #"{"tag": "counting", "include": [{"class": "cross", "count": 4}], "exclude": [{"class": "cross", "count": 5}], "prompt": "a photo of four crosses"}"#
        )
        let position = MetadataRecord.position(.triangle, .below, .circle)
        XCTAssertEqual(
            position.jsonLine,
            #"{"tag": "position", "include": [{"class": "circle", "count": 1}, {"class": "triangle", "count": 1, "position": ["below", 0]}], "prompt": "a photo of a triangle below a circle"}"#
        )
        for category in Category.allCases {
            for record in promptSpace(category) {
                XCTAssertEqual(try MetadataRecord.parse(jsonLine: record.jsonLine, line: 1), record)
            }
        }
    }

    func testBadMetadataLinesNameTheirLine() {
        let good = MetadataRecord.singleObject(.circle).jsonLine
        let cases: [(String, String)] = [
            ("{not json", "metadata line 3: not a JSON object"),
            (#"{"tag": "counting", "include": [{"class": "dog", "count": 2}], "prompt": "x"}"#, "metadata line 3: include[0]: unknown class 'dog'"),
            (#"{"include": [{"class": "circle", "count": 1}], "prompt": "x"}"#, "metadata line 3: missing string \"tag\""),
            (
                #"{"tag": "position", "include": [{"class": "circle", "count": 1, "position": ["left of", 0]}], "prompt": "x"}"#,
                "metadata line 3: include[0]: position target 0 must name an earlier include clause"
            ),
            (
                #"{"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "brown"}], "prompt": "x"}"#,
                "metadata line 3: include[0]: unknown color brown"
            ),
            (
                #"{"tag": "colors", "include": [{"class": "circle", "count": 0}], "prompt": "x"}"#,
                "metadata line 3: include[0] needs an integer \"count\" in 1...64"
            ),
        ]
        for (bad, message) in cases {
            XCTAssertThrowsError(try parseMetadataLines(good + "\n\n" + bad + "\n" + good)) { error in
                XCTAssertEqual("\(error)", message)
            }
        }
    }
}
