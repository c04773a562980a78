import Foundation
import Model
import World

/// The model the config describes, over the dataset's vocabulary.
func modelConfig(_ config: ResolvedConfig, vocabulary: Vocabulary) -> ModelConfig {
    let dModel = config.int("model.d_model")
    let requestedHidden = config.int("model.ffn_hidden")
    // SwiGLU's usual 8/3 ratio keeps the MLP's parameter count equal to a 4x GELU MLP's.
    let hidden = requestedHidden > 0 ? requestedHidden : max(32, (dModel * 8 / 3 + 31) / 32 * 32)
    return ModelConfig(
        vocabSize: vocabulary.size, dModel: dModel, nLayers: config.int("model.n_layers"),
        nHeads: config.int("model.n_heads"), ffnHidden: hidden, maxSeq: config.int("model.max_seq"),
        tiedHead: config.bool("model.tied_head"), ropeTheta: config.double("model.rope_theta"))
}

/// The world config the `data.*` keys describe.
func worldConfig(_ config: ResolvedConfig) -> WorldConfig {
    var world = WorldConfig()
    world.seed = UInt64(config.int("data.seed"))
    world.canvasSize = config.int("data.canvas")
    world.patchSize = config.int("data.patch")
    world.positionStep = config.int("data.position_step")
    world.codebookSize = config.int("data.codebook_size")
    world.trainPairs = config.int("data.train_pairs")
    world.trainCaptions = config.int("data.train_captions")
    world.trainProbes = config.int("data.train_probes")
    world.trainImperfect = config.int("data.train_imperfect")
    world.unpairedPrompts = config.int("data.unpaired_prompts")
    world.unpairedImages = config.int("data.unpaired_images")
    world.evalPromptsPerCategory = config.int("data.eval_prompts_per_category")
    world.evalImages = config.int("data.eval_images")
    world.imagesPerEvalPrompt = config.int("eval.images_per_prompt")
    return world
}

/// Opens the dataset the `data` stage wrote into the run directory; a missing or damaged dataset
/// is an error every rank reaches.
func openDataset(_ job: JobContext) throws -> DatasetReader {
    let directory = job.stageDirectory(StageName.data.rawValue)
    guard job.isFinished(StageName.data.rawValue) else {
        throw AgreedError("no finished dataset in \(directory.path): run `suder data` (or `suder pipeline`) with this --run-dir first")
    }
    do {
        return try DatasetReader(directory: directory)
    } catch {
        throw AgreedError("cannot open the dataset in \(directory.path): \(error)")
    }
}

/// Makes every rank hold rank 0's parameters, then proves it: a bitwise checksum must agree on all
/// ranks (the allreduce'd max and min of it are equal only if every rank has the same one).
func synchronizeParameters(_ model: Transformer, comm: Communicator) throws {
    comm.broadcast(UnsafeMutableRawBufferPointer(model.parameters), root: 0)
    let digest = Int(bitPattern: UInt(parameterDigest(model.parameters)))
    let high = comm.allreduce(digest, op: .max), low = comm.allreduce(digest, op: .min)
    guard high == low else {
        throw AgreedError("parameters differ between ranks after the broadcast from rank 0", exitCode: 1)
    }
}

/// A hash of the parameters' bits (for cross-rank and resume checks, not security).
func parameterDigest(_ values: UnsafeMutableBufferPointer<Float>) -> UInt64 {
    xxhash64(UnsafeRawBufferPointer(values))
}

/// The checkpoint's tensor table for the model's parameters.
func tensorEntries(_ model: Transformer) -> [TensorEntry] {
    model.parameterTable.map { TensorEntry(name: $0.name, shape: $0.shape, byteOffset: $0.offset * 4) }
}

/// A checkpoint of the model and optimizer at `step`; `extra` holds stage-specific sections.
func makeCheckpoint(
    stage: StageName, step: Int, round: Int = 0, job: JobContext, model: Transformer, optimizer: AdamW,
    extra: [String: [UInt8]] = [:]
) -> Checkpoint {
    let header = CheckpointHeader(stage: stage.rawValue, step: step, round: round, configYAML: job.config.yaml(), tensors: tensorEntries(model))
    var sections = extra
    sections["weights"] = floatsToBytes(UnsafeBufferPointer(model.parameters))
    sections["adam_m"] = floatsToBytes(UnsafeBufferPointer(optimizer.m))
    sections["adam_v"] = floatsToBytes(UnsafeBufferPointer(optimizer.v))
    var optimizerStep = [Int64(optimizer.step)]
    sections["adam_step"] = optimizerStep.withUnsafeMutableBytes { Array($0) }
    return Checkpoint(header: header, sections: sections)
}

/// Restores model and optimizer from a checkpoint written by `makeCheckpoint`.
func restore(_ checkpoint: Checkpoint, model: Transformer, optimizer: AdamW?) throws {
    try checkTensorTable(checkpoint, model: model)
    try checkpoint.copyFloats("weights", into: model.parameters)
    guard let optimizer else { return }
    try checkpoint.copyFloats("adam_m", into: optimizer.m)
    try checkpoint.copyFloats("adam_v", into: optimizer.v)
    guard let stepBytes = checkpoint.sections["adam_step"], stepBytes.count == 8 else {
        throw AgreedError("checkpoint has no optimizer step section")
    }
    optimizer.step = Int(stepBytes.withUnsafeBytes { $0.loadUnaligned(as: Int64.self) })
}

/// The checkpoint must describe exactly this model's tensors (same config), or loading it would
/// silently scramble weights.
func checkTensorTable(_ checkpoint: Checkpoint, model: Transformer) throws {
    let expected = tensorEntries(model)
    guard checkpoint.header.tensors == expected else {
        let theirs = checkpoint.header.tensors.map { "\($0.name)\($0.shape)" }.prefix(3).joined(separator: ", ")
        let ours = expected.map { "\($0.name)\($0.shape)" }.prefix(3).joined(separator: ", ")
        throw AgreedError(
            "checkpoint (stage \(checkpoint.header.stage), step \(checkpoint.header.step)) holds a different model "
                + "(\(checkpoint.header.tensors.count) tensors: \(theirs), ...) than the config describes (\(expected.count) tensors: \(ours), ...)")
    }
}

/// Weights of a checkpoint directory, or of the newest valid checkpoint in a stage directory, on
/// every rank. For stages that start from another stage's model.
func loadWeights(from url: URL, into model: Transformer, job: JobContext) throws -> Checkpoint {
    let checkpoint: Checkpoint
    if FileManager.default.fileExists(atPath: url.appendingPathComponent(CheckpointHeader.fileName).path) {
        // Every rank reads the same files; they must all succeed.
        let result = Result { try readCheckpoint(directory: url) }
        guard job.comm.allAgree((try? result.get()) != nil) else {
            if case .failure(let error) = result { throw AgreedError("cannot load checkpoint \(url.path): \(error)") }
            throw AgreedError("cannot load checkpoint \(url.path) on another rank")
        }
        checkpoint = try result.get()
    } else {
        guard let loaded = try CheckpointStore(directory: url, comm: job.comm).loadNewestValid() else {
            throw AgreedError("no checkpoint in \(url.path)")
        }
        checkpoint = loaded.checkpoint
    }
    try restore(checkpoint, model: model, optimizer: nil)
    return checkpoint
}
