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

    /// A job resumed at step 90 of 100 that then took 10 s for 5 steps has 5 left at 2 s each:
    /// ETA 0:10, not the 0:01 that counting the 90 resumed steps as done in those 10 s would give.
    func testResumedProgressRatesOnlyThisRunsSteps() {
        let progress = ProgressReporter(label: "pretrain", total: 100, unit: "steps", resumedFrom: 90, output: nil, live: false, interval: 10)
        progress.advance(by: 5)
        let line = progress.render(now: progress.start.addingTimeInterval(10), detail: "")
        XCTAssertTrue(line.contains("95/100 (95%) 0.5 steps/s elapsed 0:10 eta 0:10"), line)
        // Log lines lead with the wall-clock date and time.
        XCTAssertNotNil(line.range(of: #"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] pretrain "#, options: .regularExpression), line)
    }

    /// `srun` without an MPI plugin starts N copies that MPI sees as N jobs of one rank.
    func testSlurmTasksThatMPIDoesNotJoinAreRefused() {
        let problem = unjoinedSlurmTasksProblem(mpiSize: 1, environment: ["SLURM_STEP_NUM_TASKS": "2"])
        XCTAssertTrue(problem?.contains("srun --mpi=pmix") == true, problem ?? "nil")
        XCTAssertNil(unjoinedSlurmTasksProblem(mpiSize: 2, environment: ["SLURM_STEP_NUM_TASKS": "2"]))
        XCTAssertNil(unjoinedSlurmTasksProblem(mpiSize: 1, environment: ["SLURM_STEP_NUM_TASKS": "1"]))
        XCTAssertNil(unjoinedSlurmTasksProblem(mpiSize: 1, environment: [:]))
        // mpirun -np 1 inside an allocation: the rank inherits the step of mpirun's daemons.
        XCTAssertNil(unjoinedSlurmTasksProblem(mpiSize: 1, environment: ["SLURM_STEP_NUM_TASKS": "2", "OMPI_COMM_WORLD_SIZE": "1"]))
    }

    /// mpirun's default binding gives a rank one core: two threads there would share it.
    func testMoreThreadsThanBoundCoresIsSaid() {
        let problem = threadsOutnumberCoresProblem(threads: 2, cores: [3])
        XCTAssertTrue(problem?.contains("may run on 1 core(s) (3)") == true, problem ?? "nil")
        XCTAssertTrue(problem?.contains("--map-by slot:PE=2") == true, problem ?? "nil")
        XCTAssertNil(threadsOutnumberCoresProblem(threads: 2, cores: [0, 1]))
        XCTAssertNil(threadsOutnumberCoresProblem(threads: 1, cores: [5]))
    }
}
