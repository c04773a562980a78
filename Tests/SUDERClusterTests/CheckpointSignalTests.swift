import XCTest

@testable import ClusterRuntime

/// Signal handlers are process-wide and the fallback path ends the process, so each case runs in
/// a forked child that reports through its exit status.
final class CheckpointSignalTests: XCTestCase {
    /// Runs `child` in a forked process and returns its exit status (or 128 + signal number).
    private func statusOfChild(_ child: @escaping () -> Int32) -> Int32 {
        let pid = fork()
        if pid == 0 { _exit(child()) }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        let signalled = status & 0x7f
        return signalled == 0 ? (status >> 8) & 0xff : 128 + signalled
    }

    func testNoSignalMeansKeepGoing() {
        let status = statusOfChild {
            StopSignals.install()
            return !StopSignals.requested && !StopSignals.shouldCheckpointAndStop(SingleProcessCommunicator()) ? 0 : 1
        }
        XCTAssertEqual(status, 0)
    }

    func testOneSignalAsksToCheckpointAndStop() {
        for signal in [SIGUSR1, SIGTERM] {
            let status = statusOfChild {
                StopSignals.install()
                raise(signal)
                guard StopSignals.requested, StopSignals.receivedSignal == signal else { return 1 }
                guard StopSignals.shouldCheckpointAndStop(SingleProcessCommunicator()) else { return 2 }
                return RequeueExitCode.checkpointed.rawValue
            }
            XCTAssertEqual(status, 85, "signal \(signal)")
        }
    }

    func testSecondSignalExitsWithoutCheckpoint() {
        let status = statusOfChild {
            StopSignals.install()
            raise(SIGUSR1)
            usleep(UInt32(StopSignals.duplicateWindowMilliseconds + 200) * 1000)
            raise(SIGTERM)
            return 0
        }
        XCTAssertEqual(status, RequeueExitCode.stoppedWithoutCheckpoint.rawValue)
    }

    /// Slurm and mpirun both deliver the same SIGTERM: that is one request, not two.
    func testTheSameSignalDeliveredTwiceAtOnceIsOneRequest() {
        let status = statusOfChild {
            StopSignals.install()
            raise(SIGTERM)
            raise(SIGTERM)
            return StopSignals.requested ? RequeueExitCode.checkpointed.rawValue : 1
        }
        XCTAssertEqual(status, RequeueExitCode.checkpointed.rawValue)
    }

    func testGracePeriodEndsAStuckProcess() {
        let start = Date()
        let status = statusOfChild {
            StopSignals.install(graceSeconds: 1)
            raise(SIGUSR1)
            for _ in 0..<10 { sleep(1) }  // a step that never reaches its boundary
            return 0
        }
        let elapsed = Date().timeIntervalSince(start)
        XCTAssertEqual(status, RequeueExitCode.stoppedWithoutCheckpoint.rawValue)
        XCTAssertLessThan(elapsed, 5, "the grace deadline, not the 10 s loop, ended the child")
    }
}
