import XCTest

@testable import ClusterRuntime

/// Compression ratio and save/load time on a ~3M-parameter model. Off by default (it takes tens of
/// seconds); run with
///   SUDER_BENCHMARK=1 swift test -c release -Xswiftc -enable-testing --filter CheckpointBenchmarkTests
/// Results go to docs/RELIABILITY.md.
final class CheckpointBenchmarkTests: XCTestCase {
    /// Weights as training leaves them: Gaussian init (std 0.02), then 20 AdamW-like steps of
    /// noisy updates (lr 1e-3, unit-scale normalised steps); Adam moments to match.
    private func realisticState(parameters: Int) -> (weights: [Float], m: [Float], v: [Float]) {
        var generator = SplitMix64(seed: 77)
        var weights = (0..<parameters).map { _ in Float(generator.nextGaussian() * 0.02) }
        var m = [Float](repeating: 0, count: parameters)
        var v = [Float](repeating: 0, count: parameters)
        for _ in 0..<20 {
            for i in 0..<parameters {
                let gradient = Float(generator.nextGaussian() * 0.01) + weights[i] * 0.1
                m[i] = 0.9 * m[i] + 0.1 * gradient
                v[i] = 0.999 * v[i] + 0.001 * gradient * gradient
                weights[i] -= 1e-3 * m[i] / (v[i].squareRoot() + 1e-8)
            }
        }
        return (weights, m, v)
    }

    private func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

    func testCompressionRatioAndSaveLoadTime() throws {
        guard ProcessInfo.processInfo.environment["SUDER_BENCHMARK"] == "1" else {
            throw XCTSkip("set SUDER_BENCHMARK=1 to measure")
        }
        let parameters = 3_000_000
        let state = realisticState(parameters: parameters)
        let sections = ["weights": floatsToBytes(state.weights), "adam_m": floatsToBytes(state.m), "adam_v": floatsToBytes(state.v)]
        let rawBytes = sections.values.reduce(0) { $0 + $1.count }
        print(String(format: "state: %d parameters, %.1f MB raw (weights + adam_m + adam_v)", parameters, Double(rawBytes) / 1e6))

        print("section   level  grouped  ratio   compress MB/s")
        for level in [1, 3, 9] {
            for name in ["weights", "adam_m", "adam_v"] {
                for grouped in [false, true] {
                    let codec = ZstdCodec(level: level, threads: 0)
                    let input = grouped ? byteGrouped(sections[name]!, elementSize: 4) : sections[name]!
                    let start = Date()
                    let frame = try codec.compress(input, file: name)
                    let seconds = Date().timeIntervalSince(start)
                    print(
                        String(
                            format: "%-8@  %5d  %7@  %5.3f   %6.0f", name, level, grouped ? "yes" : "no",
                            Double(input.count) / Double(frame.count), Double(input.count) / 1e6 / seconds))
                }
            }
        }

        let comm = SingleProcessCommunicator()
        let tensors = [TensorEntry(name: "all", shape: [parameters], byteOffset: 0)]
        let checkpoint = Checkpoint(header: CheckpointHeader(stage: "bench", step: 0, configYAML: "", tensors: tensors), sections: sections)
        print("store (3 sections, fsync included): level threads  on-disk MB  save s (median of 5)  load s (median of 5)")
        for (level, threads) in [(1, 0), (3, 0), (3, 2), (9, 0)] {
            let dir = temporaryDirectory("bench")
            defer { try? FileManager.default.removeItem(at: dir) }
            let store = CheckpointStore(directory: dir, keepLast: 2, compressionLevel: level, threads: threads, comm: comm)
            var saves: [Double] = [], loads: [Double] = []
            var onDisk = 0
            for step in 1...5 {
                var this = checkpoint
                this.header.step = step
                var start = Date()
                let url = try store.save(this)
                saves.append(Date().timeIntervalSince(start))
                onDisk = try FileManager.default.contentsOfDirectory(atPath: url.path).reduce(0) {
                    $0 + ((try? FileManager.default.attributesOfItem(atPath: url.appendingPathComponent($1).path)[.size] as? Int) ?? 0)
                }
                start = Date()
                let loaded = try XCTUnwrap(store.loadNewestValid())
                loads.append(Date().timeIntervalSince(start))
                XCTAssertEqual(loaded.checkpoint.sections["weights"], sections["weights"])
            }
            print(
                String(
                    format: "                                           %5d %7d  %10.2f  %20.3f  %20.3f", level, store.compressionThreads,
                    Double(onDisk) / 1e6, median(saves), median(loads)))
        }

        // The finite check on a cache-resident 64K-float buffer, 1000 times.
        let small = Array(state.weights.prefix(65_536))
        let start = Date()
        var found = 0
        small.withUnsafeBufferPointer { buffer in
            for _ in 0..<1000 where !allFinite(buffer) { found += 1 }
        }
        XCTAssertEqual(found, 0)
        print(String(format: "finite check: %.2f G floats/s on 64K floats in cache", 65.536 / 1e3 / Date().timeIntervalSince(start)))
    }
}
