import ClusterRuntime
import Foundation

/// A label-free guard against likelihood displacement: a preference loss can widen its margins by
/// making the chosen samples unlikely too. Once a direction's `logps/chosen` (the round's mean,
/// the same on every rank) has fallen `rounds` rounds in a row, its next round's loss is scaled by
/// `factor`; with factor 0 the stage stops after the round that saw it. Its state travels in the
/// checkpoint, so a resumed run guards as an uninterrupted one.
struct LikelihoodGuard {
    let rounds: Int
    let factor: Double
    private(set) var lastChosenLogp: [Direction: Double] = [:]
    private(set) var falls: [Direction: Int] = [:]
    /// Set by the round after which the stage must stop (factor 0).
    private(set) var stopAfterRound = false

    init(rounds: Int, factor: Double) {
        self.rounds = rounds
        self.factor = factor
    }

    /// Each direction's loss scale for the next round.
    var scales: [Direction: Double] {
        Dictionary(uniqueKeysWithValues: Direction.allCases.map { ($0, rounds > 0 && falls[$0, default: 0] >= rounds ? factor : 1) })
    }

    /// Reads the round's `logps/chosen` of each direction that trained and logs the guard's state.
    mutating func observe(_ sums: MetricSums, scales: [Direction: Double], record: inout MetricsRecord) {
        guard rounds > 0 else { return }
        for direction in Direction.allCases {
            guard let chosen = sums.mean(.chosenLogp, direction) else { continue }
            if let last = lastChosenLogp[direction] { falls[direction] = chosen < last ? falls[direction, default: 0] + 1 : 0 }
            lastChosenLogp[direction] = chosen
            record.set(RoundMetric.guardScale.name(direction), scales[direction] ?? 1)
            record.set(RoundMetric.guardFalls.name(direction), falls[direction, default: 0])
            if factor == 0 && falls[direction, default: 0] >= rounds {
                stopAfterRound = true
                record.set(RoundMetric.guardStopped.name(direction), 1)
            }
        }
    }

    static let checkpointSection = "suder_likelihood_guard"

    /// The state for the checkpoint: per direction, whether a last value exists, its bits, the falls.
    var encoded: [UInt8] {
        var writer = ByteWriter()
        for direction in Direction.allCases {
            writer.u8(lastChosenLogp[direction] == nil ? 0 : 1)
            writer.u64((lastChosenLogp[direction] ?? 0).bitPattern)
            writer.u32(UInt32(falls[direction, default: 0]))
        }
        return writer.bytes
    }

    mutating func restore(_ bytes: [UInt8]) throws {
        var reader = ByteReader(bytes, file: "checkpoint section \(Self.checkpointSection)")
        for direction in Direction.allCases {
            let present = try reader.u8("has last logps/chosen") == 1
            let last = Double(bitPattern: try reader.u64("last logps/chosen"))
            lastChosenLogp[direction] = present ? last : nil
            falls[direction] = Int(try reader.u32("falls"))
        }
    }
}
