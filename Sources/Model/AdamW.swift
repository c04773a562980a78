import Foundation

/// Warmup then cosine decay: linear from 0 to `peak` over `warmupSteps`, then cosine down to
/// `peak * minRatio` at `totalSteps`, constant after. Steps count from 1.
public struct LearningRateSchedule: Equatable, Codable, Sendable {
    public var peak: Float
    public var warmupSteps: Int
    public var totalSteps: Int
    public var minRatio: Float

    public init(peak: Float, warmupSteps: Int = 0, totalSteps: Int, minRatio: Float = 0.1) {
        self.peak = peak
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.minRatio = minRatio
    }

    public func rate(atStep step: Int) -> Float {
        if step <= warmupSteps && warmupSteps > 0 { return peak * Float(step) / Float(warmupSteps) }
        let decaySteps = max(1, totalSteps - warmupSteps)
        let progress = min(1, Double(step - warmupSteps) / Double(decaySteps))
        let cosine = 0.5 * (1 + Foundation.cos(Double.pi * progress))
        return peak * (minRatio + (1 - minRatio) * Float(cosine))
    }
}

/// Scales `gradients` so their global L2 norm is at most `maxNorm` (no-op when maxNorm <= 0) and
/// returns the norm before clipping.
@discardableResult
public func clipGradients(_ gradients: UnsafeMutableBufferPointer<Float>, maxNorm: Float) -> Float {
    let norm = Float(l2Norm(UnsafeBufferPointer(gradients)))
    if maxNorm > 0 && norm > maxNorm {
        let scale = maxNorm / (norm + 1e-6), g = gradients.baseAddress!
        parallelRanges(gradients.count, work: gradients.count * elementWork) { range in
            for i in range { g[i] *= scale }
        }
    }
    return norm
}

/// L2 norm accumulated in Double (a sum of millions of squares loses digits in Float), in index
/// order on one thread: the norm sets the clip scale, and any other order would change published
/// runs' weights in the last bits for a part worth under 1% of a step.
public func l2Norm(_ values: UnsafeBufferPointer<Float>) -> Double {
    var sum = 0.0
    for v in values { sum += Double(v) * Double(v) }
    return sum.squareRoot()
}

/// AdamW (Loshchilov & Hutter) over flat buffers, matching torch.optim.AdamW: decoupled weight
/// decay p -= lr * wd * p, then the bias-corrected Adam step. Decay applies only where
/// `decayMask` is true (matrices; not norm gains). Moments and the step count are the whole
/// state, exposed for bitwise checkpoints.
public final class AdamW {
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float
    /// Number of updates applied so far.
    public var step: Int = 0
    public let m: UnsafeMutableBufferPointer<Float>
    public let v: UnsafeMutableBufferPointer<Float>
    private let decayMask: UnsafeMutableBufferPointer<Float>

    /// `table` decides where weight decay applies (ParameterEntry.decays).
    public init(
        parameterTable table: [ParameterEntry], parameterCount: Int,
        beta1: Float = 0.9, beta2: Float = 0.95, epsilon: Float = 1e-8, weightDecay: Float = 0.1
    ) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        m = UnsafeMutableBufferPointer(start: allocateAligned(parameterCount, of: Float.self), count: parameterCount)
        v = UnsafeMutableBufferPointer(start: allocateAligned(parameterCount, of: Float.self), count: parameterCount)
        decayMask = UnsafeMutableBufferPointer(start: allocateAligned(parameterCount, of: Float.self), count: parameterCount)
        for entry in table where entry.decays {
            (decayMask.baseAddress! + entry.offset).update(repeating: 1, count: entry.count)
        }
    }

    deinit {
        deallocateAligned(m.baseAddress!)
        deallocateAligned(v.baseAddress!)
        deallocateAligned(decayMask.baseAddress!)
    }

    /// One update of `parameters` from `gradients` at `learningRate`.
    public func update(parameters: UnsafeMutableBufferPointer<Float>, gradients: UnsafeMutableBufferPointer<Float>, learningRate lr: Float) {
        precondition(parameters.count == m.count && gradients.count == m.count, "buffer sizes differ from the optimizer's")
        step += 1
        let correction1 = 1 - Float(Foundation.pow(Double(beta1), Double(step)))
        let correction2 = 1 - Float(Foundation.pow(Double(beta2), Double(step)))
        let p = parameters.baseAddress!, g = gradients.baseAddress!, m = m.baseAddress!, v = v.baseAddress!
        let mask = decayMask.baseAddress!
        let (b1, b2, eps, decay) = (beta1, beta2, epsilon, lr * weightDecay)
        let stepSize = lr / correction1
        let invSqrtCorrection2 = 1 / correction2.squareRoot()
        // Every parameter's update is its own: ranges of them split over the threads.
        parallelRanges(parameters.count, work: parameters.count * elementWork) { range in
            for i in range {
                let grad = g[i]
                m[i] = b1 * m[i] + (1 - b1) * grad
                v[i] = b2 * v[i] + (1 - b2) * grad * grad
                p[i] -= decay * mask[i] * p[i]
                p[i] -= stepSize * m[i] / (v[i].squareRoot() * invSqrtCorrection2 + eps)
            }
        }
    }
}
