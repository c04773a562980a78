import ClusterRuntime
import Foundation
import Model
import World

/// One group's best and worst sample: the completion tokens after a shared context.
struct PreferencePair {
    let direction: Direction
    let context: [Int32]
    let chosen: [Int32]
    let rejected: [Int32]
}

/// A group's samples with their group-relative advantages: what GRPO trains on.
struct SampleGroup {
    let direction: Direction
    let context: [Int32]
    let completions: [[Int32]]
    let advantages: [Double]
}

/// What a round's update trains on: pairs (SimPO, DPO) or whole groups (GRPO).
enum RoundExamples {
    case pairs([PreferencePair])
    case groups([SampleGroup])

    /// The examples of one direction a loss averages over: pairs, or samples of groups.
    func count(_ direction: Direction) -> Int {
        switch self {
        case .pairs(let pairs): return pairs.filter { $0.direction == direction }.count
        case .groups(let groups): return groups.filter { $0.direction == direction }.reduce(0) { $0 + $1.completions.count }
        }
    }
}

/// A drawn sample and its reward, kept for the diagnostics.
struct DrawnSample {
    let direction: Direction
    let item: Int
    let tokens: [Int32]
    let reward: Double
}

/// A round's per-direction sums, named `<direction>/<name>` in the sums and in `metrics.jsonl`.
/// Typed so that a misspelt name cannot silently drop a metric.
enum RoundMetric: String {
    // The preference step's metrics, TRL's names.
    case loss, chosenReward = "rewards/chosen", rejectedReward = "rewards/rejected", margin = "rewards/margins"
    case accuracy = "rewards/accuracies", chosenLogp = "logps/chosen", rejectedLogp = "logps/rejected", gradNorm = "grad_norm"
    // GRPO's (TRL's names): the KL to the reference, the share of samples the ratio clip stopped,
    // and the mean |advantage| (its mean is 0 by construction). Its `logps/chosen` and
    // `logps/rejected` are those of the samples with positive and negative advantages.
    case kl, clipRatio = "clip_ratio", advantageMagnitude = "advantages/abs_mean"
    // The self-rewards of all samples and the groups they left without a pair.
    case reward, rewardSquared = "reward_sq", ties
    // The likelihood guard: the scale it gave the round's loss, the falls in a row it has seen, and
    // (1) when it ends the stage.
    case guardScale = "guard/scale", guardFalls = "guard/falls", guardStopped = "guard/stopped"

    /// Logged as the sums' means, in this order.
    static let loggedMeans: [RoundMetric] = [
        .loss, .chosenReward, .rejectedReward, .margin, .accuracy, .chosenLogp, .rejectedLogp, .kl, .clipRatio, .advantageMagnitude, .gradNorm,
    ]

    func name(_ direction: Direction) -> String { "\(direction.rawValue)/\(rawValue)" }
}

extension MetricSums {
    mutating func add(_ metric: RoundMetric, _ direction: Direction, _ value: Double, count: Double = 1) {
        add(metric.name(direction), value, count: count)
    }

    func mean(_ metric: RoundMetric, _ direction: Direction) -> Double? { mean(metric.name(direction)) }
}

/// Seconds a round spends in each phase.
struct RoundTimes {
    var sampling = 0.0, scoring = 0.0, update = 0.0, communication = 0.0
}

func timed<T>(_ seconds: inout Double, _ body: () throws -> T) rethrows -> T {
    let start = DispatchTime.now().uptimeNanoseconds
    defer { seconds += elapsedSeconds(since: start) }
    return try body()
}

/// What distinguishes the two directions within a round.
struct RoundDirection {
    let direction: Direction
    /// The random stream the samples are drawn from.
    let streamPurpose: UInt64
    /// The unpaired prompts (generation) or images (understanding).
    let items: [[Int32]]
    let perRound: Int
    let context: (Int) -> [Int32]
    /// Samples for the given items (each repeated K times) and seeds.
    let draw: (_ items: [Int], _ seeds: [UInt64]) -> [[Int32]]
    let selfReward: (_ items: [Int], _ drawn: [[Int32]]) -> [Double]
    /// Only in the oracle ablation, where every rank holds the labels.
    let oracleReward: (_ item: Int, _ tokens: [Int32]) -> Double
}

/// SUDER's round: each rank takes its share of the round's prompts and images, draws K samples per
/// item, scores each with the model's own other direction, pairs each group's best and worst, and
/// every rank takes the same preference step on all ranks' pairs.
final class SuderRound {
    let settings: SuderSettings
    let directions: [RoundDirection]
    let trainer: PreferenceTrainer
    let diagnostics: SuderDiagnostics
    var likelihoodGuard: LikelihoodGuard
    let pairing: GroupPairing
    var comm: Communicator { trainer.session.job.comm }

    init(
        settings: SuderSettings, prompts: [[Int32]], images: [[Int32]], labels: SuderLabels?, tasks: UnifiedModelTasks,
        trainer: PreferenceTrainer, diagnostics: SuderDiagnostics
    ) {
        self.settings = settings
        self.trainer = trainer
        self.diagnostics = diagnostics
        likelihoodGuard = LikelihoodGuard(rounds: settings.guardRounds, factor: settings.guardFactor)
        pairing = GroupPairing(settings)
        let vocabulary = tasks.vocabulary, sampling = settings.imageSampling
        directions = [
            RoundDirection(
                direction: .generation, streamPurpose: StreamPurpose.suderImage, items: prompts, perRound: settings.promptsPerRound,
                context: { vocabulary.generationPrefix(prompt: prompts[$0]) },
                draw: { items, seeds in tasks.sampleImages(prompts: items.map { prompts[$0] }, seeds: seeds, settings: sampling) },
                // R_gen = (1/|X_T|) log p(X_T | Y_V): the prompt (and its EOS) given the drawn image.
                selfReward: { items, drawn in
                    tasks.textGivenImage(texts: items.map { prompts[$0] }, images: drawn, task: .prompt).map(\.mean)
                },
                oracleReward: { item, tokens in
                    Double(tasks.oracle.imageReward(imageTokens: tokens, record: labels!.promptRecords[item]))
                }),
            RoundDirection(
                direction: .understanding, streamPurpose: StreamPurpose.suderCaption, items: images, perRound: settings.imagesPerRound,
                context: { vocabulary.understandingPrefix(image: images[$0], task: .caption) },
                draw: { items, seeds in
                    tasks.sampleCaptions(
                        images: items.map { images[$0] }, seeds: seeds, temperature: sampling.temperature,
                        topK: sampling.topK)
                },
                // R_und = (1/|X_V|) log p(X_V | Y_T): the image tokens given the drawn caption.
                selfReward: { items, drawn in
                    tasks.imageGivenText(images: items.map { images[$0] }, texts: drawn.map(tasks.captionText)).map(\.mean)
                },
                oracleReward: { item, tokens in
                    Double(tasks.oracle.captionReward(captionTokens: tokens, scene: labels!.imageScenes[item]))
                }),
        ]
    }

    /// Round `round`: draw, score, pair, update; its metrics go to `record`. Returns a short
    /// progress line.
    func run(_ round: Int, record: inout MetricsRecord) throws -> String {
        let K = settings.k
        var sums = MetricSums(), times = RoundTimes()
        var samples: [DrawnSample] = [], pairs: [PreferencePair] = []
        // Where each group that gave a pair starts in `samples`: the groups GRPO trains.
        var pairedGroupStarts: [Int] = []
        for part in directions where settings.mode.trains(part.direction, round: round) {
            let mine = myItems(part, round: round)
            let groupItems = mine.flatMap { Array(repeating: $0, count: K) }
            let drawn = timed(&times.sampling) { part.draw(groupItems, sampleSeeds(part, round: round, items: mine)) }
            let rewards = timed(&times.scoring) {
                settings.reward == .oracle ? zip(groupItems, drawn).map { part.oracleReward($0, $1) } : part.selfReward(groupItems, drawn)
            }
            for (n, item) in mine.enumerated() {
                let group = (n * K)..<((n + 1) * K)
                for k in group {
                    samples.append(DrawnSample(direction: part.direction, item: item, tokens: drawn[k], reward: rewards[k]))
                    sums.add(.reward, part.direction, rewards[k])
                    sums.add(.rewardSquared, part.direction, rewards[k] * rewards[k])
                }
                if let pair = pairing.pair(Array(rewards[group]), direction: part.direction, round: round, item: item) {
                    pairedGroupStarts.append(samples.count - K)
                    pairs.append(
                        PreferencePair(
                            direction: part.direction, context: part.context(item),
                            chosen: drawn[group.lowerBound + pair.chosen], rejected: drawn[group.lowerBound + pair.rejected]))
                } else {
                    sums.add(.ties, part.direction, 1)
                }
            }
        }
        // GRPO trains every sample of the groups that gave a pair; SimPO and DPO train the pairs.
        let examples: RoundExamples = settings.objective == .grpo ? .groups(advantageGroups(samples, starts: pairedGroupStarts)) : .pairs(pairs)
        // Each direction's loss is its mean over all ranks' examples.
        var counts = Direction.allCases.map(examples.count), pairCounts = Direction.allCases.map { d in pairs.filter { $0.direction == d }.count }
        comm.allreduce(&counts, op: .sum)
        comm.allreduce(&pairCounts, op: .sum)
        let scales = likelihoodGuard.scales
        trainer.beginRound()
        for _ in 0..<settings.stepsPerRound {
            try trainer.step(examples, globalCounts: counts, scales: scales, sums: &sums, times: &times)
        }
        sums.allreduce(comm)
        logMetrics(sums: sums, pairCounts: pairCounts, times: times, into: &record)
        likelihoodGuard.observe(sums, scales: scales, record: &record)
        try diagnostics.roundFinished(round, samples: samples, record: &record)
        return Direction.allCases.compactMap { d -> String? in
            guard let loss = sums.mean(.loss, d) else { return nil }
            let detail = sums.mean(.margin, d).map { "margin \(String(format: "%.3f", $0))" } ?? "kl \(String(format: "%.4f", sums.mean(.kl, d) ?? .nan))"
            return "\(d.rawValue.prefix(3)) loss \(String(format: "%.3f", loss)) \(detail)"
        }.joined(separator: "  ")
    }

    /// The groups that gave a pair (K consecutive samples of one item, from `starts`) with
    /// group-relative advantages; a group whose rewards tie was counted as such and teaches nothing.
    private func advantageGroups(_ samples: [DrawnSample], starts: [Int]) -> [SampleGroup] {
        starts.compactMap { start in
            let group = samples[start..<start + settings.k], first = group[start]
            guard let advantages = groupAdvantages(group.map(\.reward)),
                let part = directions.first(where: { $0.direction == first.direction })
            else { return nil }
            return SampleGroup(direction: first.direction, context: part.context(first.item), completions: group.map(\.tokens), advantages: advantages)
        }
    }

    /// This rank's share of the round's items.
    private func myItems(_ part: RoundDirection, round: Int) -> [Int] {
        let chosen = roundItems(total: part.items.count, count: part.perRound, seed: settings.seed, round: round, direction: part.direction)
        return shardIndices(count: chosen.count, rank: comm.rank, size: comm.size).map { chosen[$0] }
    }

    /// One seed per (item, k): samples depend on what is drawn, never on the rank drawing it.
    private func sampleSeeds(_ part: RoundDirection, round: Int, items: [Int]) -> [UInt64] {
        items.flatMap { i in (0..<settings.k).map { streamSeed(settings.seed, part.streamPurpose, UInt64(round), UInt64(i), UInt64($0)) } }
    }

    /// The round's per-direction metrics (for directions that drew samples) and the slowest rank's times.
    private func logMetrics(sums: MetricSums, pairCounts: [Int], times: RoundTimes, into record: inout MetricsRecord) {
        for (index, d) in Direction.allCases.enumerated() where sums.mean(.reward, d) != nil {
            record.set("\(d.rawValue)/pairs", pairCounts[index])
            record.set("\(d.rawValue)/ties_dropped", Int(sums.sum(RoundMetric.ties.name(d)) ?? 0))
            for metric in RoundMetric.loggedMeans {
                if let value = sums.mean(metric, d) { record.set(metric.name(d), value) }
            }
            if let mean = sums.mean(.reward, d), let meanSquare = sums.mean(.rewardSquared, d) {
                record.set("\(d.rawValue)/self_reward_mean", mean)
                record.set("\(d.rawValue)/self_reward_std", max(0, meanSquare - mean * mean).squareRoot())
            }
        }
        var slowest = [times.sampling, times.scoring, times.update, times.communication]
        comm.allreduce(&slowest, op: .max)
        record.set("time/sampling_s", slowest[0])
        record.set("time/scoring_s", slowest[1])
        record.set("time/update_s", slowest[2])
        record.set("time/communication_s", slowest[3])
    }
}

/// The round's items: a seeded choice of `count` distinct indices out of `total`, the same on
/// every rank and for every rank count.
func roundItems(total: Int, count: Int, seed: UInt64, round: Int, direction: Direction) -> [Int] {
    var rng = Xoshiro256RNG(seed: streamSeed(seed, StreamPurpose.suderRoundItems, UInt64(round), direction == .generation ? 0 : 1))
    var indices = Array(0..<total)
    for i in 0..<min(count, total) {
        let j = i + Int(rng.next() % UInt64(total - i))
        indices.swapAt(i, j)
    }
    return Array(indices.prefix(count))
}

/// Index of the best and worst reward in a group, nil when they differ by no more than
/// `minimumGap` (with 0: when every reward ties).
func bestAndWorst(_ rewards: [Double], minimumGap: Double = 0) -> (best: Int, worst: Int)? {
    guard let best = rewards.indices.max(by: { rewards[$0] < rewards[$1] }),
        let worst = rewards.indices.min(by: { rewards[$0] < rewards[$1] }),
        rewards[best] - rewards[worst] > minimumGap
    else { return nil }
    return (best, worst)
}
