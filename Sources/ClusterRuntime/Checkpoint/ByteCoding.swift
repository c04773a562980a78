import Foundation

/// Little-endian writer for the checkpoint header.
public struct ByteWriter {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func u8(_ value: UInt8) { bytes.append(value) }
    public mutating func u32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func int(_ value: Int) { u64(UInt64(bitPattern: Int64(value))) }
    public mutating func raw(_ value: [UInt8]) { bytes.append(contentsOf: value) }
    public mutating func string(_ value: String) {
        let utf8 = Array(value.utf8)
        u32(UInt32(utf8.count))
        bytes.append(contentsOf: utf8)
    }
}

/// Little-endian reader over bytes that may be hostile: every read checks the remaining length
/// first, and every count is checked against what the remaining bytes could possibly hold before
/// anything is allocated for it. Errors name `file`.
public struct ByteReader {
    public let bytes: [UInt8]
    public let file: String
    public private(set) var offset = 0

    public init(_ bytes: [UInt8], file: String) {
        self.bytes = bytes
        self.file = file
    }

    public var remaining: Int { bytes.count - offset }

    public func fail(_ problem: String) -> CheckpointError {
        CheckpointError(.corrupt, file, "\(problem) (at byte \(offset) of \(bytes.count))")
    }

    public mutating func take(_ count: Int, _ what: String) throws -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else { throw fail("\(what) needs \(count) bytes, \(remaining) left") }
        defer { offset += count }
        return bytes[offset..<offset + count]
    }

    public mutating func u8(_ what: String) throws -> UInt8 { try take(1, what).first! }

    public mutating func u32(_ what: String) throws -> UInt32 {
        let slice = try take(4, what)
        return slice.reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }

    public mutating func u64(_ what: String) throws -> UInt64 {
        let slice = try take(8, what)
        return slice.reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// A non-negative 64-bit integer no larger than `limit`.
    public mutating func int(_ what: String, limit: Int = Int.max) throws -> Int {
        let value = Int64(bitPattern: try u64(what))
        guard value >= 0, value <= limit else { throw fail("\(what) is \(value), allowed 0...\(limit)") }
        return Int(value)
    }

    /// A count of items each at least `minimumItemBytes` long, so it cannot exceed what is left.
    public mutating func count(_ what: String, minimumItemBytes: Int) throws -> Int {
        let value = Int(try u32(what))
        guard value <= remaining / max(1, minimumItemBytes) else {
            throw fail("\(what) is \(value) but only \(remaining) bytes are left")
        }
        return value
    }

    public mutating func string(_ what: String) throws -> String {
        let length = Int(try u32("length of \(what)"))
        let slice = try take(length, what)
        guard let value = String(validating: slice, as: UTF8.self) else { throw fail("\(what) is not UTF-8") }
        return value
    }
}

// MARK: - Floats as bytes

/// The raw little-endian bytes of `values` (the in-memory layout on every platform we run on).
public func floatsToBytes(_ values: UnsafeBufferPointer<Float>) -> [UInt8] {
    Array(UnsafeRawBufferPointer(values))
}

public func floatsToBytes(_ values: [Float]) -> [UInt8] {
    values.withUnsafeBufferPointer { floatsToBytes($0) }
}

/// Floats from little-endian bytes; the byte count must be a multiple of 4.
public func bytesToFloats(_ bytes: [UInt8], file: String = "<memory>") throws -> [Float] {
    guard bytes.count % 4 == 0 else {
        throw CheckpointError(.corrupt, file, "\(bytes.count) bytes is not a whole number of float32 values")
    }
    return [Float](unsafeUninitializedCapacity: bytes.count / 4) { buffer, initialized in
        bytes.withUnsafeBytes { source in
            UnsafeMutableRawBufferPointer(buffer).copyMemory(from: source)
        }
        initialized = bytes.count / 4
    }
}

// MARK: - Byte grouping

/// Byte grouping ("shuffle" in HDF5/Blosc terms) of float32 data: all first bytes, then all second
/// bytes, ... Exponent and high mantissa bytes of trained weights repeat a lot, so zstd finds much
/// more to work with once they sit together. A trailing partial element is copied as is.
public func byteGroup(_ input: UnsafeRawBufferPointer, elementSize: Int, into output: UnsafeMutableRawBufferPointer) {
    precondition(input.count == output.count)
    let n = input.count / elementSize
    guard let src = input.baseAddress, let dst = output.baseAddress else { return }
    for i in 0..<n {
        for b in 0..<elementSize {
            dst.storeBytes(of: src.load(fromByteOffset: i * elementSize + b, as: UInt8.self), toByteOffset: b * n + i, as: UInt8.self)
        }
    }
    for tail in (n * elementSize)..<input.count {
        dst.storeBytes(of: src.load(fromByteOffset: tail, as: UInt8.self), toByteOffset: tail, as: UInt8.self)
    }
}

/// Inverse of `byteGroup`.
public func byteUngroup(_ input: UnsafeRawBufferPointer, elementSize: Int, into output: UnsafeMutableRawBufferPointer) {
    precondition(input.count == output.count)
    let n = input.count / elementSize
    guard let src = input.baseAddress, let dst = output.baseAddress else { return }
    for i in 0..<n {
        for b in 0..<elementSize {
            dst.storeBytes(of: src.load(fromByteOffset: b * n + i, as: UInt8.self), toByteOffset: i * elementSize + b, as: UInt8.self)
        }
    }
    for tail in (n * elementSize)..<input.count {
        dst.storeBytes(of: src.load(fromByteOffset: tail, as: UInt8.self), toByteOffset: tail, as: UInt8.self)
    }
}

public func byteGrouped(_ bytes: [UInt8], elementSize: Int) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: bytes.count) { out, initialized in
        bytes.withUnsafeBytes { byteGroup($0, elementSize: elementSize, into: UnsafeMutableRawBufferPointer(out)) }
        initialized = bytes.count
    }
}

public func byteUngrouped(_ bytes: [UInt8], elementSize: Int) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: bytes.count) { out, initialized in
        bytes.withUnsafeBytes { byteUngroup($0, elementSize: elementSize, into: UnsafeMutableRawBufferPointer(out)) }
        initialized = bytes.count
    }
}
