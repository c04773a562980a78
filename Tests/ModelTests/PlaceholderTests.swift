import XCTest
@testable import Model
final class PlaceholderModelTests: XCTestCase { func testBuilds() { XCTAssertTrue(true) } }
