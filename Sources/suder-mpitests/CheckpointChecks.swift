import ClusterRuntime
import Foundation
import SUDERCluster

/// Multi-rank checks of the checkpoint store, for `mpirun -np 2` and `-np 3`. Each rank checks
/// what it got back against what it can compute alone, and every verdict is agreed across ranks.
/// Only rank 0 touches the disk; the directory lives under /tmp on rank 0's node.
func checkpointChecks(comm: Communicator) -> [(name: String, passed: Bool)] {
    var results: [(name: String, passed: Bool)] = []
    func record(_ name: String, _ localPass: Bool) {
        let passed = comm.allAgree(localPass)
        if comm.isRoot { print("\(passed ? "PASS" : "FAIL") checkpoint: \(name)") }
        results.append((name, passed))
    }

    let rootPath = comm.broadcast(bytes: Array("/tmp/suder-mpitests-checkpoint-\(getpid())".utf8))
    let directory = URL(fileURLWithPath: String(decoding: rootPath, as: UTF8.self))
    defer { if comm.isRoot { try? FileManager.default.removeItem(at: directory) } }
    let store = CheckpointStore(directory: directory, keepLast: 2, compressionLevel: 3, threads: 1, comm: comm)

    func checkpoint(step: Int) -> Checkpoint {
        let weights = (0..<1000).map { Float($0 % 97) * 0.01 + Float(step) }
        let header = CheckpointHeader(
            stage: "mpitests", step: step, configYAML: "ranks: \(comm.size)\n",
            tensors: [TensorEntry(name: "w", shape: [10, 100], byteOffset: 0)])
        return Checkpoint(header: header, sections: ["weights": floatsToBytes(weights), "data_position": [UInt8(step)]])
    }

    // 1. Save, load back: rank 0's checkpoint on every rank.
    var roundTrip = false
    do {
        try store.save(checkpoint(step: 1))
        try store.save(checkpoint(step: 2))
        if let loaded = try store.loadNewestValid() {
            roundTrip =
                loaded.checkpoint.header.step == 2
                && loaded.checkpoint.header.rankCount == comm.size
                && loaded.checkpoint.sections["weights"] == checkpoint(step: 2).sections["weights"]
                && loaded.checkpoint.sections["data_position"] == [2]
        }
    } catch {
        printError("rank \(comm.rank): \(error)")
    }
    record("save and load on \(comm.size) ranks", roundTrip)

    // 2. A write that fails on rank 0 (file size limit: EFBIG mid-write) fails on every rank with
    //    rank 0's message, and the earlier checkpoint still loads.
    var failureSeen = false
    var big = checkpoint(step: 3)
    var noise: UInt64 = 0x9E37_79B9_7F4A_7C15
    big.sections["padding"] = (0..<300_000).map { _ in  // xorshift: incompressible, so the limit is hit
        noise ^= noise << 13; noise ^= noise >> 7; noise ^= noise << 17
        return UInt8(truncatingIfNeeded: noise)
    }
    var saved = rlimit()
    var savedHandler: sighandler_t?
    if comm.isRoot {
        getrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved)
        var limited = saved
        limited.rlim_cur = 50_000
        savedHandler = signal(SIGXFSZ, SIG_IGN)  // EFBIG instead of death by SIGXFSZ
        setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limited)
    }
    do {
        try store.save(big)
    } catch let error as CheckpointError {
        failureSeen = error.kind == .writeFailed && error.description.contains("padding.zst")
    } catch {
        printError("rank \(comm.rank): unexpected \(error)")
    }
    if comm.isRoot {
        setrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved)
        signal(SIGXFSZ, savedHandler)
    }
    let intact = (try? store.loadNewestValid())??.checkpoint.header.step == 2
    record("failed write on rank 0 reported on every rank, earlier checkpoint intact", failureSeen && intact)

    // 3. NaN in the weights of the last rank only: nobody writes.
    var poisoned = checkpoint(step: 4)
    if comm.rank == comm.size - 1 {
        var weights = (try? poisoned.floats("weights")) ?? []
        weights[5] = .nan
        poisoned.sections["weights"] = floatsToBytes(weights)
    }
    var refused = false
    do {
        try store.save(poisoned)
    } catch let error as CheckpointError {
        refused = error.kind == .invalidInput
    } catch {}
    record("non-finite weights on one rank refused on every rank", refused)

    // 4. A torn newest checkpoint on rank 0's disk: every rank falls back to the previous one
    //    and gets rank 0's copy of it.
    var fellBack = false
    if comm.isRoot {
        let newest = directory.appendingPathComponent(CheckpointStore.directoryName(step: 2)).appendingPathComponent("weights.zst")
        if let bytes = try? Data(contentsOf: newest) { try? bytes.prefix(bytes.count / 2).write(to: newest) }
    }
    if let loaded = try? store.loadNewestValid() {
        fellBack = loaded.checkpoint.header.step == 1 && loaded.checkpoint.sections["data_position"] == [1] && loaded.notes.count == 1
    }
    record("torn newest checkpoint moved aside, previous one loaded on every rank", fellBack)

    // 5. A stop signal on the last rank only: every rank agrees to checkpoint and stop.
    StopSignals.install()
    if comm.rank == comm.size - 1 { raise(SIGUSR1) }
    let stop = StopSignals.shouldCheckpointAndStop(comm)
    record("stop signal on one rank stops every rank at the same step", stop && StopSignals.requested == (comm.rank == comm.size - 1))

    // 6. DONE marker, as rank 0 sees it, on every rank.
    func done() -> Bool? { try? comm.rootDecides { CheckpointStore.hasDoneMarker(directory) } }
    let doneBefore = done()
    let marked = (try? store.markDone(step: 2)) != nil
    record("DONE marker", doneBefore == false && marked && done() == true)

    // 7. Rank 0 decides: its answer and its error reach every rank unchanged.
    let answer = try? comm.rootDecides { "decided by rank \(comm.rank)" }
    var sameError = false
    do {
        _ = try comm.rootDecides { () throws -> Bool in throw AllRanksError("rank \(comm.rank) refuses", exitCode: 3) }
    } catch let error as AllRanksError {
        sameError = error.description == "rank 0 refuses" && error.exitCode == 3
    } catch {}
    record("rank 0's answer and error reach every rank", answer == "decided by rank 0" && sameError)

    return results
}
