import Foundation
import World

/// Scores a GenEval sample folder. Like GenEval's evaluator, it visits numeric subfolders and
/// their `samples/<digits>.png`, and takes each folder's record from its `metadata.jsonl`.
/// When `metadata` is given (the eval set's JSONL), each folder index must name a line of it and
/// the folder's record must equal that line, so a folder from another eval set is refused.
public func scoreGenEvalFolder(images folder: URL, metadata: [MetadataRecord]? = nil) throws -> GenEvalSummary {
    let files = FileManager.default
    guard files.fileExists(atPath: folder.path) else { throw WorldError.missingFile(path: folder.path) }
    let entries = try files.contentsOfDirectory(atPath: folder.path)
        .filter { !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }
        .sorted { (Int($0) ?? 0, $0) < (Int($1) ?? 0, $1) }
    var summary = GenEvalSummary()
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
        if let metadata {
            guard let index = Int(entry), index < metadata.count else {
                throw WorldError.malformedFile(path: promptFolder.path, reason: "folder index beyond the \(metadata.count) metadata lines")
            }
            guard metadata[index] == record else {
                throw WorldError.malformedFile(path: metadataURL.path, reason: "record differs from metadata line \(index + 1)")
            }
        }
        let samples = promptFolder.appendingPathComponent("samples")
        let names = ((try? files.contentsOfDirectory(atPath: samples.path)) ?? [])
            .filter { $0.hasSuffix(".png") && $0.dropLast(4).allSatisfy(\.isNumber) && $0.count > 4 }
            .sorted()
        for name in names {
            let image = try readPNG(samples.appendingPathComponent(name))
            summary.add(category: record.tag, correct: evaluateGenEval(image: image, record: record).correct)
        }
    }
    return summary
}
