import ClusterRuntime
import Foundation
import GenEvalMini
import Model
import World

/// Watches SUDER's rounds with labels the rewards never see. After each round's update, rank 0
/// gathers every sample and logs reward fidelity: the share of pairs the oracle orders as the
/// self-reward did (among pairs the oracle tells apart), per direction and per GenEval category;
/// the within-group ranking accuracy over all samples (`fidelity_auc`); and the oracle's score of
/// all samples. Each group's pair is re-derived from its gathered rewards by the round's own
/// `GroupPairing`, so only the samples travel, and under a control (`suder.reward=random` or
/// `shuffled`) fidelity measures the pairs that were trained on. With `suder.log_samples` every
/// sample goes to `samples.jsonl` with its reward, the oracle's verdict and its part in the pair.
final class SuderDiagnostics {
    /// Rank 0's labels (nil elsewhere, unless the oracle ablation loaded them everywhere).
    let labels: SuderLabels?
    let tasks: UnifiedModelTasks
    let comm: Communicator
    let sampleLog: MetricsLog?
    let pairing: GroupPairing

    init(labels: SuderLabels?, tasks: UnifiedModelTasks, comm: Communicator, sampleLog: MetricsLog?, pairing: GroupPairing) {
        self.labels = labels
        self.tasks = tasks
        self.comm = comm
        self.sampleLog = sampleLog
        self.pairing = pairing
    }

    /// Collective: every rank sends its samples; rank 0 adds the fidelity metrics to `record`.
    func roundFinished(_ round: Int, samples: [DrawnSample], record: inout MetricsRecord) throws {
        var writer = ByteWriter()
        writer.u32(UInt32(samples.count))
        for sample in samples {
            writer.u8(sample.direction == .generation ? 0 : 1)
            writer.u32(UInt32(sample.item))
            writer.u64(sample.reward.bitPattern)
            writer.u32(UInt32(sample.tokens.count))
            for t in sample.tokens { writer.u32(UInt32(bitPattern: t)) }
        }
        guard let gathered = comm.gather(writer.bytes, root: 0), let labels else { return }
        // A group's samples arrive together and in draw order: items are split between ranks whole.
        var groups: [Direction: [Int: [(reward: Double, oracle: Float)]]] = [:]
        var logLines: [(direction: Direction, item: Int, member: Int, line: MetricsRecord)] = []
        for bytes in gathered {
            var reader = ByteReader(bytes, file: "gathered SUDER samples")
            for _ in 0..<(try reader.u32("samples")) {
                let direction: Direction = try reader.u8("direction") == 0 ? .generation : .understanding
                let item = Int(try reader.u32("item"))
                let reward = Double(bitPattern: try reader.u64("reward"))
                let count = Int(try reader.u32("length"))
                guard count <= reader.remaining / 4 else { throw AllRanksError("malformed gathered samples", exitCode: 1) }
                let tokens = try (0..<count).map { _ in Int32(bitPattern: try reader.u32("token")) }
                let found = direction == .generation ? tasks.oracle.imageVerdict(imageTokens: tokens, record: labels.promptRecords[item]) : nil
                let score =
                    direction == .generation
                    ? (found?.verdict.correct == true ? 1 : 0)
                    : tasks.oracle.captionReward(captionTokens: tokens, scene: labels.imageScenes[item])
                if sampleLog != nil {
                    logLines.append(
                        (
                            direction, item, groups[direction]?[item]?.count ?? 0,
                            sampleRecord(
                                round: round, direction: direction, item: item, tokens: tokens, reward: reward,
                                oracle: score, found: found, labels: labels, tasks: tasks)
                        ))
                }
                groups[direction, default: [:]][item, default: []].append((reward, score))
            }
        }
        var pairs: [Direction: [Int: (chosen: Int, rejected: Int)]] = [:]
        for (direction, byItem) in groups {
            for (item, group) in byItem {
                pairs[direction, default: [:]][item] = pairing.pair(group.map(\.reward), direction: direction, round: round, item: item)
            }
        }
        if let sampleLog {
            for var entry in logLines {
                let pair = pairs[entry.direction]?[entry.item]
                entry.line.set("pair", pair?.chosen == entry.member ? "chosen" : pair?.rejected == entry.member ? "rejected" : "none")
                sampleLog.append(entry.line)
            }
        }
        var agree: [String: Int] = [:], disagree: [String: Int] = [:], oracleTies: [String: Int] = [:]
        var ranking: [String: (wins: Double, pairs: Int)] = [:]
        var sampleScore: [Direction: (sum: Double, count: Int)] = [:]
        for (direction, byItem) in groups {
            for (item, group) in byItem {
                var keys = [direction.rawValue]
                if direction == .generation { keys.append("generation/\(labels.promptRecords[item].tag.rawValue)") }
                sampleScore[direction, default: (0, 0)].sum += group.reduce(0) { $0 + Double($1.oracle) }
                sampleScore[direction, default: (0, 0)].count += group.count
                let (wins, count) = withinGroupRanking(group)
                for key in keys { ranking[key, default: (0, 0)].wins += wins; ranking[key, default: (0, 0)].pairs += count }
                guard let (best, worst) = pairs[direction]?[item] else { continue }
                let (w, l) = (group[best].oracle, group[worst].oracle)
                for key in keys {
                    if w > l { agree[key, default: 0] += 1 } else if w < l { disagree[key, default: 0] += 1 } else { oracleTies[key, default: 0] += 1 }
                }
            }
        }
        for key in Set(agree.keys).union(disagree.keys).union(oracleTies.keys).sorted() {
            let a = agree[key] ?? 0, d = disagree[key] ?? 0, t = oracleTies[key] ?? 0
            if a + d > 0 { record.set("fidelity/\(key)", Double(a) / Double(a + d)) }
            record.set("fidelity_pairs/\(key)", a + d)
            record.set("fidelity_oracle_ties/\(key)", t)
        }
        for (direction, score) in sampleScore.sorted(by: { $0.key.rawValue < $1.key.rawValue }) where score.count > 0 {
            record.set("oracle_sample_accuracy/\(direction.rawValue)", score.sum / Double(score.count))
        }
        for (key, value) in ranking.sorted(by: { $0.key < $1.key }) where value.pairs > 0 {
            record.set("fidelity_auc/\(key)", value.wins / Double(value.pairs))
            record.set("fidelity_auc_pairs/\(key)", value.pairs)
        }
    }
}

/// Over every (right, wrong) pair of samples in one group (oracle 1 vs 0): how many the reward
/// ranks right above wrong, ties counting half, and how many such pairs there are.
func withinGroupRanking(_ group: [(reward: Double, oracle: Float)]) -> (wins: Double, pairs: Int) {
    var wins = 0.0, pairs = 0
    for right in group where right.oracle > 0 {
        for wrong in group where wrong.oracle == 0 {
            pairs += 1
            wins += right.reward > wrong.reward ? 1 : (right.reward == wrong.reward ? 0.5 : 0)
        }
    }
    return (wins, pairs)
}

/// One line of `samples.jsonl`: what was drawn (and its tokens' xxh64), its self-reward, the
/// oracle's verdict and why.
private func sampleRecord(
    round: Int, direction: Direction, item: Int, tokens: [Int32], reward: Double, oracle: Float,
    found: (detections: [DetectedObject], verdict: GenEvalVerdict)?, labels: SuderLabels,
    tasks: UnifiedModelTasks
) -> MetricsRecord {
    var line = MetricsRecord()
    line.set("step", round)
    line.set("direction", direction.rawValue)
    line.set("item", item)
    line.set("reward", reward)
    line.set("oracle", Int(oracle))
    switch direction {
    case .generation:
        let prompt = labels.promptRecords[item]
        line.set("category", prompt.tag.rawValue)
        line.set("prompt", prompt.prompt)
        if let found {
            let objects = found.detections.map { "\($0.color.rawValue) \($0.shape.rawValue) \(String(format: "%.2f", $0.confidence))" }
            line.set("detected", objects.joined(separator: ", "))
            line.set("verdict", found.verdict.reason)
        } else {
            line.set("verdict", "not an image")
        }
    case .understanding:
        line.set("caption", (try? tasks.vocabulary.decodeUntilEOS(tokens)) ?? tasks.vocabulary.describe(tokens))
        line.set("truth", canonicalCaption(labels.imageScenes[item]))
    }
    // The sample itself, so runs can be checked to have drawn the same tokens.
    line.set("tokens_xxh64", String(format: "%016llx", tokens.withUnsafeBytes { xxhash64($0) }))
    return line
}
