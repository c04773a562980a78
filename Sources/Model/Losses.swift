import Foundation

/// Per-pair results of a preference loss (TRL's conventions for names and signs).
/// `chosenGradients[i]` / `rejectedGradients[i]` are dLoss_i / dlogp of the *summed* completion
/// log-probs of pair i: pass them (divided by the number of pairs for a mean loss) as the
/// sequence coefficients of `Transformer.backward`.
public struct PreferenceLosses: Equatable, Sendable {
    public var losses: [Double]
    public var chosenRewards: [Double]
    public var rejectedRewards: [Double]
    public var chosenGradients: [Double]
    public var rejectedGradients: [Double]

    public var meanLoss: Double { mean(losses) }
    public var meanChosenReward: Double { mean(chosenRewards) }
    public var meanRejectedReward: Double { mean(rejectedRewards) }
    public var meanMargin: Double { mean(zip(chosenRewards, rejectedRewards).map { $0 - $1 }) }
    /// Fraction of pairs whose chosen reward beats the rejected one (`rewards/accuracies`).
    public var accuracy: Double { mean(zip(chosenRewards, rejectedRewards).map { $0 > $1 ? 1 : 0 }) }

    private func mean(_ xs: [Double]) -> Double { xs.isEmpty ? 0 : xs.reduce(0, +) / Double(xs.count) }
}

/// -log sigmoid(z) without overflow for large |z|.
@inline(__always)
func negativeLogSigmoid(_ z: Double) -> Double {
    z >= 0 ? Foundation.log1p(Foundation.exp(-z)) : -z + Foundation.log1p(Foundation.exp(z))
}

@inline(__always)
func sigmoid(_ z: Double) -> Double {
    z >= 0 ? 1 / (1 + Foundation.exp(-z)) : Foundation.exp(z) / (1 + Foundation.exp(z))
}

/// SimPO (Meng et al. 2024), reference-free and length-normalised:
/// L = -log sigmoid((beta/|y_w|) logp_w - (beta/|y_l|) logp_l - gamma).
/// Log-probs are sums over completion tokens; lengths are completion token counts.
/// Rewards are beta * logp / |y| (TRL's `rewards/chosen`, `rewards/rejected`).
public func simpoLoss(
    chosenLogProbs: [Double], chosenLengths: [Double],
    rejectedLogProbs: [Double], rejectedLengths: [Double],
    beta: Double = 2.0, gamma: Double = 0.5
) -> PreferenceLosses {
    let n = chosenLogProbs.count
    precondition(
        chosenLengths.count == n && rejectedLogProbs.count == n && rejectedLengths.count == n,
        "one log-prob and length per pair")
    var result = PreferenceLosses(losses: [], chosenRewards: [], rejectedRewards: [], chosenGradients: [], rejectedGradients: [])
    for i in 0..<n {
        precondition(chosenLengths[i] > 0 && rejectedLengths[i] > 0, "empty completion")
        let chosenScale = beta / chosenLengths[i], rejectedScale = beta / rejectedLengths[i]
        let chosenReward = chosenScale * chosenLogProbs[i]
        let rejectedReward = rejectedScale * rejectedLogProbs[i]
        let z = chosenReward - rejectedReward - gamma
        // dL/dz = -sigmoid(-z)
        let dz = -sigmoid(-z)
        result.losses.append(negativeLogSigmoid(z))
        result.chosenRewards.append(chosenReward)
        result.rejectedRewards.append(rejectedReward)
        result.chosenGradients.append(dz * chosenScale)
        result.rejectedGradients.append(-dz * rejectedScale)
    }
    return result
}

/// DPO (Rafailov et al. 2023) against a frozen reference model:
/// L = -log sigmoid(beta (logp_w - ref_w) - beta (logp_l - ref_l)).
/// Rewards are beta * (logp - ref). Gradients are w.r.t. the policy log-probs only.
public func dpoLoss(
    chosenLogProbs: [Double], rejectedLogProbs: [Double],
    referenceChosenLogProbs: [Double], referenceRejectedLogProbs: [Double],
    beta: Double = 0.1
) -> PreferenceLosses {
    let n = chosenLogProbs.count
    precondition(
        rejectedLogProbs.count == n && referenceChosenLogProbs.count == n && referenceRejectedLogProbs.count == n,
        "one log-prob of each kind per pair")
    var result = PreferenceLosses(losses: [], chosenRewards: [], rejectedRewards: [], chosenGradients: [], rejectedGradients: [])
    for i in 0..<n {
        let chosenReward = beta * (chosenLogProbs[i] - referenceChosenLogProbs[i])
        let rejectedReward = beta * (rejectedLogProbs[i] - referenceRejectedLogProbs[i])
        let z = chosenReward - rejectedReward
        let dz = -sigmoid(-z)
        result.losses.append(negativeLogSigmoid(z))
        result.chosenRewards.append(chosenReward)
        result.rejectedRewards.append(rejectedReward)
        result.chosenGradients.append(dz * beta)
        result.rejectedGradients.append(-dz * beta)
    }
    return result
}

/// Per-sample results of GRPO over one group of samples drawn for the same context.
/// `gradients[i]` is dLoss_i / dlogp of sample i's *summed* completion log-probs, to be passed
/// (divided by the number of samples for a mean loss) as sequence coefficients of `backward`.
public struct GroupPolicyLosses: Equatable, Sendable {
    public var losses: [Double]
    public var advantages: [Double]
    public var gradients: [Double]
    /// The KL estimate to the reference per sample (0 without a reference).
    public var kl: [Double]
    /// Samples whose probability ratio left [1 - clip, 1 + clip] in the direction the clip stops.
    public var clipped: Int
}

/// Group-relative advantages (r - mean) / (std + epsilon) with the sample standard deviation
/// (n - 1, as TRL's GRPO); nil when every reward ties, since such a group teaches nothing.
public func groupAdvantages(_ rewards: [Double], epsilon: Double = 1e-4) -> [Double]? {
    guard rewards.count > 1, let low = rewards.min(), let high = rewards.max(), high > low else { return nil }
    let mean = rewards.reduce(0, +) / Double(rewards.count)
    let variance = rewards.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(rewards.count - 1)
    return rewards.map { ($0 - mean) / (variance.squareRoot() + epsilon) }
}

/// GRPO (Shao et al. 2024) on length-normalised sequence log-probs s = logp / |y|:
/// L_i = -min(rho_i A_i, clip(rho_i, 1 - clip, 1 + clip) A_i) + klWeight * KL_i, where
/// rho_i = exp(s_i - s_old_i) and KL_i = exp(s_ref_i - s_i) - (s_ref_i - s_i) - 1 (the k3 estimator,
/// never negative). With one update per round, old = current, so rho = 1 and no clip is active.
public func grpoLoss(
    logProbs: [Double], lengths: [Double], advantages: [Double],
    oldLogProbs: [Double]? = nil, referenceLogProbs: [Double]? = nil,
    klWeight: Double = 0, clip: Double = 0.2
) -> GroupPolicyLosses {
    let n = logProbs.count
    precondition(
        lengths.count == n && advantages.count == n && (oldLogProbs?.count ?? n) == n
            && (referenceLogProbs?.count ?? n) == n, "one log-prob, length and advantage per sample")
    var result = GroupPolicyLosses(losses: [], advantages: advantages, gradients: [], kl: [], clipped: 0)
    for i in 0..<n {
        precondition(lengths[i] > 0, "empty completion")
        let s = logProbs[i] / lengths[i]
        let ratio = Foundation.exp(s - (oldLogProbs.map { $0[i] / lengths[i] } ?? s))
        let a = advantages[i]
        // The clipped branch is the minimum (and has zero gradient) only past the bound on the
        // side where the advantage would push the ratio further out.
        let clipStops = (a > 0 && ratio > 1 + clip) || (a < 0 && ratio < 1 - clip)
        var loss = clipStops ? -min(max(ratio, 1 - clip), 1 + clip) * a : -ratio * a
        var dLossDs = clipStops ? 0 : -ratio * a
        if clipStops { result.clipped += 1 }
        var kl = 0.0
        if let referenceLogProbs {
            let d = referenceLogProbs[i] / lengths[i] - s
            kl = Foundation.exp(d) - d - 1
            loss += klWeight * kl
            dLossDs += klWeight * (1 - Foundation.exp(d))
        }
        result.losses.append(loss)
        result.kl.append(kl)
        result.gradients.append(dLossDs / lengths[i])
    }
    return result
}
