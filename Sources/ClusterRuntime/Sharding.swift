/// The items rank `rank` of `size` handles: rank, rank + size, ...
public func shardIndices(count: Int, rank: Int, size: Int) -> [Int] {
    Array(stride(from: rank, to: count, by: size))
}
