import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `<run-dir>/LOCK`: one job at a time in a run directory. Two jobs in one directory delete each
/// other's temporary checkpoints and interleave their metrics, so every stage command takes the
/// lock before writing anything and a second job is refused, naming the holder.
///
/// The lock is created whole and atomically: written under a temporary name, then hard-linked to
/// `LOCK` (link(2) fails if the name exists, also on NFS, where O_EXCL was not always atomic).
/// A lock is stale when its holder is gone: on the same host, its pid no longer runs; on any host,
/// its modification time (the lease, refreshed every `refreshSeconds` while the job runs) is older
/// than `leaseSeconds`, which also covers a holder on another node that died with its node; under
/// Slurm, a lock of an earlier run of the same job (a requeue keeps the job id and counts restarts)
/// is stale at once. A stale lock is taken over with a note in the log. The holder removes the lock when its process
/// exits (normal end, errors, the requeue exit 85); a killed holder leaves it stale.
public final class RunLock {
    public static let fileName = "LOCK"
    public static let refreshSeconds = 60
    /// Ten refreshes missed: generous for a slow shared file system or clocks a few minutes apart.
    public static let leaseSeconds = 600

    /// Who holds a lock, as its file says.
    public struct Holder: Equatable {
        public var host: String
        public var pid: Int32
        /// The Slurm job id, or "-" outside Slurm.
        public var job: String
        /// Slurm's restart count of the job (`SLURM_RESTART_COUNT`: a requeued job keeps its id).
        public var restart: Int
        /// ISO 8601, UTC.
        public var started: String

        public init(host: String, pid: Int32, job: String, restart: Int = 0, started: String) {
            self.host = host
            self.pid = pid
            self.job = job
            self.restart = restart
            self.started = started
        }

        /// This process.
        public static func current(environment: [String: String] = ProcessInfo.processInfo.environment) -> Holder {
            let formatter = ISO8601DateFormatter()
            return Holder(
                host: ProcessInfo.processInfo.hostName, pid: getpid(), job: environment["SLURM_JOB_ID"] ?? "-",
                restart: environment["SLURM_RESTART_COUNT"].flatMap { Int($0) } ?? 0, started: formatter.string(from: Date()))
        }

        var text: String { "host \(host)\npid \(pid)\nslurm_job \(job)\nslurm_restart \(restart)\nstarted \(started)\n" }

        init(text: String) {
            var fields: [String: String] = [:]
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: " ", maxSplits: 1)
                if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
            }
            self.init(
                host: fields["host"] ?? "?", pid: fields["pid"].flatMap { Int32($0) } ?? 0, job: fields["slurm_job"] ?? "?",
                restart: fields["slurm_restart"].flatMap { Int($0) } ?? 0, started: fields["started"] ?? "?")
        }

        public var description: String {
            "host \(host), pid \(pid)\(job == "-" ? "" : ", Slurm job \(job)"), started \(started)"
        }
    }

    public let url: URL
    public let holder: Holder
    private var refresher: DispatchSourceTimer?

    private init(url: URL, holder: Holder) {
        self.url = url
        self.holder = holder
    }

    /// Takes the lock of `runDirectory` (creating the directory) for `holder`, or throws an
    /// `AllRanksError` naming the job that holds it. Returns the lock and, when a stale lock was
    /// taken over, a note saying whose and why.
    public static func acquire(
        _ runDirectory: URL, holder: Holder = .current(), now: Date = Date(), refreshing: Bool = true
    ) throws -> (lock: RunLock, note: String?) {
        do {
            try FileManager.default.createDirectory(at: runDirectory, withIntermediateDirectories: true)
        } catch {
            throw AllRanksError("cannot create the run directory \(runDirectory.path): \(error.localizedDescription)")
        }
        let url = runDirectory.appendingPathComponent(fileName)
        var note: String?
        // Each pass either takes the lock, refuses, or removes a stale one; a few passes settle races.
        for _ in 0..<4 {
            if try create(url, holder) {
                let lock = RunLock(url: url, holder: holder)
                if refreshing { lock.startRefreshing() }
                return (lock, note)
            }
            guard let existing = try? String(contentsOf: url, encoding: .utf8) else { continue }
            let other = Holder(text: existing)
            guard let reason = staleness(of: other, at: url, now: now, for: holder) else {
                throw AllRanksError(
                    "the run directory \(runDirectory.path) is in use by another job (\(other.description); lock file \(url.path)); "
                        + "wait for it to end or use another --run-dir")
            }
            if try removeStale(url, expected: existing, as: holder) {
                note = "took over the stale lock of \(other.description): \(reason)"
            }
        }
        throw AllRanksError("cannot take the lock \(url.path): other jobs keep creating and removing it")
    }

    /// Why the holder is known to be gone, or nil if it may still run.
    static func staleness(of other: Holder, at url: URL, now: Date, for holder: Holder) -> String? {
        // Slurm runs one instance of a job at a time: a lock of an earlier run of this job (killed
        // before it could release it, perhaps on another node) is stale at once.
        if other.job != "-", other.job == holder.job, other.restart < holder.restart {
            return "it is an earlier run of this Slurm job (restart \(other.restart); this is restart \(holder.restart))"
        }
        if other.host == ProcessInfo.processInfo.hostName, other.pid > 0, !processRuns(other.pid) {
            return "pid \(other.pid) no longer runs on this host"
        }
        var info = stat()
        guard stat(url.path, &info) == 0 else { return nil }
        let age = Int(now.timeIntervalSince1970) - Int(info.st_mtim.tv_sec)
        return age > leaseSeconds ? "its lease was last refreshed \(age) s ago (lease \(leaseSeconds) s)" : nil
    }

    /// Whether `pid` names a live process. A zombie (ended, not yet reaped: a container whose
    /// first process does not reap orphans keeps them) counts as ended.
    static func processRuns(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let afterName = stat.range(of: ") ", options: .backwards)
        else { return true }
        return stat[afterName.upperBound...].first != "Z"
    }

    /// Writes the holder's text to a temporary file and links it to `url`: true if the lock was
    /// created, false if `url` exists.
    private static func create(_ url: URL, _ holder: Holder) throws -> Bool {
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(fileName).tmp-\(holder.host)-\(holder.pid)")
        unlink(temporary.path)
        defer { unlink(temporary.path) }
        do {
            try writeFileDurably(temporary, Array(holder.text.utf8))
        } catch {
            throw AllRanksError("cannot write the lock \(url.path): \(error)")
        }
        if link(temporary.path, url.path) == 0 { return true }
        guard errno == EEXIST else { throw AllRanksError("cannot create the lock \(url.path): \(String(cString: strerror(errno)))") }
        return false
    }

    /// Moves a stale lock aside under a name of our own (rename is atomic: of two jobs taking it
    /// over, one gets it), and puts it back if it turns out to be a fresh lock that replaced the
    /// stale one meanwhile. True if the stale lock was removed.
    private static func removeStale(_ url: URL, expected: String, as holder: Holder) throws -> Bool {
        let aside = url.deletingLastPathComponent().appendingPathComponent(".\(fileName).stale-\(holder.host)-\(holder.pid)")
        guard rename(url.path, aside.path) == 0 else { return false }
        defer { unlink(aside.path) }
        guard (try? String(contentsOf: aside, encoding: .utf8)) == expected else {
            _ = link(aside.path, url.path)
            return false
        }
        return true
    }

    /// Renews the lease while the job runs (a timer on a background queue; no MPI involved).
    private func startRefreshing() {
        let timer = DispatchSource.makeTimerSource(queue: .global(qos: .utility))
        let path = url.path
        timer.schedule(deadline: .now() + .seconds(Self.refreshSeconds), repeating: .seconds(Self.refreshSeconds))
        timer.setEventHandler { _ = utimensat(AT_FDCWD, path, nil, 0) }
        timer.resume()
        refresher = timer
    }

    /// Removes the lock if it is still this holder's (a job that lost it to a takeover leaves the
    /// new holder's alone).
    public func release() {
        refresher?.cancel()
        refresher = nil
        guard (try? String(contentsOf: url, encoding: .utf8)) == holder.text else { return }
        unlink(url.path)
    }

    /// The lock this process holds, released by `exit` (every way a job ends normally, with an
    /// error or with the requeue code goes through `exit`).
    public static func holdUntilExit(_ lock: RunLock) {
        if !releaseAtExitRegistered { atexit { heldUntilExit?.release() } }
        releaseAtExitRegistered = true
        heldUntilExit = lock
    }
}

private var heldUntilExit: RunLock?
private var releaseAtExitRegistered = false
