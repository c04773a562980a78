import Foundation

/// The verdict of one named check, agreed across ranks.
public struct CheckResult {
    public let name: String
    public let passed: Bool
    public let detail: String

    public init(name: String, passed: Bool, detail: String) {
        self.name = name
        self.passed = passed
        self.detail = detail
    }
}

/// Collectives checked against answers every rank can compute alone. A check passes only if it
/// passed on every rank. Used by `suder doctor` and the multi-rank test executable.
public func communicatorChecks(_ comm: Communicator) -> [CheckResult] {
    var results: [CheckResult] = []
    func record(_ name: String, _ detail: String = "", _ localPass: () -> Bool) {
        let passed = comm.allAgree(localPass())
        results.append(CheckResult(name: name, passed: passed, detail: detail))
    }
    let n = comm.size, r = comm.rank
    func pattern(_ i: Int) -> Float { Float(i % 251) * 0.25 - Float(i % 7) }

    for root in Set([0, n - 1]).sorted() {
        record("broadcast from rank \(root)", "4099 floats") {
            var values = (0..<4099).map { comm.rank == root ? pattern($0) : -1 }
            comm.broadcast(&values, root: root)
            return values.enumerated().allSatisfy { $0.element == pattern($0.offset) }
        }
    }
    record("broadcast of a byte string of unknown length") {
        let message = Array("rank 0 says hello to \(n) ranks".utf8)
        return comm.broadcast(bytes: r == 0 ? message : []) == message
    }
    record("allreduce sum, float", "sum over ranks of (rank+1)*(i mod 13)") {
        var values = (0..<1000).map { Float(r + 1) * Float($0 % 13) }
        comm.allreduce(&values, op: .sum)
        let ranksSum = Float(n * (n + 1) / 2)
        return values.enumerated().allSatisfy { $0.element == ranksSum * Float($0.offset % 13) }
    }
    record("allreduce max and min, double") {
        var high = [Double(r), -Double(r)], low = [Double(r), -Double(r)]
        comm.allreduce(&high, op: .max)
        comm.allreduce(&low, op: .min)
        return high == [Double(n - 1), 0] && low == [0, -Double(n - 1)]
    }
    record("allreduce sum, 64-bit integers beyond 2^32") {
        let total = comm.allreduce((1 << 40) + r, op: .sum)
        return total == n * (1 << 40) + n * (n - 1) / 2
    }
    if let mpi = comm as? MPICommunicator {
        record("allreduce in chunks", "1001 floats in chunks of 64") {
            let saved = mpi.chunkLimit
            mpi.chunkLimit = 64
            defer { mpi.chunkLimit = saved }
            var values = (0..<1001).map { Float($0 % 17 + r) }
            comm.allreduce(&values, op: .sum)
            return values.enumerated().allSatisfy { $0.element == Float(n * ($0.offset % 17) + n * (n - 1) / 2) }
        }
    }
    record("metric (sum, count) pairs", "means over items, not over ranks") {
        var metrics = MetricSums()
        metrics.add("loss", Double(r) * Double(r + 1), count: Double(r + 1))
        metrics.allreduce(comm)
        let sum = (0..<n).reduce(0.0) { $0 + Double($1) * Double($1 + 1) }
        let count = (0..<n).reduce(0.0) { $0 + Double($1 + 1) }
        return abs(metrics.mean("loss")! - sum / count) < 1e-12
    }
    record("metric pairs met in different orders, some on some ranks only") {
        var metrics = MetricSums()
        // Odd ranks add in the opposite order; only even ranks see "even".
        let items: [(String, Double)] = [("a", 1), ("b", 10)] + (r % 2 == 0 ? [("even", 100)] : [])
        for (name, value) in (r % 2 == 0 ? items : items.reversed()) { metrics.add(name, value) }
        metrics.allreduce(comm)
        let evens = Double((n + 1) / 2)
        return metrics.names == ["a", "b", "even"] && metrics.sum("a") == Double(n) && metrics.sum("b") == 10 * Double(n)
            && metrics.sum("even") == 100 * evens && metrics.mean("even") == 100
    }
    record("gather of variable-length bytes to rank 0", "rank r sends 3r bytes") {
        let payload = [UInt8](repeating: UInt8(r % 256), count: 3 * r)
        guard let all = comm.gather(payload, root: 0) else { return r != 0 }
        return all.count == n && all.enumerated().allSatisfy { $0.element == [UInt8](repeating: UInt8($0.offset % 256), count: 3 * $0.offset) }
    }
    return results
}
