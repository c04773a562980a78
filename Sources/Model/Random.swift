import Foundation

/// xoshiro256**, seeded through SplitMix64: the model's generator for initialisation, sampling,
/// data order and anything else that must be reproducible from a seed (the world has its own,
/// `SplitMix64RNG`, so the two packages stay independent).
public struct Xoshiro256RNG: RandomNumberGenerator, Equatable {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    public init(seed: UInt64) {
        // SplitMix64 spreads any seed (including 0) over the state, as the xoshiro authors advise.
        var x = seed
        func splitMix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitMix(); s1 = splitMix(); s2 = splitMix(); s3 = splitMix()
    }

    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = rotl(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = rotl(s3, 45)
        return result
    }

    /// Uniform in [0, 1) with 53 random bits.
    @inline(__always)
    public mutating func nextUniform() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }

    /// Standard normal by Box-Muller (one draw per call: simpler state than caching the pair).
    public mutating func nextGaussian() -> Double {
        let u1 = 1.0 - nextUniform()  // in (0, 1], so log is finite
        let u2 = nextUniform()
        return (-2.0 * Foundation.log(u1)).squareRoot() * Foundation.cos(2.0 * Double.pi * u2)
    }

    @inline(__always)
    private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }
}
