import ClusterRuntime
import Foundation
import GenEvalMini
import World

/// `suder eval geneval --metadata <file> --images <folder> [--summary <file>] [--allow-missing] [--force]`:
/// scores a GenEval sample folder (`<folder>/<index:05d>/samples/<k:04d>.png`) against the eval
/// metadata, prints the per-category table and overall score, and writes the summary JSON when
/// asked. A metadata line without its folder, or a folder short of images, is an error unless
/// `allowMissing`; then the output says how much was missing. The summary's destination is checked
/// before scoring (`checkOutputFile`): an earlier summary is replaced, anything else only with `force`.
public func runGenEvalFolderCommand(metadata: URL, images: URL, summaryOut: URL?, allowMissing: Bool = false, force: Bool = false) throws {
    if let summaryOut { try checkOutputFile(summaryOut, option: "--summary", kind: genEvalSummaryKind, force: force) }
    let records = try readMetadataFile(metadata)
    let (summary, missing) = try scoreGenEvalFolder(images: images, metadata: records, allowMissing: allowMissing)
    guard summary.imageCount > 0 else {
        throw WorldError.malformedFile(path: images.path, reason: "no <index>/samples/<k>.png images found")
    }
    print("GenEval-mini: \(images.path) (\(summary.imageCount) images, \(records.count) prompts in \(metadata.lastPathComponent))")
    if !missing.isEmpty {
        print(
            "missing: \(missing.prompts.count) of \(records.count) prompts and \(missing.images) images in partly filled folders; "
                + "the score covers the rest only")
    }
    print(summary.table)
    if let summaryOut {
        var json = summary.json
        if !missing.isEmpty {
            json = String(json.dropLast()) + ", \"missing_prompts\": \(missing.prompts.count), \"missing_images\": \(missing.images)}"
        }
        try writeFileAtomically(Data((json + "\n").utf8), to: summaryOut)
        print("summary written to \(summaryOut.path)")
    }
}

/// A rerun replaces a summary file that begins as every summary does.
let genEvalSummaryKind = OutputFileKind(name: "GenEval summary", signature: GenEvalSummary.jsonStart)
