import ClusterRuntime
import Foundation
import GenEvalMini
import World

/// `suder eval geneval --metadata <file> --images <folder> [--summary <file>]`: scores a GenEval
/// sample folder (`<folder>/<index:05d>/samples/<k:04d>.png`) against the eval metadata, prints
/// the per-category table and overall score, and writes the summary JSON when asked.
public func runGenEvalFolderCommand(metadata: URL, images: URL, summaryOut: URL?) throws {
    let records = try readMetadataFile(metadata)
    let summary = try scoreGenEvalFolder(images: images, metadata: records)
    guard summary.imageCount > 0 else {
        throw WorldError.malformedFile(path: images.path, reason: "no <index>/samples/<k>.png images found")
    }
    print("GenEval-mini: \(images.path) (\(summary.imageCount) images, \(records.count) prompts in \(metadata.lastPathComponent))")
    print(summary.table)
    if let summaryOut {
        try (summary.json + "\n").write(to: summaryOut, atomically: true, encoding: .utf8)
        print("summary written to \(summaryOut.path)")
    }
}
