import Foundation

/// Token shards: many records of a few token fields each (e.g. prompt and image), in one
/// little-endian file. Layout (docs/DATA.md has the table):
///
///     0   8 bytes  magic "SUDERTOK"
///     8   u32      version (1)
///     12  u32      fields per record F (1...16)
///     16  u64      record count N
///     24  u64      token count T
///     32  u32      vocabulary size V (every token is in 0..<V)
///     36  u32      reserved (0)
///     40  16 bytes kind, ASCII, zero-padded ("train_pairs", ...)
///     56  u64 x (N*F + 1)  token offsets: field f of record r is tokens[off[r*F+f] ..< off[r*F+f+1]]
///     ..  i32 x T          tokens
public struct TokenShard: Sendable {
    public let kind: String
    public let fieldCount: Int
    public let recordCount: Int
    public let vocabularySize: Int
    let offsets: [Int]
    let tokens: [Int32]

    /// Field `field` of record `record`.
    public func field(_ record: Int, _ field: Int) -> ArraySlice<Int32> {
        precondition(record >= 0 && record < recordCount && field >= 0 && field < fieldCount, "TokenShard \(kind): no field \(field) of record \(record)")
        let slot = record * fieldCount + field
        return tokens[offsets[slot]..<offsets[slot + 1]]
    }
}

let shardMagic = Array("SUDERTOK".utf8)
let shardVersion: UInt32 = 1
let shardHeaderSize = 56
let shardMaximumFields = 16

/// Accumulates records in memory and writes a shard atomically.
public struct TokenShardWriter {
    public let kind: String
    public let fieldCount: Int
    public let vocabularySize: Int
    private var offsets: [UInt64] = [0]
    private var tokens: [Int32] = []

    public init(kind: String, fieldCount: Int, vocabularySize: Int) {
        precondition(kind.utf8.count <= 16 && (1...shardMaximumFields).contains(fieldCount))
        self.kind = kind; self.fieldCount = fieldCount; self.vocabularySize = vocabularySize
    }

    public var recordCount: Int { (offsets.count - 1) / fieldCount }

    public mutating func append(_ fields: [Int32]...) { append(fields: fields) }

    public mutating func append(fields: [[Int32]]) {
        precondition(fields.count == fieldCount, "\(kind): \(fields.count) fields, expected \(fieldCount)")
        for field in fields {
            precondition(field.allSatisfy { $0 >= 0 && Int($0) < vocabularySize }, "\(kind): token outside the vocabulary")
            tokens += field
            offsets.append(UInt64(tokens.count))
        }
    }

    public func write(to url: URL) throws {
        var bytes = shardMagic
        bytes.reserveCapacity(shardHeaderSize + 8 * offsets.count + 4 * tokens.count)
        appendUInt32(&bytes, shardVersion)
        appendUInt32(&bytes, UInt32(fieldCount))
        appendUInt64(&bytes, UInt64(recordCount))
        appendUInt64(&bytes, UInt64(tokens.count))
        appendUInt32(&bytes, UInt32(vocabularySize))
        appendUInt32(&bytes, 0)
        bytes += Array(kind.utf8) + [UInt8](repeating: 0, count: 16 - kind.utf8.count)
        for offset in offsets { appendUInt64(&bytes, offset) }
        for token in tokens { appendUInt32(&bytes, UInt32(bitPattern: token)) }
        try Data(bytes).write(to: url, options: .atomic)
    }
}

/// Reads and validates a shard. Every count and offset is checked against the file size before
/// anything is allocated, so a truncated or hostile file is an error naming the problem.
/// `kind`, `fieldCount` and `vocabularySize`, when given, must match the header.
public func readTokenShard(
    _ url: URL, kind expectedKind: String? = nil, fieldCount expectedFields: Int? = nil,
    vocabularySize expectedVocabulary: Int? = nil
) throws -> TokenShard {
    let path = url.path
    let data = try readWholeFile(url)
    func fail(_ reason: String) -> WorldError { .malformedFile(path: path, reason: reason) }
    guard data.count >= shardHeaderSize else { throw fail("\(data.count) bytes, shorter than the \(shardHeaderSize)-byte header") }
    guard Array(data.prefix(8)) == shardMagic else { throw fail("wrong magic (not a token shard)") }
    let version = readUInt32(data, at: 8)
    guard version == shardVersion else { throw fail("version \(version), expected \(shardVersion)") }
    let fieldCount = Int(readUInt32(data, at: 12))
    guard (1...shardMaximumFields).contains(fieldCount) else { throw fail("\(fieldCount) fields per record, expected 1...\(shardMaximumFields)") }
    let recordCount64 = readUInt64(data, at: 16), tokenCount64 = readUInt64(data, at: 24)
    let vocabularySize = Int(readUInt32(data, at: 32))
    let kindBytes = Array(data[(data.startIndex + 40)..<(data.startIndex + 56)]).prefix { $0 != 0 }
    guard let kind = String(bytes: kindBytes, encoding: .ascii) else { throw fail("kind is not ASCII") }
    if let expectedKind, kind != expectedKind { throw fail("kind '\(kind)', expected '\(expectedKind)'") }
    if let expectedFields, fieldCount != expectedFields { throw fail("\(fieldCount) fields per record, expected \(expectedFields)") }
    if let expectedVocabulary, vocabularySize != expectedVocabulary {
        throw fail("vocabulary size \(vocabularySize), expected \(expectedVocabulary) (shard from another dataset?)")
    }
    // Sizes: bound the counts by the file size first, so the products below cannot overflow.
    let available = UInt64(data.count - shardHeaderSize)
    guard recordCount64 <= available / 8 / UInt64(fieldCount), tokenCount64 <= available / 4 else {
        throw fail("header claims \(recordCount64) records and \(tokenCount64) tokens; the file has \(data.count) bytes")
    }
    let recordCount = Int(recordCount64), tokenCount = Int(tokenCount64)
    let offsetCount = recordCount * fieldCount + 1
    let expectedSize = shardHeaderSize + 8 * offsetCount + 4 * tokenCount
    guard data.count == expectedSize else {
        throw fail("\(data.count) bytes, expected \(expectedSize) for \(recordCount) records and \(tokenCount) tokens (truncated?)")
    }
    // The size check above makes every read below in bounds.
    var offsets = [Int](repeating: 0, count: offsetCount)
    var tokens = [Int32](repeating: 0, count: tokenCount)
    let tokenStart = shardHeaderSize + 8 * offsetCount
    let problem: String? = data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> String? in
        var previous: UInt64 = 0
        for i in 0..<offsetCount {
            let offset = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: shardHeaderSize + 8 * i, as: UInt64.self))
            guard offset >= previous, offset <= tokenCount64 else { return "offset \(i) = \(offset) is out of order or past \(tokenCount) tokens" }
            offsets[i] = Int(offset); previous = offset
        }
        guard offsets[0] == 0, offsets[offsetCount - 1] == tokenCount else { return "offsets do not span the \(tokenCount) tokens" }
        for i in 0..<tokenCount {
            let token = Int32(littleEndian: raw.loadUnaligned(fromByteOffset: tokenStart + 4 * i, as: Int32.self))
            guard token >= 0 && Int(token) < vocabularySize else { return "token \(i) = \(token) outside the vocabulary 0..<\(vocabularySize)" }
            tokens[i] = token
        }
        return nil
    }
    if let problem { throw fail(problem) }
    return TokenShard(
        kind: kind, fieldCount: fieldCount, recordCount: recordCount, vocabularySize: vocabularySize,
        offsets: offsets, tokens: tokens)
}

// MARK: - Little-endian helpers shared by the binary formats

func appendUInt32(_ bytes: inout [UInt8], _ value: UInt32) {
    for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
}

func appendUInt64(_ bytes: inout [UInt8], _ value: UInt64) {
    for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
}

/// Callers check `offset + 4 <= data.count` first.
func readUInt32(_ data: Data, at offset: Int) -> UInt32 {
    var value: UInt32 = 0
    for i in 0..<4 { value |= UInt32(data[data.startIndex + offset + i]) << UInt32(8 * i) }
    return value
}

func readUInt64(_ data: Data, at offset: Int) -> UInt64 {
    var value: UInt64 = 0
    for i in 0..<8 { value |= UInt64(data[data.startIndex + offset + i]) << UInt64(8 * i) }
    return value
}

/// The file's bytes, or `missingFile` when it does not exist.
func readWholeFile(_ url: URL) throws -> Data {
    guard FileManager.default.fileExists(atPath: url.path) else { throw WorldError.missingFile(path: url.path) }
    do { return try Data(contentsOf: url, options: .alwaysMapped) } catch {
        throw WorldError.malformedFile(path: url.path, reason: "unreadable: \(error.localizedDescription)")
    }
}
