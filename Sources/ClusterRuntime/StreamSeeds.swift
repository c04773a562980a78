import Foundation

/// A seed for one random stream named by its parts (e.g. seed, stage, round, item): streams
/// depend on what is sampled, never on which rank samples it, so results do not depend on the
/// rank count.
public func streamSeed(_ parts: UInt64...) -> UInt64 {
    var h: UInt64 = 0x9E37_79B9_7F4A_7C15
    for part in parts {
        h ^= part &+ 0x9E37_79B9_7F4A_7C15 &+ (h << 6) &+ (h >> 2)
        // SplitMix64 finaliser: every input bit affects every output bit.
        h = (h ^ (h >> 30)) &* 0xBF58_476D_1CE4_E5B9
        h = (h ^ (h >> 27)) &* 0x94D0_49BB_1331_11EB
        h ^= h >> 31
    }
    return h
}
