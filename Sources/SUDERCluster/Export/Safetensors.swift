import ClusterRuntime
import Foundation

// safetensors (https://github.com/huggingface/safetensors): an 8-byte little-endian header length
// N, N bytes of JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {"key": "value"}}, then the data section; offsets are relative to its start.
// Tensors tile the data section exactly (no holes, no overlaps), as the reference reader demands.

public struct SafetensorsTensor: Equatable {
    public let name: String
    public let dtype: String
    public let shape: [Int]
    /// Byte range in the data section.
    public let begin: Int
    public let end: Int
}

public struct SafetensorsFile {
    public let tensors: [SafetensorsTensor]
    public let metadata: [String: String]
    /// The data section.
    public let data: [UInt8]

    /// An F32 tensor's values.
    public func floats(_ name: String) throws -> [Float] {
        guard let tensor = tensors.first(where: { $0.name == name }) else {
            throw CheckpointError(.invalidInput, "safetensors", "no tensor named \(name)")
        }
        guard tensor.dtype == "F32" else {
            throw CheckpointError(.invalidInput, "safetensors", "tensor \(name) is \(tensor.dtype), not F32")
        }
        return try bytesToFloats(Array(data[tensor.begin..<tensor.end]))
    }
}

/// Element sizes of the dtypes the format defines; anything else is rejected.
private let safetensorsDTypeSizes: [String: Int] = [
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8,
]

/// Writes float32 tensors as a safetensors file, atomically: a temporary beside it, fsync, then
/// rename over `url` (`overwrite`) or hard-link to it, which fails if `url` exists by then.
public func writeSafetensors(
    tensors: [(name: String, shape: [Int], values: ArraySlice<Float>)], metadata: [String: String], to url: URL,
    overwrite: Bool = false
) throws {
    var entries: [String: Any] = [:]
    var offset = 0
    for tensor in tensors {
        guard tensor.name != "__metadata__", entries[tensor.name] == nil else {
            throw CheckpointError(.invalidInput, url.path, "tensor name \(tensor.name) is reserved or repeated")
        }
        guard tensor.shape.reduce(1, *) == tensor.values.count else {
            throw CheckpointError(.invalidInput, url.path, "tensor \(tensor.name) has shape \(tensor.shape) but \(tensor.values.count) values")
        }
        let end = offset + tensor.values.count * 4
        entries[tensor.name] = ["dtype": "F32", "shape": tensor.shape, "data_offsets": [offset, end]]
        offset = end
    }
    if !metadata.isEmpty { entries["__metadata__"] = metadata }
    var json = [UInt8](try JSONSerialization.data(withJSONObject: entries, options: [.sortedKeys]))
    // The reference writer pads the header with spaces to a multiple of 8 so the data is aligned.
    while json.count % 8 != 0 { json.append(0x20) }

    var file = ByteWriter()
    file.u64(UInt64(json.count))
    file.raw(json)
    var bytes = file.bytes
    bytes.reserveCapacity(bytes.count + offset)
    for tensor in tensors {
        tensor.values.withUnsafeBytes { bytes.append(contentsOf: $0) }
    }
    if overwrite {
        try replaceFileDurably(url, bytes)
    } else {
        try createFileDurably(url, bytes)
    }
}

/// Writes the "weights" section of `checkpoint` as safetensors, one tensor per entry of its
/// tensor table, with the stage, step and config as metadata.
public func exportSafetensors(_ checkpoint: Checkpoint, to url: URL, overwrite: Bool = false) throws {
    let weights = try checkpoint.floats("weights")
    guard !checkpoint.header.tensors.isEmpty else {
        throw CheckpointError(.invalidInput, url.path, "the checkpoint has no tensor table to name the weights")
    }
    let tensors = checkpoint.header.tensors.sorted { $0.byteOffset < $1.byteOffset }.map { entry in
        let start = entry.byteOffset / 4
        return (name: entry.name, shape: entry.shape, values: weights[start..<start + entry.elementCount])
    }
    let metadata = [
        "format": "pt",
        "suder.stage": checkpoint.header.stage,
        "suder.step": String(checkpoint.header.step),
        "suder.config": checkpoint.header.configYAML,
    ]
    try writeSafetensors(tensors: tensors, metadata: metadata, to: url, overwrite: overwrite)
}

/// `suder export --checkpoint DIR --format safetensors --out FILE`. DIR is one checkpoint
/// (holding header.bin) or a stage directory, whose model `CheckpointStore.readForConsumer` picks
/// (read only). The destination is checked first (`checkOutputFile`): never inside a checkpoint
/// directory, an existing file only with `overwrite`. Returns the checkpoint directory that was
/// exported.
@discardableResult
public func exportSafetensors(checkpointDirectory: URL, to url: URL, overwrite: Bool = false) throws -> URL {
    try checkOutputFile(url, option: "--out", kind: nil, force: overwrite)
    if FileManager.default.fileExists(atPath: checkpointDirectory.appendingPathComponent(CheckpointHeader.fileName).path) {
        try exportSafetensors(readCheckpoint(directory: checkpointDirectory), to: url, overwrite: overwrite)
        return checkpointDirectory
    }
    guard let found = try CheckpointStore.readForConsumer(in: checkpointDirectory) else {
        throw CheckpointError(.noValidCheckpoint, checkpointDirectory.path, "no checkpoint here (neither header.bin nor step-* directories)")
    }
    for note in found.notes { printError(note) }
    try exportSafetensors(found.checkpoint, to: url, overwrite: overwrite)
    return found.url
}

/// Reads and validates a safetensors file: header length within the file and at most 100 MB
/// (the reference limit), a JSON object of known dtypes with non-negative shapes whose byte sizes
/// match their offsets, and offsets tiling the data section exactly.
public func readSafetensors(_ url: URL) throws -> SafetensorsFile {
    try parseSafetensors(readWholeFile(url, limit: Int.max), file: url.path)
}

/// `readSafetensors` on bytes in memory; `path` names them in errors.
func parseSafetensors(_ bytes: [UInt8], file path: String) throws -> SafetensorsFile {
    func fail(_ problem: String) -> CheckpointError { CheckpointError(.corrupt, path, problem) }

    var reader = ByteReader(bytes, file: path)
    let headerLength = try reader.int("header length", limit: min(reader.remaining, 100_000_000))
    let jsonBytes = try reader.take(headerLength, "JSON header")
    guard jsonBytes.first == UInt8(ascii: "{") else { throw fail("the JSON header does not start with '{'") }
    let parsed: Any
    do {
        parsed = try JSONSerialization.jsonObject(with: Data(jsonBytes))
    } catch {
        throw fail("the header is not valid JSON: \(error.localizedDescription)")
    }
    guard let object = parsed as? [String: Any] else { throw fail("the header is not a JSON object") }
    let data = Array(bytes[(8 + headerLength)...])

    var metadata: [String: String] = [:]
    var tensors: [SafetensorsTensor] = []
    for (name, value) in object {
        if name == "__metadata__" {
            guard let map = value as? [String: Any] else { throw fail("__metadata__ is not an object") }
            for (key, item) in map {
                guard let text = item as? String else { throw fail("__metadata__.\(key) is not a string") }
                metadata[key] = text
            }
            continue
        }
        guard let entry = value as? [String: Any],
            let dtype = entry["dtype"] as? String,
            let shapeValues = entry["shape"] as? [Any],
            let offsetValues = entry["data_offsets"] as? [Any], offsetValues.count == 2
        else { throw fail("tensor \(name) needs dtype, shape and two data_offsets") }
        guard let elementSize = safetensorsDTypeSizes[dtype] else { throw fail("tensor \(name) has unknown dtype \(dtype)") }
        var shape: [Int] = []
        var elements = 1
        for dimValue in shapeValues {
            guard let dim = exactInt(dimValue), dim >= 0 else { throw fail("tensor \(name) has a bad dimension \(dimValue)") }
            let (product, overflow) = elements.multipliedReportingOverflow(by: dim)
            guard !overflow else { throw fail("tensor \(name) shape overflows") }
            elements = product
            shape.append(dim)
        }
        guard let begin = exactInt(offsetValues[0]), let end = exactInt(offsetValues[1]), 0 <= begin, begin <= end, end <= data.count else {
            throw fail("tensor \(name) has data_offsets \(offsetValues) outside the \(data.count)-byte data section")
        }
        let (byteCount, overflow) = elements.multipliedReportingOverflow(by: elementSize)
        guard !overflow, byteCount == end - begin else {
            throw fail("tensor \(name): shape \(shape) of \(dtype) needs \(overflow ? "too many" : String(byteCount)) bytes, offsets give \(end - begin)")
        }
        tensors.append(SafetensorsTensor(name: name, dtype: dtype, shape: shape, begin: begin, end: end))
    }
    tensors.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
    var covered = 0
    for tensor in tensors {
        guard tensor.begin == covered else {
            throw fail("tensor \(tensor.name) starts at \(tensor.begin), expected \(covered) (hole or overlap in the data section)")
        }
        covered = tensor.end
    }
    guard covered == data.count else { throw fail("tensors cover \(covered) bytes of a \(data.count)-byte data section") }
    return SafetensorsFile(tensors: tensors, metadata: metadata, data: data)
}

/// JSON numbers come back as NSNumber; accept only integers (not 1.5 or 2.0, not true, which
/// Foundation on Linux also answers `is Bool` for 0 and 1, hence the objCType test).
private func exactInt(_ value: Any) -> Int? {
    guard let number = value as? NSNumber else { return nil }
    let integerTypes: Set<String> = ["s", "i", "l", "q", "S", "I", "L", "Q"]
    guard integerTypes.contains(String(cString: number.objCType)) else { return nil }
    return number.intValue
}
