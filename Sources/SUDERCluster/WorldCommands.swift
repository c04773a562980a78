import Foundation
import GenEvalMini
import World

/// The `data` stage: rank 0 generates the dataset while the other ranks wait. Every rank learns
/// whether it worked (one collective), so a failure on rank 0 ends all ranks with an error
/// instead of leaving them in a barrier.
public func runDataCommand(config: WorldConfig, outDir: URL, communicator: Communicator = SingleProcessCommunicator()) throws {
    var failure: Error?
    if communicator.isRoot {
        print("world config:")
        for field in config.fields { print("  " + field.name.padding(toLength: 24, withPad: " ", startingAt: 0) + field.value) }
        print("  " + "outDir".padding(toLength: 24, withPad: " ", startingAt: 0) + outDir.path)
        do {
            try generateDataset(config: config, outDir: outDir) { line in
                print(line); fflush(stdout)
            }
        } catch {
            failure = error
        }
    }
    let succeeded = communicator.allAgree(failure == nil)
    if let failure { throw failure }
    if !succeeded { throw WorldError.invalidConfig("dataset generation failed on rank 0") }
}

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
