/// The items rank `rank` of `size` handles: rank, rank + size, ...
public func shardIndices(count: Int, rank: Int, size: Int) -> [Int] {
    Array(stride(from: rank, to: count, by: size))
}

/// What a job with more ranks than items of some work says before it starts: the extra ranks
/// are correct (they add nothing to sums and wait at each collective) but spent for nothing.
public func idleRanksNotice(items: Int, ranks: Int, of work: String, setBy key: String) -> String? {
    guard ranks > items else { return nil }
    return "note: \(ranks - items) of \(ranks) ranks get no \(work) (\(key) = \(items)); they only join the collectives. "
        + "Use at most \(items) ranks, or raise \(key)."
}
