import XCTest

@testable import ClusterRuntime
@testable import SUDERCluster

final class ConfigTests: XCTestCase {
    private func writeYAML(_ text: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("suder-config-\(UUID().uuidString).yaml")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    private func resolveError(file: URL? = nil, _ overrides: [String]) -> String {
        do {
            _ = try ResolvedConfig.resolve(file: file, overrides: overrides)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    func testDefaultsThenFileThenOverrides() throws {
        let file = try writeYAML("model:\n  d_model: 96\n  n_heads: 4\nsuder:\n  simpo_beta: 2.5\n")
        let config = try ResolvedConfig.resolve(file: file, overrides: ["suder.simpo_beta=3", "run.seed=7"])
        XCTAssertEqual(config.int("model.d_model"), 96)
        XCTAssertEqual(config.int("model.n_layers"), 6, "untouched keys keep their defaults")
        XCTAssertEqual(config.double("suder.simpo_beta"), 3, "an override beats the file")
        XCTAssertEqual(config.int("run.seed"), 7)
        XCTAssertEqual(config.sources["model.d_model"], file.lastPathComponent)
        XCTAssertEqual(config.sources["suder.simpo_beta"], "override")
        XCTAssertEqual(config.sources["model.n_layers"], "default")
    }

    func testUnknownKeyIsNamedWithSuggestionAndLine() throws {
        let file = try writeYAML("model:\n  d_model: 96\n  n_layer: 4\n")
        let message = resolveError(file: file, [])
        XCTAssertTrue(message.contains("model.n_layer"), message)
        XCTAssertTrue(message.contains("did you mean 'model.n_layers'"), message)
        XCTAssertTrue(message.contains("line 3"), message)
        XCTAssertTrue(resolveError(["nosuch.key=1"]).contains("unknown config key 'nosuch.key'"))
    }

    func testWrongTypeNamesKeyExpectedTypeAndValue() {
        let message = resolveError(["model.d_model=big"])
        XCTAssertTrue(message.contains("model.d_model"), message)
        XCTAssertTrue(message.contains("integer"), message)
        XCTAssertTrue(message.contains("'big'"), message)
        XCTAssertTrue(resolveError(["model.tied_head=maybe"]).contains("true or false"))
        XCTAssertTrue(resolveError(["suder.objective=simpoo"]).contains("did you mean 'simpo'"))
    }

    func testOutOfRangeIsAnError() {
        let message = resolveError(["suder.k=1"])
        XCTAssertTrue(message.contains("suder.k") && message.contains("out of range"), message)
        XCTAssertTrue(resolveError(["pretrain.lr=-1"]).contains("out of range"))
    }

    func testMalformedOverrideAndYAML() throws {
        XCTAssertTrue(resolveError(["model.d_model"]).contains("key.sub=value"))
        let bad = try writeYAML("model: [1, 2\n")
        XCTAssertTrue(resolveError(file: bad, []).contains("not valid YAML"))
        let list = try writeYAML("model:\n  d_model: [1, 2]\n")
        XCTAssertTrue(resolveError(file: list, []).contains("received a list"))
    }

    func testConsistencyChecks() throws {
        let config = try ResolvedConfig.resolve(file: nil, overrides: ["model.d_model=100", "model.n_heads=3"])
        XCTAssertThrowsError(try checkConsistency(config))
        XCTAssertNoThrow(try checkConsistency(try ResolvedConfig.resolve(file: nil, overrides: [])))
    }

    func testARenamedKeyIsAnErrorNamingItsNewName() throws {
        XCTAssertTrue(resolveError(file: nil, ["suder.beta=2"]).contains("suder.beta was renamed suder.simpo_beta"))
        let file = try writeYAML("pretrain:\n  micro_batch: 8\n")
        let message = resolveError(file: file, [])
        XCTAssertTrue(message.contains("pretrain.micro_batch was renamed model.micro_batch") && message.contains("line 2"), message)
        // A config recorded in a run directory before the rename is read under the new name.
        let recorded = try ResolvedConfig.resolve(file: file, overrides: [], schema: configSchema, acceptRenamedKeys: true)
        XCTAssertEqual(recorded.int("model.micro_batch"), 8)
        XCTAssertNil(recorded.values["pretrain.micro_batch"])
    }

    func testYAMLRoundTripKeepsEveryValue() throws {
        let config = try ResolvedConfig.resolve(file: nil, overrides: ["suder.simpo_beta=2.25", "suder.reward=oracle", "model.tied_head=false"])
        let reloaded = try ResolvedConfig.resolve(file: try writeYAML(config.yaml()), overrides: [])
        XCTAssertEqual(reloaded.values, config.values)
        XCTAssertEqual(config.differences(from: reloaded), [])
        XCTAssertTrue(config.table().contains("suder.simpo_beta"))
    }

    func testEveryShippedConfigResolves() throws {
        let configs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../configs")
        let files = try FileManager.default.contentsOfDirectory(at: configs, includingPropertiesForKeys: nil).filter { $0.pathExtension == "yaml" }
        XCTAssertFalse(files.isEmpty)
        for file in files {
            XCTAssertNoThrow(try checkConsistency(try ResolvedConfig.resolve(file: file, overrides: [])), file.lastPathComponent)
        }
    }

    func testEditDistanceSuggestsOnlyNearMisses() {
        XCTAssertEqual(editDistance("kitten", "sitting"), 3)
        XCTAssertEqual(closestMatch(to: "suder.bta", among: ["suder.beta", "suder.k"]), "suder.beta")
        XCTAssertNil(closestMatch(to: "completely.different", among: ["suder.beta"]))
    }
}
