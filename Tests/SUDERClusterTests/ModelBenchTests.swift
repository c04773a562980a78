import Foundation
import Model
import XCTest

@testable import SUDERCluster

/// `bench model` against a stand-in for PyTorch's side: a script that speaks the reference's
/// protocol ("ready", one time per request, `info`) with fixed answers.
final class ModelBenchTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("model-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// An "interpreter" that imports torch and serves every workload in 0.5 s, or stops after
    /// `answers` times, logging each request it gets.
    private func standIn(answers: Int = 1000) throws -> ModelBenchOptions {
        let script = directory.appendingPathComponent("python")
        let log = directory.appendingPathComponent("requests")
        try """
        #!/bin/bash
        [ "$1" = -c ] && exit 0
        echo ready
        answered=0
        while read -r request; do
            echo "$request" >> \(log.path)
            if [ "$request" = info ]; then
                echo '{"framework":"stand-in","peak_rss_mb":7,"cpu_capability":"AVX2"}'
                continue
            fi
            [ $answered -ge \(answers) ] && { echo "stand-in gave up" >&2; exit 1; }
            answered=$((answered + 1))
            echo 0.5
        done
        """.write(to: script, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script.path)
        return ModelBenchOptions(
            config: ModelConfig(vocabSize: 64, dModel: 32, nLayers: 1, nHeads: 2, ffnHidden: 64, maxSeq: 16),
            batch: 4, seqLen: 8, sampleBatch: 2, promptLength: 4, newTokens: 4, repeats: 3, json: true,
            python: script.path, referenceScript: script.path)
    }

    private func requests() throws -> [String] {
        try String(contentsOf: directory.appendingPathComponent("requests"), encoding: .utf8).split(separator: "\n").map(String.init)
    }

    func testEachRepeatIsPairedWithOneOfTheReferenceAndTheRatiosComeFromThePairs() throws {
        let report = try runModelBench(options: try standIn())
        let torch = try XCTUnwrap(report.torch, report.torchNote ?? "no note")
        XCTAssertEqual(torch.framework, "stand-in")
        XCTAssertEqual(torch.train_step_s, 0.5)
        XCTAssertEqual(torch.cpu_capability, "AVX2")
        XCTAssertEqual(torch.sample_shared_rng_tokens_per_s, 2 * 4 / 0.5)
        // A warm-up and three timed runs per workload, the shared-RNG sampling, then info.
        let workloads = ["train", "score", "preference", "sample"]
        XCTAssertEqual(try requests(), workloads.flatMap { Array(repeating: $0, count: 4) } + Array(repeating: "sample_shared_rng", count: 3) + ["info"])
        let ratios = try XCTUnwrap(report.ratios)
        XCTAssertEqual(Set(ratios.keys), Set(workloads))
        for (workload, ours) in zip(workloads, [report.suder.train_step_s, report.suder.score_s, report.suder.preference_step_s, report.suder.sample_s]) {
            let r = try XCTUnwrap(ratios[workload])
            XCTAssertEqual(r.pairs, 3)
            // The median of three ratios 0.5 / t is 0.5 over the median t.
            XCTAssertEqual(r.median, 0.5 / ours, accuracy: 1e-9 * r.median, workload)
            XCTAssertLessThanOrEqual(r.min, r.median)
            XCTAssertGreaterThanOrEqual(r.max, r.median)
            let times = try XCTUnwrap(report.times?[workload])
            XCTAssertEqual(times.theirs, [0.5, 0.5, 0.5], workload)
            XCTAssertEqual(times.ours.count, 3, workload)
            XCTAssertEqual(times.ours.sorted()[1], ours, workload)
        }
    }

    func testAReferenceThatStopsLeavesOurNumbersAndSaysWhy() throws {
        let report = try runModelBench(options: try standIn(answers: 5))
        XCTAssertNil(report.torch)
        XCTAssertNil(report.ratios)
        let note = try XCTUnwrap(report.torchNote)
        XCTAssertTrue(note.contains("stopped during score") && note.contains("stand-in gave up"), note)
        XCTAssertGreaterThan(report.suder.sample_tokens_per_s, 0)
        // Nothing more was asked of it after it stopped.
        XCTAssertEqual(try requests().count, 6)
    }
}
