import Foundation

/// Sums and counts reduced together, so that means across ranks are means over items,
/// not means of per-rank means.
public struct MetricSums: Equatable {
    public private(set) var names: [String] = []
    public private(set) var sums: [Double] = []
    public private(set) var counts: [Double] = []

    public init() {}

    public mutating func add(_ name: String, _ value: Double, count: Double = 1) {
        if let i = names.firstIndex(of: name) {
            sums[i] += value
            counts[i] += count
        } else {
            names.append(name)
            sums.append(value)
            counts.append(count)
        }
    }

    /// Mean of everything added under `name`; nil if nothing was.
    public func mean(_ name: String) -> Double? {
        guard let i = names.firstIndex(of: name), counts[i] > 0 else { return nil }
        return sums[i] / counts[i]
    }

    public func sum(_ name: String) -> Double? {
        names.firstIndex(of: name).map { sums[$0] }
    }

    /// Sums every (sum, count) pair across ranks. Ranks may have met different names, in any
    /// order: the reduction runs over the union of names, sorted, so a pair never lands on
    /// another name's slot. Afterwards every rank holds every name.
    public mutating func allreduce(_ comm: Communicator, file: StaticString = #fileID, line: UInt = #line) {
        var union: [String] = []
        if let everyRank = comm.gather(Array(names.joined(separator: "\n").utf8), root: 0, file: file, line: line) {
            union = Set(everyRank.flatMap { String(decoding: $0, as: UTF8.self).split(separator: "\n").map(String.init) }).sorted()
        }
        union = String(
            decoding: comm.broadcast(bytes: Array(union.joined(separator: "\n").utf8), root: 0, file: file, line: line),
            as: UTF8.self
        ).split(separator: "\n").map(String.init)
        let position = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
        var packed = union.map { position[$0].map { sums[$0] } ?? 0 } + union.map { position[$0].map { counts[$0] } ?? 0 }
        comm.allreduce(&packed, op: .sum, file: file, line: line)
        names = union
        sums = Array(packed[..<union.count])
        counts = Array(packed[union.count...])
    }

    /// Adds every (sum, count) of `other`, name by name.
    public mutating func add(_ other: MetricSums) {
        for (i, name) in other.names.enumerated() { add(name, other.sums[i], count: other.counts[i]) }
    }
}
