import Foundation
import World

/// What a GenEval sample folder lacks against its metadata: lines without a folder, folders
/// without images or with fewer images than the others.
public struct GenEvalMissing: Equatable, Sendable {
    /// Metadata lines (0-based) with no folder, or a folder without a single image.
    public var prompts: [Int] = []
    /// Images absent from folders that have fewer than the fullest folder.
    public var images = 0
    /// One phrase per problem, naming the folder, for messages.
    public var problems: [String] = []

    public var isEmpty: Bool { problems.isEmpty }
}

/// Scores a GenEval sample folder; anything missing is an error naming it (`scoreGenEvalFolder(images:metadata:allowMissing:)`).
public func scoreGenEvalFolder(images folder: URL, metadata: [MetadataRecord]? = nil) throws -> GenEvalSummary {
    try scoreGenEvalFolder(images: folder, metadata: metadata, allowMissing: false).summary
}

/// Scores a GenEval sample folder. Like GenEval's evaluator, it visits numeric subfolders and
/// their `samples/<digits>.png`, and takes each folder's record from its `metadata.jsonl`.
/// When `metadata` is given (the eval set's JSONL), each folder index must name a line of it and
/// the folder's record must equal that line, so a folder from another eval set is refused; and
/// every line must have its folder. Every folder must hold as many images as the fullest one.
/// Dropping prompts or images can only flatter a score, so anything missing is an error naming
/// it, unless `allowMissing`: then the rest is scored and the missing part returned.
public func scoreGenEvalFolder(images folder: URL, metadata: [MetadataRecord]?, allowMissing: Bool) throws
    -> (summary: GenEvalSummary, missing: GenEvalMissing)
{
    let files = FileManager.default
    var isFolder: ObjCBool = false
    guard files.fileExists(atPath: folder.path, isDirectory: &isFolder) else { throw WorldError.missingFile(path: folder.path) }
    guard isFolder.boolValue else { throw WorldError.malformedFile(path: folder.path, reason: "not a directory") }
    let entries = try files.contentsOfDirectory(atPath: folder.path)
        .filter { !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isNumber } }
        .sorted { (Int($0) ?? 0, $0) < (Int($1) ?? 0, $1) }
    var scored: [(index: Int?, folder: URL, record: MetadataRecord, samples: [URL])] = []
    var seenLines = Set<Int>()
    for entry in entries {
        let promptFolder = folder.appendingPathComponent(entry)
        var isDirectory: ObjCBool = false
        guard files.fileExists(atPath: promptFolder.path, isDirectory: &isDirectory), isDirectory.boolValue else { continue }
        let metadataURL = promptFolder.appendingPathComponent("metadata.jsonl")
        let records = try readMetadataFile(metadataURL)
        guard records.count == 1 else {
            throw WorldError.malformedFile(path: metadataURL.path, reason: "\(records.count) records, expected 1")
        }
        let record = records[0]
        let index = Int(entry)
        if let metadata {
            guard let index, index < metadata.count else {
                throw WorldError.malformedFile(path: promptFolder.path, reason: "folder index beyond the \(metadata.count) metadata lines")
            }
            guard metadata[index] == record else {
                throw WorldError.malformedFile(path: metadataURL.path, reason: "record differs from metadata line \(index + 1)")
            }
            guard seenLines.insert(index).inserted else {
                throw WorldError.malformedFile(path: promptFolder.path, reason: "a second folder for metadata line \(index + 1)")
            }
        }
        let samples = promptFolder.appendingPathComponent("samples")
        let names = ((try? files.contentsOfDirectory(atPath: samples.path)) ?? [])
            .filter { $0.hasSuffix(".png") && $0.dropLast(4).allSatisfy(\.isNumber) && $0.count > 4 }
            .sorted()
        scored.append((index, promptFolder, record, names.map { samples.appendingPathComponent($0) }))
    }

    var missing = GenEvalMissing()
    if let metadata {
        for line in metadata.indices where !seenLines.contains(line) {
            missing.prompts.append(line)
            missing.problems.append("no folder \(String(format: "%05d", line)) for metadata line \(line + 1)")
        }
    }
    let fullest = scored.map(\.samples.count).max() ?? 0
    for folder in scored where folder.samples.count < fullest {
        if folder.samples.isEmpty, let index = folder.index { missing.prompts.append(index) }
        missing.images += fullest - folder.samples.count
        missing.problems.append("\(folder.folder.lastPathComponent)/samples has \(folder.samples.count) images, other folders \(fullest)")
    }
    missing.prompts.sort()
    if !missing.isEmpty && !allowMissing {
        let shown = missing.problems.prefix(5).joined(separator: "; ") + (missing.problems.count > 5 ? "; and \(missing.problems.count - 5) more" : "")
        throw WorldError.malformedFile(
            path: folder.path,
            reason: "incomplete: \(shown) (a missing prompt or image would flatter the score; "
                + "--allow-missing scores the rest)")
    }

    var summary = GenEvalSummary()
    for folder in scored {
        for sample in folder.samples {
            let image = try readPNG(sample)
            summary.add(category: folder.record.tag, correct: evaluateGenEval(image: image, record: folder.record).correct)
        }
    }
    return (summary, missing)
}
