import ClusterRuntime
import Model

/// What decides a SUDER group's pair (`suder.reward`). `self` is SUDER; `oracle` is an upper
/// bound that reads labels; `random` and `shuffled` are controls that keep the self-reward run's
/// samples, self-rewards and update size and change only which two samples are paired, so a gain
/// they share with `self` comes from training on one's own samples, not from the reward.
enum RewardSource: String, CaseIterable {
    case selfReward = "self"
    case oracle
    /// Chosen and rejected drawn at random within each group.
    case random
    /// Each group's rewards permuted before pairing.
    case shuffled

    /// How logs and the report name it.
    var label: String {
        switch self {
        case .selfReward: return "self"
        case .oracle: return "oracle (upper bound, reads labels)"
        case .random: return "random pairs (control)"
        case .shuffled: return "shuffled rewards (control)"
        }
    }
}

/// The pair of one group of samples: indices of the chosen and the rejected sample, nil when the
/// group gives no pair. Every source pairs exactly the groups whose rewards differ by more than
/// `minimumGap` (the self-reward's rule; permuting rewards keeps their spread), so the controls
/// take updates from as many pairs as the self-reward run. The random draws come from
/// `pairingSeed` alone, which names (seed, round, direction, item), never the rank.
func pairGroup(_ rewards: [Double], source: RewardSource, minimumGap: Double, pairingSeed: UInt64) -> (chosen: Int, rejected: Int)? {
    guard let ordered = bestAndWorst(rewards, minimumGap: minimumGap) else { return nil }
    var rng = Xoshiro256RNG(seed: pairingSeed)
    switch source {
    case .selfReward, .oracle:
        return (ordered.best, ordered.worst)
    case .random:
        let chosen = Int(rng.next() % UInt64(rewards.count))
        let rejected = (chosen + 1 + Int(rng.next() % UInt64(rewards.count - 1))) % rewards.count
        return (chosen, rejected)
    case .shuffled:
        // Fisher-Yates written out: the standard library's shuffle may change between versions.
        var permuted = rewards
        for i in stride(from: permuted.count - 1, to: 0, by: -1) {
            permuted.swapAt(i, Int(rng.next() % UInt64(i + 1)))
        }
        return bestAndWorst(permuted, minimumGap: minimumGap).map { ($0.best, $0.worst) }
    }
}

/// The run's pairing rule: `pairGroup` with the run's reward source, gaps and seed, so the round
/// and its diagnostics pair every group alike.
struct GroupPairing {
    let source: RewardSource
    let minimumRewardGap: [Direction: Double]
    let seed: UInt64

    init(_ settings: SuderSettings) {
        source = settings.reward
        minimumRewardGap = settings.minimumRewardGap
        seed = settings.seed
    }

    /// The pair of `item`'s group in round `round`.
    func pair(_ rewards: [Double], direction: Direction, round: Int, item: Int) -> (chosen: Int, rejected: Int)? {
        pairGroup(
            rewards, source: source, minimumGap: minimumRewardGap[direction]!,
            pairingSeed: streamSeed(seed, StreamPurpose.suderPairing, UInt64(round), direction == .generation ? 0 : 1, UInt64(item)))
    }
}
