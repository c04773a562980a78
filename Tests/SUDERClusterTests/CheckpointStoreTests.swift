import CZstd
import XCTest

@testable import ClusterRuntime

/// A small model-like checkpoint: two tensors in "weights", Adam moments, a data position.
func sampleCheckpoint(step: Int, seed: UInt64 = 1) -> Checkpoint {
    var generator = SplitMix64(seed: seed &+ UInt64(step))
    let weights = (0..<96).map { _ in Float(generator.nextGaussian() * 0.02) }
    let tensors = [
        TensorEntry(name: "embedding", shape: [8, 8], byteOffset: 0),
        TensorEntry(name: "head", shape: [32], byteOffset: 64 * 4),
    ]
    let header = CheckpointHeader(stage: "pretrain", step: step, configYAML: "model:\n  dim: 8\n", tensors: tensors)
    return Checkpoint(
        header: header,
        sections: [
            "weights": floatsToBytes(weights),
            "adam_m": floatsToBytes(weights.map { $0 * 0.1 }),
            "adam_v": floatsToBytes(weights.map { $0 * $0 }),
            "data_position": Array("epoch=0 index=\(step)".utf8),
        ])
}

/// Deterministic test randomness.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func nextGaussian() -> Double {
        let u1 = Double(next() >> 11 | 1) / Double(1 << 53)
        let u2 = Double(next() >> 11) / Double(1 << 53)
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
}

func temporaryDirectory(_ name: String) -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("suder-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try? FileManager.default.removeItem(at: url)
    return url
}

final class CheckpointStoreTests: XCTestCase {
    let comm = SingleProcessCommunicator()

    func testSaveThenLoadRestoresEverySection() throws {
        let dir = temporaryDirectory("roundtrip")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(directory: dir, keepLast: 2, compressionLevel: 3, threads: 0, comm: comm)
        XCTAssertNil(try store.loadNewestValid(), "an empty directory is a fresh start")

        let saved = sampleCheckpoint(step: 10)
        try store.save(saved)
        let loaded = try XCTUnwrap(store.loadNewestValid())
        XCTAssertEqual(loaded.checkpoint.header.step, 10)
        XCTAssertEqual(loaded.checkpoint.header.stage, "pretrain")
        XCTAssertEqual(loaded.checkpoint.header.configYAML, saved.header.configYAML)
        XCTAssertEqual(loaded.checkpoint.header.tensors, saved.header.tensors)
        XCTAssertEqual(loaded.checkpoint.header.rankCount, 1)
        for (name, bytes) in saved.sections { XCTAssertEqual(loaded.checkpoint.sections[name], bytes, name) }
        XCTAssertEqual(try loaded.checkpoint.floats("weights"), try saved.floats("weights"))
        var modelBuffer = [Float](repeating: 0, count: 96)
        try modelBuffer.withUnsafeMutableBufferPointer { try loaded.checkpoint.copyFloats("adam_m", into: $0) }
        XCTAssertEqual(modelBuffer, try saved.floats("adam_m"))
        var wrongSize = [Float](repeating: 0, count: 95)
        XCTAssertThrowsError(try wrongSize.withUnsafeMutableBufferPointer { try loaded.checkpoint.copyFloats("weights", into: $0) }) { error in
            XCTAssertTrue("\(error)".contains("model expects 95"), "\(error)")
        }
        XCTAssertTrue(loaded.notes.isEmpty)
        let latest = try String(contentsOf: dir.appendingPathComponent("latest"), encoding: .utf8)
        XCTAssertEqual(latest, "step-000000000010\n")
    }

    func testKeepsOnlyTheLastNAndLoadsTheNewest() throws {
        let dir = temporaryDirectory("rotation")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(directory: dir, keepLast: 2, comm: comm)
        for step in [1, 2, 3, 4] { try store.save(sampleCheckpoint(step: step)) }
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("step-") }.sorted()
        XCTAssertEqual(names, ["step-000000000003", "step-000000000004"])
        let loaded = try XCTUnwrap(store.loadNewestValid())
        XCTAssertEqual(loaded.checkpoint.header.step, 4)
    }

    func testSavingTheSameStepAgainReplacesIt() throws {
        let dir = temporaryDirectory("same-step")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(directory: dir, keepLast: 2, comm: comm)
        var first = sampleCheckpoint(step: 5), second = sampleCheckpoint(step: 5)
        first.sections["mark"] = [1]
        second.sections["mark"] = [2]
        try store.save(first)
        try store.save(second)
        XCTAssertEqual(try XCTUnwrap(store.loadNewestValid()).checkpoint.sections["mark"], [2])
    }

    /// Killed between moving the old step-N aside and renaming the new one into place.
    func testAnInterruptedReplaceIsUndoneOnResume() throws {
        let dir = temporaryDirectory("interrupted-replace")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(directory: dir, keepLast: 2, comm: comm)
        try store.save(sampleCheckpoint(step: 5))
        try FileManager.default.moveItem(
            at: dir.appendingPathComponent("step-000000000005"),
            to: dir.appendingPathComponent(".replaced-step-000000000005-123"))
        let loaded = try XCTUnwrap(store.loadNewestValid())
        XCTAssertEqual(loaded.checkpoint.header.step, 5)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), ["latest", "step-000000000005"])
    }

    func testSavingAnOlderStepThanAnExistingCheckpointIsRefused() throws {
        let dir = temporaryDirectory("older")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(directory: dir, keepLast: 2, comm: comm)
        try store.save(sampleCheckpoint(step: 9))
        XCTAssertThrowsError(try store.save(sampleCheckpoint(step: 3))) { error in
            XCTAssertEqual((error as? CheckpointError)?.kind, .invalidInput)
        }
    }

    /// The three ways the newest checkpoint goes bad: each is reported, moved aside and the previous
    /// checkpoint is used.
    func testCorruptNewestCheckpointIsMovedAsideAndThePreviousUsed() throws {
        let damages: [(String, (URL) throws -> Void)] = [
            ("flipped byte in weights", { dir in try flipByte(in: dir.appendingPathComponent("weights.zst"), at: 40) }),
            ("flipped byte in header", { dir in try flipByte(in: dir.appendingPathComponent("header.bin"), at: 30) }),
            ("truncated section", { dir in try truncate(dir.appendingPathComponent("adam_v.zst"), by: 7) }),
            ("truncated header", { dir in try truncate(dir.appendingPathComponent("header.bin"), by: 3) }),
            ("missing section", { dir in try FileManager.default.removeItem(at: dir.appendingPathComponent("adam_m.zst")) }),
            ("missing header", { dir in try FileManager.default.removeItem(at: dir.appendingPathComponent("header.bin")) }),
            // Opening a FIFO for reading blocks until a writer comes: the loader must not wait.
            ("FIFO for a section", { dir in try replaceWithFIFO(dir.appendingPathComponent("weights.zst")) }),
            ("FIFO for the header", { dir in try replaceWithFIFO(dir.appendingPathComponent("header.bin")) }),
            (
                "directory for a section",
                { dir in
                    try FileManager.default.removeItem(at: dir.appendingPathComponent("adam_m.zst"))
                    try FileManager.default.createDirectory(at: dir.appendingPathComponent("adam_m.zst"), withIntermediateDirectories: false)
                }
            ),
        ]
        for (what, damage) in damages {
            let dir = temporaryDirectory("corrupt")
            defer { try? FileManager.default.removeItem(at: dir) }
            let store = CheckpointStore(directory: dir, keepLast: 3, comm: comm)
            try store.save(sampleCheckpoint(step: 1))
            try store.save(sampleCheckpoint(step: 2))
            try damage(dir.appendingPathComponent("step-000000000002"))

            let loaded = try XCTUnwrap(store.loadNewestValid(), what)
            XCTAssertEqual(loaded.checkpoint.header.step, 1, what)
            XCTAssertEqual(loaded.notes.count, 1, what)
            XCTAssertTrue(loaded.notes[0].contains("step-000000000002"), "\(what): \(loaded.notes)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("step-000000000002").path), what)
            let aside = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("corrupt").path)
            XCTAssertEqual(aside.count, 1, what)
            XCTAssertTrue(aside[0].hasPrefix("step-000000000002."), what)
        }
    }

    func testNoValidCheckpointIsAnErrorNotAFreshStart() throws {
        let dir = temporaryDirectory("none-valid")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(directory: dir, keepLast: 3, comm: comm)
        try store.save(sampleCheckpoint(step: 1))
        try flipByte(in: dir.appendingPathComponent("step-000000000001/weights.zst"), at: 20)
        XCTAssertThrowsError(try store.loadNewestValid()) { error in
            XCTAssertEqual((error as? CheckpointError)?.kind, .noValidCheckpoint, "\(error)")
        }
        // Again, now that the bad one sits in corrupt/: still an error.
        XCTAssertThrowsError(try store.loadNewestValid()) { error in
            XCTAssertEqual((error as? CheckpointError)?.kind, .noValidCheckpoint, "\(error)")
            XCTAssertTrue("\(error)".contains("corrupt"), "\(error)")
        }
    }

    func testNonFiniteWeightsAreNeverWritten() throws {
        let dir = temporaryDirectory("nan")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(directory: dir, keepLast: 3, comm: comm)
        var checkpoint = sampleCheckpoint(step: 1)
        var weights = try checkpoint.floats("weights")
        weights[17] = .nan
        checkpoint.sections["weights"] = floatsToBytes(weights)
        XCTAssertThrowsError(try store.save(checkpoint)) { error in
            XCTAssertEqual((error as? CheckpointError)?.kind, .invalidInput)
        }
        XCTAssertNil(try store.loadNewestValid())
    }

    func testBadTensorTablesAndSectionNamesAreRefusedBeforeWriting() throws {
        let dir = temporaryDirectory("bad-input")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(directory: dir, keepLast: 3, comm: comm)
        var overflowing = sampleCheckpoint(step: 1)
        overflowing.header.tensors[0].shape = [Int.max, 2]
        var pastTheEnd = sampleCheckpoint(step: 1)
        pastTheEnd.header.tensors[1].shape = [33]
        var pathName = sampleCheckpoint(step: 1)
        pathName.sections["../escape"] = [1]
        var ragged = sampleCheckpoint(step: 1)
        ragged.sections["weights"]!.append(0)
        ragged.header.tensors = []
        for bad in [overflowing, pastTheEnd, pathName, ragged] {
            XCTAssertThrowsError(try store.save(bad)) { error in
                XCTAssertEqual((error as? CheckpointError)?.kind, .invalidInput, "\(error)")
            }
        }
        XCTAssertNil(try store.loadNewestValid())
    }

    func testLeftoverTemporaryFromACrashedSaveIsIgnoredAndCleaned() throws {
        let dir = temporaryDirectory("crashed")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(directory: dir, keepLast: 3, comm: comm)
        try store.save(sampleCheckpoint(step: 1))
        let stale = dir.appendingPathComponent(".tmp-step-000000000002-999")
        try FileManager.default.createDirectory(at: stale, withIntermediateDirectories: true)
        try Data([1, 2, 3]).write(to: stale.appendingPathComponent("weights.zst"))
        XCTAssertEqual(try XCTUnwrap(store.loadNewestValid()).checkpoint.header.step, 1)
        try store.save(sampleCheckpoint(step: 2))
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale.path))
    }

    /// A disk that fills up mid-write, imitated with a file size limit on this process (portable,
    /// no root): the write fails with EFBIG, the error names the file, earlier checkpoints stay.
    func testFileSizeLimitDuringWriteLeavesEarlierCheckpointsIntact() throws {
        let dir = temporaryDirectory("fsize")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(directory: dir, keepLast: 3, compressionLevel: 1, comm: comm)
        try store.save(sampleCheckpoint(step: 1))

        var big = sampleCheckpoint(step: 2)
        var generator = SplitMix64(seed: 3)
        big.sections["noise"] = (0..<200_000).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        try withFileSizeLimit(100_000) {
            XCTAssertThrowsError(try store.save(big)) { error in
                let checkpointError = error as? CheckpointError
                XCTAssertEqual(checkpointError?.kind, .writeFailed, "\(error)")
                XCTAssertTrue(checkpointError?.file.contains("noise.zst") ?? false, "\(error)")
            }
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        XCTAssertEqual(names, ["latest", "step-000000000001"], "the failed temporary is removed")
        XCTAssertEqual(try XCTUnwrap(store.loadNewestValid()).checkpoint.header.step, 1)
    }

    /// A real full disk: a 1 MiB tmpfs. Needs root and mount(2) (skipped where unavailable).
    func testFullTmpfsLeavesEarlierCheckpointsIntact() throws {
        let mountPoint = temporaryDirectory("tmpfs")
        try FileManager.default.createDirectory(at: mountPoint, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: mountPoint) }
        guard getuid() == 0, runTool("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mountPoint.path]) == 0 else {
            throw XCTSkip("cannot mount a tmpfs here")
        }
        defer { _ = runTool("/bin/umount", [mountPoint.path]) }
        let dir = mountPoint.appendingPathComponent("stage")
        let store = CheckpointStore(directory: dir, keepLast: 3, compressionLevel: 1, comm: comm)
        try store.save(sampleCheckpoint(step: 1))
        var big = sampleCheckpoint(step: 2)
        var generator = SplitMix64(seed: 4)
        big.sections["noise"] = (0..<2_000_000).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        XCTAssertThrowsError(try store.save(big)) { error in
            XCTAssertEqual((error as? CheckpointError)?.kind, .writeFailed, "\(error)")
            XCTAssertTrue("\(error)".contains("No space left"), "\(error)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), ["latest", "step-000000000001"])
        XCTAssertEqual(try XCTUnwrap(store.loadNewestValid()).checkpoint.header.step, 1)
        // Space is back after the failed temporary was removed: the next save works.
        try store.save(sampleCheckpoint(step: 3))
        XCTAssertEqual(try XCTUnwrap(store.loadNewestValid()).checkpoint.header.step, 3)
    }

    func testDoneMarker() throws {
        let dir = temporaryDirectory("done")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(directory: dir, keepLast: 1, comm: comm)
        XCTAssertFalse(CheckpointStore.hasDoneMarker(dir))
        try store.markDone(step: 42)
        XCTAssertTrue(CheckpointStore.hasDoneMarker(dir))
        XCTAssertEqual(try String(contentsOf: dir.appendingPathComponent("DONE"), encoding: .utf8), "finished at step 42\n")
        XCTAssertEqual(try CheckpointStore.doneStep(in: dir), 42)
        try Data("finished\n".utf8).write(to: dir.appendingPathComponent("DONE"))
        XCTAssertThrowsError(try CheckpointStore.doneStep(in: dir)) { XCTAssertTrue("\($0)".contains("does not say"), "\($0)") }
    }

    /// A finished stage's reader gets exactly the step DONE records, never an earlier one.
    func testAReaderOfAFinishedStageGetsTheStepDoneRecordsOrAnError() throws {
        let dir = temporaryDirectory("reader")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(directory: dir, keepLast: 3, comm: comm)
        try store.save(sampleCheckpoint(step: 1))
        try store.save(sampleCheckpoint(step: 2))
        try store.markDone(step: 2)
        XCTAssertEqual(try XCTUnwrap(store.loadForConsumer()).checkpoint.header.step, 2)
        // A copy of step 1 under step 2's name is not the stage's final model.
        try FileManager.default.removeItem(at: dir.appendingPathComponent("step-000000000002"))
        try FileManager.default.copyItem(at: dir.appendingPathComponent("step-000000000001"), to: dir.appendingPathComponent("step-000000000002"))
        XCTAssertThrowsError(try store.loadForConsumer()) { XCTAssertTrue("\($0)".contains("holds step 1, but the stage finished at step 2"), "\($0)") }
        try FileManager.default.removeItem(at: dir.appendingPathComponent("step-000000000002"))
        XCTAssertThrowsError(try store.loadForConsumer()) { error in
            XCTAssertEqual((error as? CheckpointError)?.kind, .corrupt)
            XCTAssertTrue("\(error)".contains("damaged or missing"), "\(error)")
        }
        XCTAssertEqual(try listCheckpointDirectories(in: dir).map(\.step), [1], "nothing moved or removed")
    }
}

func flipByte(in url: URL, at offset: Int) throws {
    var bytes = [UInt8](try Data(contentsOf: url))
    bytes[min(offset, bytes.count - 1)] ^= 0x5A
    try Data(bytes).write(to: url)
}

/// Replaces a file with a named pipe that nobody writes to.
func replaceWithFIFO(_ url: URL) throws {
    try FileManager.default.removeItem(at: url)
    guard mkfifo(url.path, 0o644) == 0 else { throw CheckpointError(.writeFailed, url.path, "mkfifo failed (errno \(errno))") }
}

func truncate(_ url: URL, by count: Int) throws {
    let bytes = try Data(contentsOf: url)
    try bytes.prefix(bytes.count - count).write(to: url)
}

/// Runs `body` with RLIMIT_FSIZE lowered to `bytes` and SIGXFSZ ignored (so write(2) fails with
/// EFBIG instead of killing the process), then restores both.
func withFileSizeLimit(_ bytes: Int, _ body: () throws -> Void) rethrows {
    var saved = rlimit()
    getrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved)
    let previousHandler = signal(SIGXFSZ, SIG_IGN)
    var limited = saved
    limited.rlim_cur = rlim_t(bytes)
    setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limited)
    defer {
        setrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved)
        signal(SIGXFSZ, previousHandler)
    }
    try body()
}

@discardableResult
func runTool(_ executable: String, _ arguments: [String]) -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardError = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return -1 }
    process.waitUntilExit()
    return process.terminationStatus
}
