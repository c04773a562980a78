import Foundation

// A checkpoint is a directory:
//
//   step-000000001200/
//     header.bin            layout below
//     weights.zst           one zstd frame per section, frame checksum on
//     adam_m.zst, adam_v.zst, adam_step.zst, ... (any section a stage adds)
//
// header.bin, little-endian:
//   "SUDERCKP"  u32 formatVersion  u64 bodyLength  body[bodyLength]  u64 xxh64(everything before)
// body:
//   string stage, i64 step, u32 rankCount, string configYAML,
//   u32 tensorCount  { string name, u32 rank, u64 dims[rank], u64 byteOffset into "weights" } (float32)
//   u32 sectionCount { string name, u8 layout, u64 uncompressedSize, u64 compressedSize,
//                      u64 xxh64 of the uncompressed (un-grouped) bytes }
// string = u32 byte count + UTF-8. layout 0 = bytes as given, 1 = float32 byte-grouped before zstd.
// Format version 1 had an i64 round after step (always equal to step or 0); it is still read.

/// An error that names the file and what is wrong with it.
public struct CheckpointError: Error, CustomStringConvertible, Equatable {
    public enum Kind: Equatable, CaseIterable {
        /// A file is missing, torn, fails a checksum or holds impossible values.
        case corrupt
        /// Writing failed (disk full, permission, file size limit); earlier checkpoints are intact.
        case writeFailed
        /// Checkpoints exist but none is valid: refusing to start fresh.
        case noValidCheckpoint
        /// The caller passed something that cannot be saved (non-finite weights, bad names).
        case invalidInput
    }

    public let kind: Kind
    public let file: String
    public let problem: String

    public init(_ kind: Kind, _ file: String, _ problem: String) {
        self.kind = kind
        self.file = file
        self.problem = problem
    }

    public var description: String { "\(file): \(problem)" }
}

/// One float32 tensor inside the "weights" section.
public struct TensorEntry: Equatable {
    public var name: String
    public var shape: [Int]
    /// Byte offset into the uncompressed "weights" section.
    public var byteOffset: Int

    public init(name: String, shape: [Int], byteOffset: Int) {
        self.name = name
        self.shape = shape
        self.byteOffset = byteOffset
    }

    public var elementCount: Int { shape.reduce(1, *) }
}

/// How a section was stored, as recorded in the header.
public struct SectionEntry: Equatable {
    public enum Layout: UInt8 { case raw = 0, float32Grouped = 1 }
    public var name: String
    public var layout: Layout
    public var uncompressedSize: Int
    public var compressedSize: Int
    public var checksum: UInt64

    public var fileName: String { name + ".zst" }
}

public struct CheckpointHeader: Equatable {
    public static let magic: [UInt8] = Array("SUDERCKP".utf8)
    public static let formatVersion: UInt32 = 2
    public static let fileName = "header.bin"

    public var stage: String
    /// Optimizer steps (pretrain) or rounds (SUDER) completed.
    public var step: Int
    /// Ranks of the job that wrote it.
    public var rankCount: Int
    /// The resolved config the run used, as YAML.
    public var configYAML: String
    /// Names, shapes and offsets of the tensors in the "weights" section (the model's table).
    public var tensors: [TensorEntry]
    /// Filled in by the writer.
    public internal(set) var sections: [SectionEntry]

    public init(stage: String, step: Int, configYAML: String, tensors: [TensorEntry]) {
        self.stage = stage
        self.step = step
        self.rankCount = 1
        self.configYAML = configYAML
        self.tensors = tensors
        self.sections = []
    }
}

/// A checkpoint in memory: header plus named byte blobs ("weights", "adam_m", "adam_v",
/// "adam_step", anything a stage needs).
public struct Checkpoint {
    public var header: CheckpointHeader
    public var sections: [String: [UInt8]]

    public init(header: CheckpointHeader, sections: [String: [UInt8]]) {
        self.header = header
        self.sections = sections
    }

    /// A float32 section ("weights", "adam_m", ...) as floats.
    public func floats(_ name: String) throws -> [Float] {
        guard let bytes = sections[name] else {
            throw CheckpointError(.corrupt, "section \(name)", "not in the checkpoint (has \(sections.keys.sorted()))")
        }
        return try bytesToFloats(bytes, file: "section \(name)")
    }

    /// Copies a float32 section into a buffer the model owns (its flat parameter or moment
    /// buffer); a size mismatch (a config that changed since the checkpoint) is an error.
    public func copyFloats(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard let bytes = sections[name] else {
            throw CheckpointError(.corrupt, "section \(name)", "not in the checkpoint (has \(sections.keys.sorted()))")
        }
        guard bytes.count == destination.count * 4 else {
            throw CheckpointError(
                .invalidInput, "section \(name)",
                "holds \(bytes.count / 4) floats but the model expects \(destination.count) (config changed since step \(header.step)?)")
        }
        bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(destination).copyMemory(from: $0) }
    }
}

/// Section names become file names: keep them to a safe alphabet, no path tricks.
public func validateSectionName(_ name: String, file: String, kind: CheckpointError.Kind = .invalidInput) throws {
    let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    guard !name.isEmpty, name.count <= 64, name.first != ".", name.allSatisfy(allowed.contains) else {
        throw CheckpointError(kind, file, "section name \"\(name)\" must be 1-64 characters of [A-Za-z0-9_.-] not starting with '.'")
    }
}

// MARK: - Header encoding

extension CheckpointHeader {
    /// Largest header.bin we read: a config and a tensor table are kilobytes, not gigabytes.
    public static let maximumFileSize = 64 << 20
    public static let maximumTensorRank = 8

    public func encoded() -> [UInt8] {
        var body = ByteWriter()
        body.string(stage)
        body.int(step)
        body.u32(UInt32(rankCount))
        body.string(configYAML)
        body.u32(UInt32(tensors.count))
        for tensor in tensors {
            body.string(tensor.name)
            body.u32(UInt32(tensor.shape.count))
            for dim in tensor.shape { body.int(dim) }
            body.int(tensor.byteOffset)
        }
        body.u32(UInt32(sections.count))
        for section in sections {
            body.string(section.name)
            body.u8(section.layout.rawValue)
            body.int(section.uncompressedSize)
            body.int(section.compressedSize)
            body.u64(section.checksum)
        }
        var file = ByteWriter()
        file.raw(Self.magic)
        file.u32(Self.formatVersion)
        file.int(body.bytes.count)
        file.raw(body.bytes)
        file.u64(xxhash64(file.bytes))
        return file.bytes
    }

    /// Parses and validates header.bin. Every length, count and offset is checked before use.
    public static func decode(_ bytes: [UInt8], file: String) throws -> CheckpointHeader {
        var reader = ByteReader(bytes, file: file)
        guard Array(try reader.take(magic.count, "magic")) == magic else {
            throw reader.fail("not a suder checkpoint header (magic is not SUDERCKP)")
        }
        let version = try reader.u32("format version")
        guard version == formatVersion || version == 1 else {
            throw reader.fail("format version \(version); this build reads versions 1 and \(formatVersion)")
        }
        let bodyLength = try reader.int("body length", limit: reader.remaining)
        guard reader.remaining == bodyLength + 8 else {
            throw reader.fail("body length \(bodyLength) + 8-byte checksum does not match the \(reader.remaining) bytes left (torn write?)")
        }
        let stored = UInt64(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: bytes.count - 8, as: UInt64.self) })
        let computed = bytes.withUnsafeBytes { xxhash64(UnsafeRawBufferPointer(rebasing: $0[..<(bytes.count - 8)])) }
        guard stored == computed else {
            throw reader.fail(String(format: "header checksum mismatch: stored %016llx, computed %016llx", stored, computed))
        }

        let stage = try reader.string("stage")
        let step = try reader.int("step")
        if version == 1 { _ = try reader.int("round") }
        let rankCount = Int(try reader.u32("rank count"))
        guard rankCount >= 1 else { throw reader.fail("rank count is 0") }
        let config = try reader.string("config")
        var header = CheckpointHeader(stage: stage, step: step, configYAML: config, tensors: [])
        header.rankCount = rankCount

        // A tensor entry is at least 4 (name) + 4 (rank) + 8 (offset) bytes.
        let tensorCount = try reader.count("tensor count", minimumItemBytes: 16)
        header.tensors.reserveCapacity(tensorCount)
        for index in 0..<tensorCount {
            let name = try reader.string("tensor \(index) name")
            let rank = try reader.count("tensor \(name) rank", minimumItemBytes: 8)
            guard rank <= maximumTensorRank else { throw reader.fail("tensor \(name) has rank \(rank) > \(maximumTensorRank)") }
            var shape: [Int] = []
            var elements = 1
            for axis in 0..<rank {
                let dim = try reader.int("tensor \(name) dim \(axis)", limit: Int(Int32.max))
                let (product, overflow) = elements.multipliedReportingOverflow(by: dim)
                guard !overflow, product <= Int.max / 4 else { throw reader.fail("tensor \(name) shape \(shape + [dim]) overflows") }
                elements = product
                shape.append(dim)
            }
            let offset = try reader.int("tensor \(name) offset")
            header.tensors.append(TensorEntry(name: name, shape: shape, byteOffset: offset))
        }

        // A section entry is at least 4 + 1 + 8 + 8 + 8 bytes.
        let sectionCount = try reader.count("section count", minimumItemBytes: 29)
        var names = Set<String>()
        for index in 0..<sectionCount {
            let name = try reader.string("section \(index) name")
            try validateSectionName(name, file: file, kind: .corrupt)
            guard names.insert(name).inserted else { throw reader.fail("section \(name) appears twice") }
            let layoutByte = try reader.u8("section \(name) layout")
            guard let layout = SectionEntry.Layout(rawValue: layoutByte) else { throw reader.fail("section \(name) has unknown layout \(layoutByte)") }
            let uncompressed = try reader.int("section \(name) size")
            let compressed = try reader.int("section \(name) compressed size")
            let (bound, overflow) = compressed.multipliedReportingOverflow(by: ZstdCodec.maximumExpansion)
            guard overflow || uncompressed <= bound else {
                throw reader.fail("section \(name) claims \(uncompressed) bytes from \(compressed) compressed: more than zstd can expand")
            }
            let checksum = try reader.u64("section \(name) checksum")
            header.sections.append(SectionEntry(name: name, layout: layout, uncompressedSize: uncompressed, compressedSize: compressed, checksum: checksum))
        }
        guard reader.remaining == 8 else { throw reader.fail("\(reader.remaining - 8) unexpected bytes after the section table") }
        if !header.tensors.isEmpty {
            guard let weights = header.sections.first(where: { $0.name == "weights" }) else {
                throw reader.fail("tensor table has \(header.tensors.count) entries but there is no weights section")
            }
            try header.validateTensorTable(weightsSize: weights.uncompressedSize, file: file)
        }
        return header
    }

    /// Tensors must lie inside "weights", with unique names and without overlapping.
    public func validateTensorTable(weightsSize: Int, file: String, kind: CheckpointError.Kind = .corrupt) throws {
        var names = Set<String>()
        var end = 0
        for tensor in tensors.sorted(by: { $0.byteOffset < $1.byteOffset }) {
            guard names.insert(tensor.name).inserted else {
                throw CheckpointError(kind, file, "tensor \(tensor.name) appears twice in the table")
            }
            guard tensor.byteOffset % 4 == 0, tensor.byteOffset >= end else {
                throw CheckpointError(kind, file, "tensor \(tensor.name) at byte \(tensor.byteOffset) overlaps the previous tensor or is misaligned")
            }
            // The writer validates caller-built tables too, so no arithmetic here may trap.
            var bytes = 4
            var overflow = tensor.shape.contains { $0 < 0 }
            for dim in tensor.shape where !overflow {
                (bytes, overflow) = bytes.multipliedReportingOverflow(by: dim)
            }
            let tensorEnd: Int
            (tensorEnd, overflow) = overflow ? (0, true) : tensor.byteOffset.addingReportingOverflow(bytes)
            guard !overflow, tensorEnd <= weightsSize else {
                throw CheckpointError(
                    kind, file, "tensor \(tensor.name) \(tensor.shape) at byte \(tensor.byteOffset) runs past the \(weightsSize)-byte weights section")
            }
            end = tensorEnd
        }
    }
}
