// XXH64 primes.
private let p1: UInt64 = 0x9E37_79B1_85EB_CA87
private let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
private let p3: UInt64 = 0x1656_67B1_9E37_79F9
private let p4: UInt64 = 0x85EB_CA77_C2B2_AE63
private let p5: UInt64 = 0x27D4_EB2F_1656_67C5

@inline(__always) private func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

/// XXH64 (seed 0 by default), the hash zstd uses for its frame checksum. Checkpoints store it for
/// every section's uncompressed bytes, so a bug in compression, byte grouping or the disk is caught
/// on load even where zstd's own 32-bit frame checksum is not consulted.
/// Reference: https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md
public func xxhash64(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
    func round(_ acc: UInt64, _ lane: UInt64) -> UInt64 { rotl(acc &+ lane &* p2, 31) &* p1 }
    func merge(_ acc: UInt64, _ lane: UInt64) -> UInt64 { (acc ^ round(0, lane)) &* p1 &+ p4 }

    let count = bytes.count
    guard let base = bytes.baseAddress else { return xxhash64Tail(seed &+ p5, nil, 0, 0) }
    func lane64(_ at: Int) -> UInt64 { UInt64(littleEndian: base.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }

    var offset = 0
    var hash: UInt64
    if count >= 32 {
        var v1 = seed &+ p1 &+ p2, v2 = seed &+ p2, v3 = seed, v4 = seed &- p1
        while offset + 32 <= count {
            v1 = round(v1, lane64(offset))
            v2 = round(v2, lane64(offset + 8))
            v3 = round(v3, lane64(offset + 16))
            v4 = round(v4, lane64(offset + 24))
            offset += 32
        }
        hash = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
        hash = merge(hash, v1); hash = merge(hash, v2); hash = merge(hash, v3); hash = merge(hash, v4)
    } else {
        hash = seed &+ p5
    }
    return xxhash64Tail(hash, base, offset, count)
}

public func xxhash64(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 {
    bytes.withUnsafeBytes { xxhash64($0, seed: seed) }
}

/// The last < 32 bytes and the final avalanche of XXH64.
private func xxhash64Tail(_ accumulated: UInt64, _ base: UnsafeRawPointer?, _ start: Int, _ count: Int) -> UInt64 {
    var hash = accumulated &+ UInt64(count)
    var offset = start
    if let base {
        while offset + 8 <= count {
            let lane = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            hash ^= rotl(lane &* p2, 31) &* p1
            hash = rotl(hash, 27) &* p1 &+ p4
            offset += 8
        }
        if offset + 4 <= count {
            let lane = UInt64(UInt32(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            hash ^= lane &* p1
            hash = rotl(hash, 23) &* p2 &+ p3
            offset += 4
        }
        while offset < count {
            hash ^= UInt64(base.load(fromByteOffset: offset, as: UInt8.self)) &* p5
            hash = rotl(hash, 11) &* p1
            offset += 1
        }
    }
    hash ^= hash >> 33
    hash = hash &* p2
    hash ^= hash >> 29
    hash = hash &* p3
    hash ^= hash >> 32
    return hash
}
