/// Index of the first NaN or infinity in `values`, nil if all are finite. Plain reference for
/// `allFinite`.
public func firstNonFiniteIndex(_ values: UnsafeBufferPointer<Float>) -> Int? {
    values.firstIndex { !$0.isFinite }
}

/// True when no value is NaN or infinite. Cheap enough to run on every gradient and loss buffer
/// each step: a float is non-finite exactly when its 8 exponent bits are all ones, so the maximum
/// of the masked exponents over the buffer decides it. An integer max is associative, so the
/// compiler vectorises the loop (a float comparison chain would not be).
public func allFinite(_ values: UnsafeBufferPointer<Float>) -> Bool {
    let exponentMask: UInt32 = 0x7F80_0000
    guard let base = values.baseAddress else { return true }
    let bits = UnsafeRawPointer(base).assumingMemoryBound(to: UInt32.self)
    var largest: UInt32 = 0
    for i in 0..<values.count {
        largest = max(largest, bits[i] & exponentMask)
    }
    return largest != exponentMask
}

public func allFinite(_ values: [Float]) -> Bool {
    values.withUnsafeBufferPointer { allFinite($0) }
}

/// A NaN or infinity found in training state. `what` says where (stage, step, direction), so the
/// stage can stop with a message instead of writing a poisoned checkpoint.
public struct NonFiniteError: Error, CustomStringConvertible {
    public let what: String
    public let index: Int
    public let value: Float

    public var description: String { "\(what): element \(index) is \(value); stopping before it reaches a checkpoint" }
}

/// Throws `NonFiniteError` naming `what` and the first bad element if `values` has one.
public func checkFinite(_ values: UnsafeBufferPointer<Float>, what: String) throws {
    if allFinite(values) { return }
    let index = firstNonFiniteIndex(values)!
    throw NonFiniteError(what: what, index: index, value: values[index])
}

public func checkFinite(_ values: [Float], what: String) throws {
    try values.withUnsafeBufferPointer { try checkFinite($0, what: what) }
}
