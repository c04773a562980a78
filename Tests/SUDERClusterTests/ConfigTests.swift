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
        // The pairing controls have no meaning for GRPO, which trains every sample on its reward.
        for reward in ["random", "shuffled"] {
            let grpo = try ResolvedConfig.resolve(file: nil, overrides: ["suder.objective=grpo", "suder.reward=\(reward)"])
            XCTAssertThrowsError(try checkConsistency(grpo)) { XCTAssertTrue("\($0)".contains("suder.reward=\(reward) is a pairing control"), "\($0)") }
            XCTAssertNoThrow(try checkConsistency(try ResolvedConfig.resolve(file: nil, overrides: ["suder.objective=dpo", "suder.reward=\(reward)"])))
        }
        XCTAssertNoThrow(try checkConsistency(try ResolvedConfig.resolve(file: nil, overrides: ["suder.objective=grpo", "suder.reward=oracle"])))
    }

    /// Settings a later stage would refuse are refused by the first command, before the data stage
    /// works and before the run directory records them, in the config's own keys.
    func testSettingsLaterStagesNeedAreCheckedWithTheConfig() throws {
        func consistencyError(_ overrides: [String]) throws -> String {
            do { try checkConsistency(try ResolvedConfig.resolve(file: nil, overrides: overrides)) } catch { return "\(error)" }
            return "no error"
        }
        var message = try consistencyError(["data.canvas=24"])
        XCTAssertTrue(message.contains("data.canvas (24) is too small") && message.contains("use data.canvas >= 32"), message)
        message = try consistencyError(["data.canvas=64", "data.patch=32"])
        XCTAssertTrue(message.contains("data.canvas (64) is too small for data.patch (32)"), message)
        XCTAssertEqual(try consistencyError(["data.canvas=32"]), "no error")
        message = try consistencyError(["model.max_seq=64"])
        XCTAssertTrue(message.contains("model.max_seq (64) is shorter than the longest sequence of this world (99 tokens"), message)
        message = try consistencyError(["data.unpaired_prompts=2"])
        XCTAssertTrue(message.contains("suder.prompts_per_round (64) must not exceed data.unpaired_prompts (2)"), message)
        message = try consistencyError(["data.unpaired_images=10"])
        XCTAssertTrue(message.contains("suder.images_per_round (64) must not exceed data.unpaired_images (10)"), message)
        let fourEach = ["data.unpaired_prompts=4", "data.unpaired_images=4", "suder.prompts_per_round=4", "suder.images_per_round=4"]
        XCTAssertEqual(try consistencyError(fourEach), "no error")
        message = resolveError(["eval.images_per_prompt=65"])
        XCTAssertTrue(message.contains("eval.images_per_prompt") && message.contains("out of range"), message)
    }

    func testARefusedFirstCommandLeavesTheRunDirectoryUnbound() throws {
        let runDir = FileManager.default.temporaryDirectory.appendingPathComponent("suder-unbound-\(UUID().uuidString)")
        let config = try ResolvedConfig.resolve(file: nil, overrides: [])
        let job = JobContext(comm: SingleProcessCommunicator(), config: config, runDir: runDir)
        try recordConfig(job, schema: configSchema)
        let recorded = runDir.appendingPathComponent("config.yaml")
        forgetFreshConfig(job)
        XCTAssertFalse(FileManager.default.fileExists(atPath: recorded.path), "nothing else was written: the config goes too")
        // Once a stage wrote anything, or when the config was there before, it stays.
        try recordConfig(job, schema: configSchema)
        try FileManager.default.createDirectory(at: job.stageDirectory("data"), withIntermediateDirectories: true)
        forgetFreshConfig(job)
        XCTAssertTrue(FileManager.default.fileExists(atPath: recorded.path))
        let later = JobContext(comm: SingleProcessCommunicator(), config: config, runDir: runDir)
        try FileManager.default.removeItem(at: job.stageDirectory("data"))
        try recordConfig(later, schema: configSchema)
        forgetFreshConfig(later)
        XCTAssertTrue(FileManager.default.fileExists(atPath: recorded.path), "a config recorded by an earlier command is kept")
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

    /// "Billion laughs": each level names the previous one nine times. As a value, as nested
    /// mappings (which flattening walks) and as mapping keys (which the YAML library hashes while
    /// composing), all must be refused by size within a second, naming the file.
    func testAliasBombIsRefusedQuicklyNamingTheFile() throws {
        func levels(_ body: (Int) -> String) -> String { (1...9).map(body).joined(separator: "\n") + "\n" }
        let bombs = [
            "sequence": "a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
                + levels { i in "a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 9).joined(separator: ", ") + "]" },
            "mapping": "a0: &a0 {k1: 1, k2: 1, k3: 1, k4: 1, k5: 1, k6: 1, k7: 1, k8: 1, k9: 1}\n"
                + levels { i in "a\(i): &a\(i) {" + (1...9).map { "k\($0): *a\(i - 1)" }.joined(separator: ", ") + "}" },
            "keys": "a0: &a0 {k1: 1, k2: 1, k3: 1, k4: 1, k5: 1, k6: 1, k7: 1, k8: 1, k9: 1}\n"
                + levels { i in "a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 9).joined(separator: ", ") + "]" }
                + "? *a9\n: 1\n",
        ]
        for (kind, text) in bombs {
            XCTAssertLessThan(text.utf8.count, 1200, kind)
            let file = try writeYAML(text)
            let started = Date()
            let message = resolveError(file: file, [])
            XCTAssertLessThan(Date().timeIntervalSince(started), 1, kind)
            XCTAssertTrue(message.contains(file.path) && message.contains("aliases"), "\(kind): \(message)")
        }
        // Aliases within reason still work.
        let fine = try writeYAML("pretrain:\n  lr: &rate 0.002\nsuder:\n  lr: *rate\n")
        XCTAssertEqual(try ResolvedConfig.resolve(file: fine, overrides: []).double("suder.lr"), 0.002)
    }

    func testADirectoryOrFIFOAsConfigIsNamed() throws {
        let directory = temporaryDirectory("config-dir")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let message = resolveError(file: directory, [])
        XCTAssertTrue(message.contains("\(directory.path) is a directory"), message)
        let fifo = directory.appendingPathComponent("config.yaml")
        XCTAssertEqual(mkfifo(fifo.path, 0o644), 0)
        XCTAssertTrue(resolveError(file: fifo, []).contains("is not a regular file"), "opening a FIFO would wait for a writer")
    }

    func testAnEmptySectionSetsNothingAndASectionWithAValueIsNamed() throws {
        let empty = try writeYAML("model:\nsuder:\n  simpo_beta: 2.5\n")
        let config = try ResolvedConfig.resolve(file: empty, overrides: [])
        XCTAssertEqual(config.int("model.d_model"), 192)
        XCTAssertEqual(config.double("suder.simpo_beta"), 2.5)
        let valued = resolveError(file: try writeYAML("model: 5\n"), [])
        XCTAssertTrue(valued.contains("model is a section"), valued)
        // A key left out of its section names the full key.
        let outdented = resolveError(file: try writeYAML("model:\nd_model: 96\n"), [])
        XCTAssertTrue(outdented.contains("did you mean 'model.d_model'"), outdented)
    }

    func testTheSameKeyNestedAndDottedIsAnErrorNamingBoth() throws {
        let file = try writeYAML("model:\n  d_model: 96\nmodel.d_model: 128\n")
        let message = resolveError(file: file, [])
        XCTAssertTrue(message.contains("model.d_model is given twice"), message)
        XCTAssertTrue(message.contains("line 2") && message.contains("line 3"), message)
    }

    func testEditDistanceSuggestsOnlyNearMisses() {
        XCTAssertEqual(editDistance("kitten", "sitting"), 3)
        XCTAssertEqual(closestMatch(to: "suder.bta", among: ["suder.beta", "suder.k"]), "suder.beta")
        XCTAssertNil(closestMatch(to: "completely.different", among: ["suder.beta"]))
    }
}
