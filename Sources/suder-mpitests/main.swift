import ClusterRuntime
import Foundation
import SUDERCluster

// Multi-rank checks, one per invocation: `mpirun -np N suder-mpitests <check>`. Every rank verifies
// its own part; the exit code is the verdict (Tests/mpi/run.sh runs them).

let checks: [String: (Communicator) -> Bool] = [
    // Every collective against answers each rank computes alone.
    "collectives": { comm in
        let results = communicatorChecks(comm)
        if comm.isRoot {
            for result in results { print("\(result.passed ? "ok    " : "FAILED") \(result.name)") }
        }
        return results.allSatisfy(\.passed)
    },
    // Checkpoint store under real ranks. It leaves stop-signal handlers installed, so it runs in
    // its own invocation.
    "checkpoint": { comm in checkpointChecks(comm: comm).allSatisfy(\.passed) },
    // Rank 1 dies by SIGKILL while the others wait in a collective: the launcher must end the job.
    "kill-rank": { comm in
        if comm.rank == 1 {
            usleep(300_000)
            kill(getpid(), SIGKILL)
        }
        _ = comm.allreduce(1, op: .sum)
        return false
    },
    // Rank 1 hits a fatal error alone: abortJob must take every rank down with it.
    "abort-rank": { comm in
        if comm.rank == 1 {
            usleep(300_000)
            comm.abortJob("deliberate failure on rank 1 for the test suite", code: 9)
        }
        comm.barrier()
        return false
    },
    // Offline comparisons of two stage runs (one process, no mpirun): see StageChecks.swift.
    "compare-checkpoints": { _ in compareCheckpoints(Array(CommandLine.arguments.dropFirst(2))) },
    "compare-metrics": { _ in compareMetrics(Array(CommandLine.arguments.dropFirst(2))) },
    "logits": { _ in printLogits(Array(CommandLine.arguments.dropFirst(2))) },
]

let name = CommandLine.arguments.dropFirst().first ?? ""
guard let check = checks[name] else {
    printError("usage: suder-mpitests <\(checks.keys.sorted().joined(separator: "|"))>")
    exit(2)
}
let comm = makeCommunicator()
comm.exitTogether(code: check(comm) ? 0 : 1)
