/// SplitMix64: the world's seeded generator. The world must be reproducible from its seed on
/// every platform, which `SystemRandomNumberGenerator` is not.
public struct SplitMix64RNG: RandomNumberGenerator {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// A generator for an independent stream (one per split) derived from one seed, so adding
    /// examples to one split does not shift the others.
    public init(seed: UInt64, stream: UInt64) {
        var mixer = SplitMix64RNG(seed: seed ^ (stream &* 0xD1B5_4A32_D192_ED03))
        state = mixer.next()
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
