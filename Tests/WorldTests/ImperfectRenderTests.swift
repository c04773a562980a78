import XCTest

@testable import World

/// Damage to a code grid: only patches on or beside an object change, by seed, never outside
/// the codebook.
final class ImperfectRenderTests: XCTestCase {
    let background: Int32 = 0
    lazy var maker = ImperfectRenderMaker(codeCount: 10, backgroundCode: background, trainingPrompts: [:])

    /// An 8x8 grid with one 2x2 object (codes 3, 4, 5, 6) at columns 2-3, rows 2-3.
    var grid: [Int32] {
        var codes = [Int32](repeating: background, count: 64)
        codes[2 * 8 + 2] = 3; codes[2 * 8 + 3] = 4; codes[3 * 8 + 2] = 5; codes[3 * 8 + 3] = 6
        return codes
    }

    func testDamageTouchesOnlyPatchesOnOrBesideObjects() {
        let onOrBeside = Set([
            2 * 8 + 2, 2 * 8 + 3, 3 * 8 + 2, 3 * 8 + 3,
            1 * 8 + 2, 1 * 8 + 3, 4 * 8 + 2, 4 * 8 + 3, 2 * 8 + 1, 3 * 8 + 1, 2 * 8 + 4, 3 * 8 + 4,
        ])
        var random = SplitMix64RNG(seed: 3)
        var changedAnywhere = Set<Int>()
        for _ in 0..<500 {
            let damaged = maker.damage(grid, using: &random)
            XCTAssertEqual(damaged.count, 64)
            XCTAssertTrue(damaged.allSatisfy { (0..<10).contains($0) })
            for index in damaged.indices where damaged[index] != grid[index] { changedAnywhere.insert(index) }
        }
        XCTAssertEqual(changedAnywhere, onOrBeside, "over 500 draws every patch on or beside the object changes at least once, and no other")
    }

    func testDamageIsDeterministicBySeedAndLeavesEmptyGridsAlone() {
        var a = SplitMix64RNG(seed: 9), b = SplitMix64RNG(seed: 9), c = SplitMix64RNG(seed: 10)
        let draws = (0..<20).map { _ in maker.damage(grid, using: &a) }
        XCTAssertEqual(draws, (0..<20).map { _ in maker.damage(grid, using: &b) })
        XCTAssertNotEqual(draws, (0..<20).map { _ in maker.damage(grid, using: &c) })
        let empty = [Int32](repeating: background, count: 64)
        XCTAssertEqual(maker.damage(empty, using: &a), empty)
    }

    /// A red 12-pixel square at (4, 4) (144 pixels): one erased 4x4 patch (IoU 128/144) leaves
    /// it intact, two (112/144) break it; a stray red patch beside it widens the union, a blue one
    /// or damage far away does not count. The label follows: its own prompt, else "a photo of
    /// nothing".
    func testObjectsBreakByWhatSurvivesOfThemAndLabelsFollow() {
        let square = SceneObject(shape: .square, color: .red, x: 4, y: 4, size: 12)
        let scene = Scene(objects: [square])
        func intact(_ patches: [(x: Int, y: Int, color: (r: UInt8, g: UInt8, b: UInt8))]) -> [SceneObject] {
            var image = renderScene(scene, canvasSize: 32)
            for patch in patches {
                for y in patch.y..<(patch.y + 4) {
                    for x in patch.x..<(patch.x + 4) {
                        let offset = 3 * (y * 32 + x)
                        image.pixels[offset] = patch.color.r; image.pixels[offset + 1] = patch.color.g; image.pixels[offset + 2] = patch.color.b
                    }
                }
            }
            return maker.intactObjects(scene: scene, damaged: image, patchSize: 4)
        }
        let red = ObjectColor.red.rgb, blue = ObjectColor.blue.rgb
        XCTAssertEqual(intact([]), [square])
        XCTAssertEqual(intact([(8, 8, backgroundRGB)]), [square], "one of nine patches erased")
        XCTAssertEqual(intact([(8, 8, backgroundRGB), (4, 4, backgroundRGB)]), [], "two of nine patches erased")
        XCTAssertEqual(intact([(8, 8, blue), (4, 4, blue)]), [], "two patches in another colour")
        XCTAssertEqual(intact([(16, 4, red), (16, 8, red), (16, 12, red)]), [], "a red strip beside it: 144/192")
        XCTAssertEqual(intact([(16, 4, blue), (16, 8, blue), (16, 12, blue)]), [square], "a blue strip beside it is not the square")
        XCTAssertEqual(intact([(24, 24, red), (8, 8, backgroundRGB)]), [square], "damage away from the object does not count")

        var random = SplitMix64RNG(seed: 1)
        let record = MetadataRecord.colors(.red, .square)
        XCTAssertEqual(maker.prompt(intact: [square], original: record, using: &random).text, record.prompt)
        XCTAssertEqual(maker.prompt(intact: [], original: record, using: &random).text, ImperfectRenderMaker.nothingPrompt)
        let withTraining = ImperfectRenderMaker(
            codeCount: 10, backgroundCode: background,
            trainingPrompts: [.singleObject: [.singleObject(.circle), .singleObject(.square)]])
        let other = withTraining.prompt(intact: [square], original: .twoObject(.square, .circle), using: &random)
        XCTAssertEqual(other.source, .other)
        XCTAssertEqual(other.text, "a photo of a square", "the circle broke; the intact square is described")
    }

    func testScenesSatisfyRecordsByTheirTrueObjects() {
        let left = SceneObject(shape: .circle, color: .red, x: 2, y: 12, size: 8)
        let right = SceneObject(shape: .square, color: .blue, x: 20, y: 12, size: 8)
        XCTAssertTrue(sceneSatisfies(.position(.circle, .leftOf, .square), objects: [left, right]))
        XCTAssertFalse(sceneSatisfies(.position(.circle, .rightOf, .square), objects: [left, right]))
        XCTAssertTrue(sceneSatisfies(.colorAttr(.red, .circle, .blue, .square), objects: [right, left]))
        XCTAssertFalse(sceneSatisfies(.colorAttr(.blue, .circle, .red, .square), objects: [left, right]))
        let third = SceneObject(shape: .circle, color: .red, x: 2, y: 2, size: 7)
        XCTAssertTrue(sceneSatisfies(.counting(.circle, 2), objects: [left, third]))
        XCTAssertFalse(
            sceneSatisfies(.counting(.circle, 2), objects: [left, third, SceneObject(shape: .circle, color: .red, x: 20, y: 2, size: 7)]),
            "three circles fail the exclude clause")
        XCTAssertFalse(sceneSatisfies(.counting(.circle, 3), objects: [left, third]))
    }
}
