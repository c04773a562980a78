import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Exit codes the Slurm scripts act on.
public enum RequeueExitCode: Int32 {
    /// The stage wrote a checkpoint at a step boundary and stopped (time limit near, or
    /// preemption): requeue the job and it resumes from that checkpoint.
    case checkpointed = 85
    /// A second stop signal, or the grace period after the first, ended the process before it
    /// could checkpoint. Nothing is corrupt (writes are atomic); a requeue resumes from the
    /// previous checkpoint and loses the steps since.
    case stoppedWithoutCheckpoint = 86
}

/// SIGUSR1 (Slurm's warning before the time limit, e.g. `--signal=USR1@120`) and SIGTERM
/// (preemption, scancel) ask the job to checkpoint and stop at the next step boundary.
///
/// The handler only counts: it runs between any two instructions of the training loop, so it may
/// touch nothing but preallocated memory and async-signal-safe calls. The loop asks
/// `shouldCheckpointAndStop(comm)` once per step; that one allreduce makes every rank stop at the
/// same step even when only some ranks got the signal. A second signal, or `graceSeconds` passing
/// without the process ending, exits at once with `stoppedWithoutCheckpoint`. A signal within
/// `duplicateWindowMilliseconds` of the first is the same request delivered twice (Slurm signals
/// every process of the job and `mpirun` forwards the same signal to its ranks) and is ignored.
public enum StopSignals {
    /// Installs the handlers (once per process; later calls only update the grace period).
    /// `graceSeconds` = 0 means no deadline after the first signal.
    public static func install(graceSeconds: Int = 0) {
        if state == nil {
            // [0] signals received, [1] last signal number, [2] grace seconds,
            // [3] monotonic milliseconds of the first signal.
            let storage = UnsafeMutablePointer<Int64>.allocate(capacity: 4)
            storage.initialize(repeating: 0, count: 4)
            state = storage
        }
        state![2] = Int64(graceSeconds)
        var action = sigaction()
        #if os(Linux)
            action.__sigaction_handler.sa_handler = handleStopSignal
        #else
            action.__sigaction_u.__sa_handler = handleStopSignal
        #endif
        // Block the other stop signals while one is handled, so the count is never raced.
        sigemptyset(&action.sa_mask)
        for signal in [SIGUSR1, SIGTERM, SIGALRM] { sigaddset(&action.sa_mask, signal) }
        action.sa_flags = SA_RESTART
        for signal in [SIGUSR1, SIGTERM, SIGALRM] { sigaction(signal, &action, nil) }
    }

    /// True once this rank received SIGUSR1 or SIGTERM.
    public static var requested: Bool { (state?[0] ?? 0) > 0 }

    /// The last stop signal received (SIGUSR1 or SIGTERM), 0 if none.
    public static var receivedSignal: Int32 { Int32(state?[1] ?? 0) }

    public static let duplicateWindowMilliseconds: Int64 = 1000

    /// Collective, once per step at a step boundary: true on every rank if any rank was asked
    /// to stop. The caller then saves a checkpoint and exits with `RequeueExitCode.checkpointed`.
    public static func shouldCheckpointAndStop(_ comm: Communicator) -> Bool {
        comm.allreduce(requested ? 1 : 0, op: .max) == 1
    }
}

/// Preallocated before any handler is installed; the handler only reads the pointer.
private var state: UnsafeMutablePointer<Int64>?

private func handleStopSignal(_ signal: Int32) {
    guard let state else { return }
    if signal == SIGALRM {
        writeToStandardError("suder: grace period after the stop signal ran out; exiting without a new checkpoint (earlier ones are intact)\n")
        _exit(RequeueExitCode.stoppedWithoutCheckpoint.rawValue)
    }
    // clock_gettime is async-signal-safe.
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    let milliseconds = Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    if state[0] == 0 {
        state[0] = 1
        state[1] = Int64(signal)
        state[3] = milliseconds
        if state[2] > 0 { alarm(UInt32(clamping: state[2])) }
        return
    }
    if milliseconds - state[3] < StopSignals.duplicateWindowMilliseconds { return }
    writeToStandardError("suder: second stop signal; exiting without a new checkpoint (earlier ones are intact)\n")
    _exit(RequeueExitCode.stoppedWithoutCheckpoint.rawValue)
}

/// write(2) of a compile-time string: async-signal-safe, no allocation.
private func writeToStandardError(_ message: StaticString) {
    _ = write(STDERR_FILENO, message.utf8Start, message.utf8CodeUnitCount)
}
