import Foundation
import Model
import World

/// Sequences per sampler call (`ModelWorkbench.samplingChunk`): bounds the KV cache's memory.
let samplingChunkSequences = 64

/// What one rank of a model stage allocates for this config, part by part (`MemoryEstimate`).
struct StageMemory {
    let stage: StageName
    let parts: [(name: String, bytes: Double)]
    var total: Double { parts.reduce(0) { $0 + $1.bytes } }
}

/// The memory each model stage needs on one rank: the model at the micro-batch (parameters,
/// gradients, activations), AdamW's state when it trains, the sampler's KV cache and buffers,
/// and for DPO the frozen reference model. The vocabulary follows from the config alone.
func stageMemory(_ config: ResolvedConfig) -> [StageMemory] {
    let model = modelConfig(config, vocabulary: Vocabulary(codebookSize: config.int("data.codebook_size")))
    let microBatch = config.int("pretrain.micro_batch")
    let side = config.int("data.canvas") / config.int("data.patch")
    // Image sampling runs a chunk's prompts plus as many guidance streams; caption sampling a
    // chunk of image prefixes. Rows: every stream's prompt in one prefill pass.
    let guided = config.double("suder.cfg_weight") > 0 || config.double("eval.cfg_weight") > 0
    let streams = samplingChunkSequences * (guided ? 2 : 1)
    let rows = max(streams * max(1, model.maxSeq - side * side), samplingChunkSequences * model.maxSeq)
    let parameters = MemoryEstimate.buffer(MemoryEstimate.parameterCount(model))
    let transformer = MemoryEstimate.transformerBytes(model, batchCapacity: microBatch)
    let modelParts: [(name: String, bytes: Double)] = [
        ("parameters", parameters), ("gradients", parameters), ("activations", transformer - 2 * parameters),
    ]
    let optimizer = ("AdamW state", MemoryEstimate.adamWBytes(model))
    let sampler = ("sampling KV cache and buffers", MemoryEstimate.samplerBytes(model, streams: streams, rows: rows))
    var suder = modelParts + [optimizer, sampler]
    if config.string("suder.objective") == "dpo" { suder.append(("DPO reference model", transformer)) }
    return [
        StageMemory(stage: .pretrain, parts: modelParts + [optimizer, sampler]),
        StageMemory(stage: .suder, parts: suder),
        StageMemory(stage: .eval, parts: modelParts + [sampler]),
    ]
}

/// Memory one rank may use: the node's share (the smaller of `MemAvailable` and the cgroup's
/// limit, v2 or v1) divided by the ranks on the node (`OMPI_COMM_WORLD_LOCAL_SIZE`, else
/// `SLURM_NTASKS_PER_NODE`). `root` prefixes /proc and /sys for tests. Nil when nothing is readable.
func memoryAvailablePerRank(
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

func formatBytes(_ bytes: Double) -> String {
    let terabyte = Double(1 << 40), gigabyte = Double(1 << 30), megabyte = Double(1 << 20)
    if bytes >= terabyte { return String(format: "%.1f TB", bytes / terabyte) }
    if bytes >= gigabyte { return String(format: "%.2f GB", bytes / gigabyte) }
    if bytes >= megabyte { return String(format: "%.1f MB", bytes / megabyte) }
    return String(format: "%.0f KB", bytes / 1024)
}

/// Prints the memory table (after the config's) through `print`, then throws an `AgreedError` on
/// every rank when the largest stage needs more than the rank with the least memory has: a clear
/// stop before any allocation instead of an allocation failure mid-run. `available` is this
/// rank's share (nil: unknown).
func checkMemory(
    _ config: ResolvedConfig, comm: Communicator, available: (bytes: Int, source: String)?,
    print: (String) -> Void
) throws {
    let stages = stageMemory(config)
    var lines = ["memory per rank (estimate):"]
    for stage in stages {
        let parts = stage.parts.map { "\($0.name) \(formatBytes($0.bytes))" }.joined(separator: ", ")
        lines.append("  \(stage.stage.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)) \(formatBytes(stage.total)) (\(parts))")
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
        throw AgreedError(
            "the model does not fit in memory: stage \(largest.stage.rawValue) needs about \(formatBytes(largest.total)) per rank "
                + "(\(largest.parts.map { "\($0.name) \(formatBytes($0.bytes))" }.joined(separator: ", "))), "
                + "but a rank has \(formatBytes(Double(least))). Reduce model.* or pretrain.micro_batch, or run fewer ranks per node.")
    }
}
