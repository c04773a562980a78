import ClusterRuntime
import Foundation
import Model

/// What one `suder bench allreduce` measured: the gradient allreduce that every training step
/// pays, on the ranks and hosts the job runs on. docs/SCALING.md builds its model from these.
public struct AllreduceBenchReport: Codable {
    public var ranks: Int
    public var hosts: Int
    public var parameters: Int
    public var bytes: Int
    /// Median over repeats of the slowest rank's time for one allreduce of the gradient buffer.
    public var seconds: Double
    public var seconds_min: Double
    /// bytes / seconds.
    public var algorithm_gb_per_s: Double
    /// The bandwidth a ring allreduce needs per link: bytes x 2 (p - 1) / p / seconds.
    public var bus_gb_per_s: Double
    /// Median time of an allreduce of one Double (the per-collective latency: metric sums).
    public var latency_s: Double
}

/// The model a config file and overrides describe (the schema's defaults without either).
public func allreduceBenchModel(file: URL?, overrides: [String]) throws -> ModelConfig {
    let config = try ResolvedConfig.resolve(file: file, overrides: overrides)
    try checkConsistency(config)
    return configuredModel(config)
}

/// Times the allreduce (sum) of a `config`-sized model's real gradient buffer across `comm`:
/// each repeat starts after a barrier and counts the slowest rank, so a slow link is not hidden
/// by a fast one. Prints a table on rank 0 (or one JSON object with `json`).
@discardableResult
public func runAllreduceBench(comm: Communicator, config: ModelConfig, repeats: Int, json: Bool) -> AllreduceBenchReport {
    let model = Transformer(config: config, seed: 0, batchCapacity: 1)
    let gradients = model.gradients
    var scalar = [1.0]
    func slowestRankSeconds(_ body: () -> Void) -> [Double] {
        body()  // warm-up: connection set-up and first-touch page faults
        var times: [Double] = []
        for _ in 0..<max(1, repeats) {
            comm.barrier()
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        comm.allreduce(&times, op: .max)
        return times
    }
    let bufferTimes = slowestRankSeconds { comm.allreduce(gradients, op: .sum, file: #fileID, line: #line) }
    let latencyTimes = slowestRankSeconds { comm.allreduce(&scalar, op: .sum) }
    let hosts = Set(
        (comm.gather(Array(comm.processorName.utf8)) ?? []).map { String(decoding: $0, as: UTF8.self) }
    ).count
    let bytes = model.parameterCount * MemoryLayout<Float>.stride
    let seconds = median(bufferTimes)
    let p = Double(comm.size)
    var report = AllreduceBenchReport(
        ranks: comm.size, hosts: hosts, parameters: model.parameterCount, bytes: bytes, seconds: seconds,
        seconds_min: bufferTimes.min() ?? .nan, algorithm_gb_per_s: Double(bytes) / seconds / 1e9,
        bus_gb_per_s: Double(bytes) * 2 * (p - 1) / p / seconds / 1e9, latency_s: median(latencyTimes))
    // Only rank 0 gathered the host names; every rank returns the same report.
    var hostCount = [report.hosts]
    comm.broadcast(&hostCount)
    report.hosts = hostCount[0]
    guard comm.isRoot else { return report }
    if json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        if let data = try? encoder.encode(report) { print(String(decoding: data, as: UTF8.self)) }
    } else {
        print(
            "allreduce of the gradient buffer (\(report.parameters) parameters, \(String(format: "%.1f", Double(bytes) / 1e6)) MB) "
                + "over \(report.ranks) rank(s) on \(report.hosts) host(s), \(max(1, repeats)) repeats, slowest rank, medians:")
        print(
            formatTable(
                header: ["time", "best", "algorithm bandwidth", "bus bandwidth", "8-byte allreduce"],
                rows: [
                    [
                        String(format: "%.2f ms", seconds * 1e3), String(format: "%.2f ms", report.seconds_min * 1e3),
                        String(format: "%.2f GB/s", report.algorithm_gb_per_s), String(format: "%.2f GB/s", report.bus_gb_per_s),
                        String(format: "%.1f us", report.latency_s * 1e6),
                    ]
                ]))
    }
    return report
}
