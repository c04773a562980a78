import XCTest

@testable import ClusterRuntime
@testable import SUDERCluster

final class CheckpointProvenanceTests: XCTestCase {
    private let data = "data.seed 1, vocabulary and codebook xxhash64 00000000000000aa"
    private let source = URL(fileURLWithPath: "/runs/a/pretrain/step-000000000050", isDirectory: true)

    private func header(_ overrides: [String], dataIdentity: String? = nil) throws -> CheckpointHeader {
        let config = try ResolvedConfig.resolve(file: nil, overrides: overrides)
        return CheckpointHeader(stage: "pretrain", step: 50, configYAML: config.yaml(), dataIdentity: dataIdentity ?? data, tensors: [])
    }

    private func mismatch(_ header: CheckpointHeader, run overrides: [String], dataIdentity: String? = nil, match: CheckpointMatch) throws -> String? {
        let config = try ResolvedConfig.resolve(file: nil, overrides: overrides)
        do {
            try checkCheckpointMatchesRun(header, at: source, config: config, dataIdentity: dataIdentity ?? data, match: match)
            return nil
        } catch let error as AllRanksError {
            return error.description
        }
    }

    func testResumingUnderAnotherConfigNamesEveryDifferingKey() throws {
        let written = try header(["pretrain.lr=0.001", "run.seed=1", "data.seed=1"])
        let message = try XCTUnwrap(try mismatch(written, run: ["pretrain.lr=0.002", "run.seed=2", "data.seed=3"], match: .wholeConfig))
        for part in ["pretrain.lr: 0.001 -> 0.002", "run.seed: 1 -> 2", "data.seed: 1 -> 3", source.path, "step 50"] {
            XCTAssertTrue(message.contains(part), "\(part) missing from: \(message)")
        }
        XCTAssertNil(try mismatch(written, run: ["pretrain.lr=0.001", "run.seed=1", "data.seed=1"], match: .wholeConfig))
    }

    func testSettingsThatDoNotChangeResultsMayDiffer() throws {
        let written = try header(["runtime.threads=1", "checkpoint.keep_last=2", "suder.log_samples=false"])
        XCTAssertNil(try mismatch(written, run: ["runtime.threads=2", "checkpoint.keep_last=5", "suder.log_samples=true"], match: .wholeConfig))
    }

    func testOtherDataIsRefusedAndOldCheckpointsAreComparedOnTheirConfig() throws {
        let written = try header([])
        let other = "data.seed 1, vocabulary and codebook xxhash64 00000000000000bb"
        let message = try XCTUnwrap(try mismatch(written, run: [], dataIdentity: other, match: .wholeConfig))
        XCTAssertTrue(message.contains("data: \(data) -> \(other)"), message)
        XCTAssertNotNil(try mismatch(written, run: [], dataIdentity: other, match: .modelAndData))
        // Written before the data identity was stored: nothing to compare it with.
        XCTAssertNil(try mismatch(try header([], dataIdentity: ""), run: [], dataIdentity: other, match: .wholeConfig))
    }

    func testStartingFromAnotherStagesModelComparesTheModelOnly() throws {
        let written = try header(["suder.lr=0.0001", "pretrain.lr=0.001", "model.micro_batch=4"])
        XCTAssertNil(try mismatch(written, run: ["suder.lr=0.0005", "pretrain.lr=0.003", "model.micro_batch=8"], match: .modelAndData))
        let message = try XCTUnwrap(try mismatch(written, run: ["suder.lr=0.0005", "model.rope_theta=500"], match: .modelAndData))
        XCTAssertTrue(message.contains("model.rope_theta: 10000.0 -> 500.0") && !message.contains("suder.lr"), message)
    }

    func testTheDataIdentityTravelsInTheHeader() throws {
        let written = try header(["pretrain.lr=0.001"])
        let decoded = try CheckpointHeader.decode(written.encoded(), file: "header.bin")
        XCTAssertEqual(decoded.dataIdentity, data)
        XCTAssertEqual(decoded.configYAML, written.configYAML)
    }
}
