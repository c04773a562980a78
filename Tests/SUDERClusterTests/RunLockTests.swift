import XCTest

@testable import ClusterRuntime

final class RunLockTests: XCTestCase {
    private func runDirectory() -> URL {
        let directory = temporaryDirectory("run-lock")
        addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
        return directory
    }

    private func writeLock(_ holder: RunLock.Holder, in directory: URL, age seconds: Int = 0) throws -> URL {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = directory.appendingPathComponent(RunLock.fileName)
        try holder.text.write(to: url, atomically: false, encoding: .utf8)
        let then = Date().addingTimeInterval(-Double(seconds))
        try FileManager.default.setAttributes([.modificationDate: then], ofItemAtPath: url.path)
        return url
    }

    /// A pid that ran and ended.
    private func endedPid() throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/true")
        try process.run()
        process.waitUntilExit()
        return process.processIdentifier
    }

    func testASecondJobIsRefusedNamingTheHolder() throws {
        let directory = runDirectory()
        let (lock, note) = try RunLock.acquire(directory, refreshing: false)
        XCTAssertNil(note)
        let text = try String(contentsOf: directory.appendingPathComponent(RunLock.fileName), encoding: .utf8)
        XCTAssertTrue(text.contains("pid \(getpid())") && text.contains("host \(ProcessInfo.processInfo.hostName)"), text)

        let second = RunLock.Holder(host: "node-b", pid: 4242, job: "991", started: "2026-11-29T21:00:00Z")
        XCTAssertThrowsError(try RunLock.acquire(directory, holder: second, refreshing: false)) { error in
            let message = "\(error)"
            XCTAssertTrue(error is AllRanksError, message)
            for part in ["in use by another job", "host \(ProcessInfo.processInfo.hostName)", "pid \(getpid())", lock.holder.started] {
                XCTAssertTrue(message.contains(part), "\(part) missing: \(message)")
            }
        }
        lock.release()
        XCTAssertFalse(FileManager.default.fileExists(atPath: lock.url.path))
        let (taken, _) = try RunLock.acquire(directory, holder: second, refreshing: false)
        taken.release()
    }

    func testTheHolderIsNamedWithItsSlurmJobAndALiveHolderKeepsIt() throws {
        let directory = runDirectory()
        // pid 1 runs on every host: the lock of a live process on this host is held.
        let live = RunLock.Holder(host: ProcessInfo.processInfo.hostName, pid: 1, job: "123456", started: "2026-11-29T20:00:00Z")
        _ = try writeLock(live, in: directory)
        XCTAssertThrowsError(try RunLock.acquire(directory, refreshing: false)) { error in
            XCTAssertTrue("\(error)".contains("pid 1, Slurm job 123456, started 2026-11-29T20:00:00Z"), "\(error)")
        }
    }

    func testALockWhosePidEndedOnThisHostIsTakenOver() throws {
        let directory = runDirectory()
        let gone = RunLock.Holder(host: ProcessInfo.processInfo.hostName, pid: try endedPid(), job: "-", started: "2026-11-29T20:00:00Z")
        _ = try writeLock(gone, in: directory)
        let (lock, note) = try RunLock.acquire(directory, refreshing: false)
        defer { lock.release() }
        let message = try XCTUnwrap(note)
        XCTAssertTrue(message.contains("took over the stale lock of host") && message.contains("pid \(gone.pid) no longer runs"), message)
        XCTAssertTrue(try String(contentsOf: lock.url, encoding: .utf8).contains("pid \(getpid())"))
    }

    func testALockOnAnotherHostIsStaleOnlyWhenItsLeaseRanOut() throws {
        let directory = runDirectory()
        let elsewhere = RunLock.Holder(host: "node-elsewhere", pid: 77, job: "55", started: "2026-11-29T20:00:00Z")
        _ = try writeLock(elsewhere, in: directory, age: 60)
        XCTAssertThrowsError(try RunLock.acquire(directory, refreshing: false))
        _ = try writeLock(elsewhere, in: directory, age: RunLock.leaseSeconds + 100)
        let (lock, note) = try RunLock.acquire(directory, refreshing: false)
        defer { lock.release() }
        XCTAssertTrue(note?.contains("lease was last refreshed") == true, note ?? "no note")
    }

    func testReleaseLeavesAnotherHoldersLock() throws {
        let directory = runDirectory()
        let (lock, _) = try RunLock.acquire(directory, refreshing: false)
        let other = RunLock.Holder(host: "node-c", pid: 9, job: "-", started: "x")
        let url = try writeLock(other, in: directory)
        lock.release()
        XCTAssertEqual(try String(contentsOf: url, encoding: .utf8), other.text)
    }

    func testARequeuedSlurmJobTakesOverItsEarlierRunsLock() throws {
        let directory = runDirectory()
        // The earlier run died on another node a minute ago: its lease has not run out.
        let earlier = RunLock.Holder(host: "node-a", pid: 77, job: "4242", restart: 0, started: "2026-11-29T20:00:00Z")
        _ = try writeLock(earlier, in: directory, age: 60)
        let sameRun = RunLock.Holder(host: "node-b", pid: 78, job: "4242", restart: 0, started: "2026-11-29T20:01:00Z")
        XCTAssertThrowsError(try RunLock.acquire(directory, holder: sameRun, refreshing: false))
        let requeued = RunLock.Holder(host: "node-b", pid: 78, job: "4242", restart: 1, started: "2026-11-29T20:01:00Z")
        let (lock, note) = try RunLock.acquire(directory, holder: requeued, refreshing: false)
        defer { lock.release() }
        XCTAssertTrue(note?.contains("an earlier run of this Slurm job (restart 0; this is restart 1)") == true, note ?? "no note")
    }
}
