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
