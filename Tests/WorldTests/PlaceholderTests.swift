import XCTest
@testable import World
final class PlaceholderWorldTests: XCTestCase { func testBuilds() { XCTAssertTrue(true) } }
