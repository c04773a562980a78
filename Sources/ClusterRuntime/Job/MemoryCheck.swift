import Foundation

/// What one rank of a stage allocates, part by part: the job's own estimate, checked against the
/// memory a rank has before anything is allocated (`checkMemory`).
public struct StageMemory {
    public let stage: String
    public let parts: [(name: String, bytes: Double)]
    public var total: Double { parts.reduce(0) { $0 + $1.bytes } }

    public init(stage: String, parts: [(name: String, bytes: Double)]) {
        self.stage = stage
        self.parts = parts
    }
}

/// Memory one rank may use: the node's share (the smaller of `MemAvailable` and the cgroup's
/// limit, v2 or v1) divided by the ranks on the node (`OMPI_COMM_WORLD_LOCAL_SIZE`, else
/// `SLURM_NTASKS_PER_NODE`). `root` prefixes /proc and /sys for tests. Nil when nothing is readable.
public func memoryAvailablePerRank(
    environment: [String: String] = ProcessInfo.processInfo.environment,
    root: String = ""
) -> (bytes: Int, source: String)? {
    func read(_ path: String) -> String? { try? String(contentsOfFile: root + path, encoding: .utf8) }
    var limits: [(Int, String)] = []
    if let meminfo = read("/proc/meminfo"),
        let line = meminfo.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
        let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
    {
        limits.append((kilobytes * 1024, "MemAvailable"))
    }
    if let cgroup = cgroupMemoryLimit(read: read) { limits.append(cgroup) }
    guard let (nodeBytes, source) = limits.min(by: { $0.0 < $1.0 }) else { return nil }
    let localRanks =
        ["OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"].lazy
        .compactMap { environment[$0].flatMap { Int($0) } }.first { $0 > 0 } ?? 1
    return (nodeBytes / localRanks, localRanks > 1 ? "\(source) \(formatBytes(Double(nodeBytes))) / \(localRanks) ranks on this node" : source)
}

/// The tightest memory limit of this process's cgroup and its ancestors: `memory.max` (v2) or
/// `memory.limit_in_bytes` (v1, where "unlimited" is a value near 2^63).
private func cgroupMemoryLimit(read: (String) -> String?) -> (Int, String)? {
    guard let membership = read("/proc/self/cgroup") else { return nil }
    var best: (Int, String)?
    for line in membership.split(separator: "\n") {
        let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard fields.count == 3 else { continue }
        let base: String, file: String
        if fields[0] == "0" && fields[1].isEmpty {
            (base, file) = ("/sys/fs/cgroup", "memory.max")
        } else if fields[1].split(separator: ",").contains("memory") {
            (base, file) = ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else {
            continue
        }
        var path = String(fields[2])
        while true {
            let location = base + (path == "/" ? "" : path) + "/" + file
            if let text = read(location)?.trimmingCharacters(in: .whitespacesAndNewlines), let bytes = Int(text),
                bytes < 1 << 60, bytes < (best?.0 ?? .max)
            {
                best = (bytes, "cgroup limit \(location)")
            }
            guard path != "/" && !path.isEmpty else { break }
            path = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
            if path.isEmpty { path = "/" }
        }
    }
    return best
}

public func formatBytes(_ bytes: Double) -> String {
    let terabyte = Double(1 << 40), gigabyte = Double(1 << 30), megabyte = Double(1 << 20)
    if bytes >= terabyte { return String(format: "%.1f TB", bytes / terabyte) }
    if bytes >= gigabyte { return String(format: "%.2f GB", bytes / gigabyte) }
    if bytes >= megabyte { return String(format: "%.1f MB", bytes / megabyte) }
    return String(format: "%.0f KB", bytes / 1024)
}

/// Prints the memory table (after the config's) through `print`, then throws an `AllRanksError` on
/// every rank when the largest stage needs more than the rank with the least memory has: a clear
/// stop before any allocation instead of an allocation failure mid-run. `available` is this
/// rank's share (nil: unknown).
public func checkMemory(
    _ stages: [StageMemory], comm: Communicator, available: (bytes: Int, source: String)?,
    print: (String) -> Void
) throws {
    var lines = ["memory per rank (estimate):"]
    for stage in stages {
        let parts = stage.parts.map { "\($0.name) \(formatBytes($0.bytes))" }.joined(separator: ", ")
        lines.append("  \(stage.stage.padding(toLength: 9, withPad: " ", startingAt: 0)) \(formatBytes(stage.total)) (\(parts))")
    }
    // Every rank takes part, so all learn the smallest share (ranks may sit on different nodes).
    let least = comm.allreduce(available?.bytes ?? Int.max, op: .min)
    guard least < Int.max else {
        lines.append("  available: unknown (no /proc/meminfo or cgroup limit)")
        print(lines.joined(separator: "\n"))
        return
    }
    let mine = available.map { "\(formatBytes(Double($0.bytes))) on this rank (\($0.source))" } ?? "unknown on this rank"
    lines.append("  available: \(formatBytes(Double(least))) on the rank with the least; \(mine)")
    print(lines.joined(separator: "\n"))
    let largest = stages.max { $0.total < $1.total }!
    guard largest.total <= Double(least) else {
        throw AllRanksError(
            "the model does not fit in memory: stage \(largest.stage) needs about \(formatBytes(largest.total)) per rank "
                + "(\(largest.parts.map { "\($0.name) \(formatBytes($0.bytes))" }.joined(separator: ", "))), "
                + "but a rank has \(formatBytes(Double(least))). Reduce model.* or model.micro_batch, or run fewer ranks per node.")
    }
}
