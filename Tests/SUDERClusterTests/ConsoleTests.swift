import XCTest

@testable import ClusterRuntime

final class ConsoleTests: XCTestCase {
    /// Under Open MPI every rank's stdout is a pseudo-terminal, so only the launcher's word counts:
    /// a batch log must get periodic lines, not a redrawn bar.
    func testOpenMPIRanksTrustTheLauncherNotIsatty() {
        XCTAssertFalse(stdoutIsTerminal(environment: ["OMPI_COMM_WORLD_SIZE": "2"]))
        XCTAssertFalse(stdoutIsTerminal(environment: ["OMPI_COMM_WORLD_SIZE": "2", "SUDER_STDOUT_IS_TERMINAL": "0"]))
        XCTAssertTrue(stdoutIsTerminal(environment: ["OMPI_COMM_WORLD_SIZE": "2", "SUDER_STDOUT_IS_TERMINAL": "1"]))
    }
}
