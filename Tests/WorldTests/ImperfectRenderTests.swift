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
}
