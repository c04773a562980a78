import XCTest

@testable import ClusterRuntime

final class MetricSumsTests: XCTestCase {
    func testMeanIsOverItemsNotOverAdds() {
        var metrics = MetricSums()
        metrics.add("loss", 3.0, count: 3)
        metrics.add("loss", 1.0, count: 1)
        XCTAssertEqual(metrics.mean("loss"), 1.0)
        XCTAssertNil(metrics.mean("missing"))
    }

    func testSingleProcessCollectivesAreIdentities() {
        let comm = SingleProcessCommunicator()
        var values: [Float] = [1, 2, 3]
        comm.allreduce(&values)
        XCTAssertEqual(values, [1, 2, 3])
        XCTAssertEqual(comm.gather([9, 8])!, [[9, 8]])
        XCTAssertEqual(comm.broadcast(bytes: [4, 5]), [4, 5])
    }
}
