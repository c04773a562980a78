import ClusterRuntime
import Foundation
import Model
import SUDERCluster

/// `logits CHECKPOINT_DIR TOKENS`: the model of a checkpoint directory run on comma-separated
/// token ids; prints the (T, V) logits as JSON, to compare with `tools/torch_reference.py logits`
/// on the same checkpoint exported as safetensors.
func printLogits(_ arguments: [String]) -> Bool {
    guard arguments.count == 2 else {
        printError("usage: suder-mpitests logits CHECKPOINT_DIR TOKENS")
        return false
    }
    do {
        let checkpoint = try readCheckpoint(directory: URL(fileURLWithPath: arguments[0], isDirectory: true))
        let config = try modelConfig(of: checkpoint)
        let model = Transformer(config: config, seed: 0, batchCapacity: 1)
        try checkpoint.copyFloats("weights", into: model.parameters)
        let tokens = arguments[1].split(separator: ",").compactMap { Int32($0) }
        let logits = model.logits(TokenBatch(sequences: [tokens], targetStarts: [1]))
        let rows = (0..<tokens.count).map { t in
            "[" + logits[(t * config.vocabSize)..<((t + 1) * config.vocabSize)].map { "\($0)" }.joined(separator: ",") + "]"
        }
        print("[" + rows.joined(separator: ",") + "]")
        return true
    } catch {
        printError("logits: \(error)")
        return false
    }
}

/// Sizes from the tensor table; heads, length and rotary base from the run's config.
private func modelConfig(of checkpoint: Checkpoint) throws -> ModelConfig {
    let tensors = Dictionary(uniqueKeysWithValues: checkpoint.header.tensors.map { ($0.name, $0.shape) })
    let yaml = FileManager.default.temporaryDirectory.appendingPathComponent("suder-logits-\(getpid()).yaml")
    try checkpoint.header.configYAML.write(to: yaml, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: yaml) }
    let config = try ResolvedConfig.resolve(file: yaml, overrides: [])
    guard let embedding = tensors["tok_embeddings.weight"], let w1 = tensors["layers.0.feed_forward.w1.weight"] else {
        throw CheckpointError(.corrupt, "checkpoint", "no embedding or MLP tensors in the table")
    }
    let layers = Set(tensors.keys.filter { $0.hasPrefix("layers.") }.map { $0.split(separator: ".")[1] }).count
    return ModelConfig(
        vocabSize: embedding[0], dModel: embedding[1], nLayers: layers, nHeads: config.int("model.n_heads"),
        ffnHidden: w1[0], maxSeq: config.int("model.max_seq"), tiedHead: tensors["output.weight"] == nil,
        ropeTheta: config.double("model.rope_theta"))
}
