import Foundation

/// GenEval's sample folder layout, as its generator writes it:
///
///     <outdir>/<index:05d>/metadata.jsonl      the prompt's metadata record (one JSON line)
///     <outdir>/<index:05d>/samples/<k:04d>.png the k-th sample
public func writeGenEvalSamples(record: MetadataRecord, images: [RGBImage], index: Int, outDir: URL) throws {
    let folder = outDir.appendingPathComponent(String(format: "%05d", index))
    let samples = folder.appendingPathComponent("samples")
    try FileManager.default.createDirectory(at: samples, withIntermediateDirectories: true)
    try (record.jsonLine + "\n").write(to: folder.appendingPathComponent("metadata.jsonl"), atomically: false, encoding: .utf8)
    for (k, image) in images.enumerated() {
        try writePNG(image, to: samples.appendingPathComponent(String(format: "%04d.png", k)))
    }
}
