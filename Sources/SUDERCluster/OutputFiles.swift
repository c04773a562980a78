import ClusterRuntime
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A file a command writes again on every rerun (a report, a summary). The rerun replaces its own
/// earlier output, recognised by the text every such file begins with, and nothing else.
public struct OutputFileKind: Sendable {
    /// For messages, e.g. "Markdown report".
    public let name: String
    /// What every file of the kind begins with.
    public let signature: String
}

/// Refuses, before any work, the output file `url` (given as `option`) when the command could not
/// write it or would replace what it did not write: a missing or unwritable directory, a directory
/// in its place, a run directory's own files and anything in a checkpoint directory (not even with
/// `force`), and an existing file that does not begin with `kind`'s signature (any existing file
/// when `kind` is nil) unless `force`.
public func checkOutputFile(_ url: URL, option: String, kind: OutputFileKind?, force: Bool) throws {
    let directory = url.deletingLastPathComponent()
    if let problem = directoryProblem(directory, create: false) { throw AllRanksError("\(option) \(url.path): \(problem)") }
    let resolved = directory.resolvingSymlinksInPath().appendingPathComponent(url.lastPathComponent)
    if let place = stageOwnedPlace(resolved) { throw AllRanksError("\(option) \(url.path) \(place); write it elsewhere") }
    var info = stat()
    guard stat(url.path, &info) == 0 else { return }
    guard (info.st_mode & S_IFMT) == S_IFREG else {
        throw AllRanksError("\(option) \(url.path) is \((info.st_mode & S_IFMT) == S_IFDIR ? "a directory" : "not a regular file"); give a file name")
    }
    guard !force else { return }
    guard let kind else { throw AllRanksError("\(option) \(url.path) exists; give --force to replace it") }
    guard fileBegins(url, with: kind.signature) else {
        throw AllRanksError(
            "\(option) \(url.path) exists and is not an earlier \(kind.name) (those begin with \(kind.signature.debugDescription)); "
                + "give --force to replace it")
    }
}

/// Why files cannot be written in `directory`, or nil when they can. Missing directories are
/// created when `create`, else named.
func directoryProblem(_ directory: URL, create: Bool) -> String? {
    var missing: [URL] = []
    var existing = directory
    var info = stat()
    while stat(existing.path, &info) != 0 {
        guard errno == ENOENT || errno == ENOTDIR else { return "cannot reach \(existing.path) (\(String(cString: strerror(errno))))" }
        missing.append(existing)
        existing = existing.deletingLastPathComponent()
    }
    let kind = info.st_mode & S_IFMT
    guard kind == S_IFDIR else { return "\(existing.path) is \(kind == S_IFREG ? "a file, " : "")not a directory" }
    guard missing.isEmpty || create else { return "the directory \(directory.path) does not exist" }
    for url in missing.reversed() where mkdir(url.path, 0o777) != 0 && errno != EEXIST {
        return "cannot create the directory \(url.path) (\(String(cString: strerror(errno))))"
    }
    // A file created and removed: permissions alone miss read-only mounts, /proc and root's rights.
    let probe = directory.appendingPathComponent(".suder-write-check-\(getpid())")
    let fd = open(probe.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard fd >= 0 else { return "cannot write in \(directory.path) (\(String(cString: strerror(errno))))" }
    close(fd)
    unlink(probe.path)
    return nil
}

/// What only the stages write: a run directory's (one holding config.yaml) config, lock and stage
/// folders, and checkpoint directories (holding header.bin, `step-*` or a `latest` naming one).
/// Says where `url` lies among them, or nil when outside.
func stageOwnedPlace(_ url: URL) -> String? {
    let runEntries = Set(["config.yaml", RunLock.fileName] + StageName.allCases.map(\.rawValue))
    var entry = url
    var directory = url.deletingLastPathComponent()
    while true {
        let names = Set((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
        if names.contains("config.yaml") && runEntries.contains(entry.lastPathComponent) {
            let what = entry == url ? entry.lastPathComponent : "inside \(entry.lastPathComponent)/"
            return "is \(what) of the run directory \(directory.path), which only its stages write"
        }
        let latest = directory.appendingPathComponent(CheckpointStore.latestFileName)
        let namesCheckpoint =
            names.contains(CheckpointStore.latestFileName)
            && ((try? readWholeFile(latest, limit: 64)).map { $0.starts(with: Array("step-".utf8)) } ?? false)
        if names.contains(CheckpointHeader.fileName) || names.contains(where: isCheckpointDirectoryName) || namesCheckpoint {
            return "is inside the checkpoint directory \(directory.path)"
        }
        let parent = directory.deletingLastPathComponent()
        if parent.path == directory.path { return nil }
        entry = directory
        directory = parent
    }
}

/// Whether the regular file `url` begins with `prefix`; opened non-blocking, so a FIFO cannot hang it.
func fileBegins(_ url: URL, with prefix: String) -> Bool {
    let expected = Array(prefix.utf8)
    let fd = open(url.path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var start = [UInt8](repeating: 0, count: expected.count)
    var done = 0
    while done < expected.count {
        let n = start.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, expected.count - done) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return false }
        done += n
    }
    return start == expected
}
