import ClusterRuntime
import Foundation
import Model
import World

/// Opens the dataset the `data` stage wrote into the run directory; a missing or damaged dataset
/// is an error every rank reaches.
func openDataset(_ job: JobContext) throws -> DatasetReader {
    let directory = job.stageDirectory(StageName.data.rawValue)
    guard try job.stageFinished(StageName.data.rawValue) else {
        throw AllRanksError("no finished dataset in \(directory.path): run `suder data` (or `suder pipeline`) with this --run-dir first")
    }
    do {
        return try DatasetReader(directory: directory)
    } catch {
        throw AllRanksError("cannot open the dataset in \(directory.path): \(error)")
    }
}

/// Makes every rank hold rank 0's parameters, then proves it: a bitwise checksum must agree on all
/// ranks (the allreduce'd max and min of it are equal only if every rank has the same one).
func synchronizeParameters(_ model: Transformer, comm: Communicator) throws {
    comm.broadcast(UnsafeMutableRawBufferPointer(model.parameters), root: 0)
    let digest = Int(bitPattern: UInt(parameterDigest(model.parameters)))
    let high = comm.allreduce(digest, op: .max), low = comm.allreduce(digest, op: .min)
    guard high == low else {
        throw AllRanksError("parameters differ between ranks after the broadcast from rank 0", exitCode: 1)
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

/// A checkpoint of the model and optimizer at `step`, with the config and `dataIdentity` it was
/// trained under; `extra` holds stage-specific sections.
func makeCheckpoint(
    stage: StageName, step: Int, job: JobContext, dataIdentity: String, model: Transformer, optimizer: AdamW,
    extra: [String: [UInt8]] = [:]
) -> Checkpoint {
    let header = CheckpointHeader(
        stage: stage.rawValue, step: step, configYAML: job.config.yaml(), dataIdentity: dataIdentity, tensors: tensorEntries(model))
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
        throw AllRanksError("checkpoint has no optimizer step section")
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
        throw AllRanksError(
            "checkpoint (stage \(checkpoint.header.stage), step \(checkpoint.header.step)) holds a different model "
                + "(\(checkpoint.header.tensors.count) tensors: \(theirs), ...) than the config describes (\(expected.count) tensors: \(ours), ...)")
    }
}

/// Weights of a checkpoint directory, or of a stage directory's model (`readForConsumer`: the step
/// its DONE marker records, else its newest valid checkpoint), on every rank; nothing in the
/// directory is changed. For stages that start from another stage's model: it must be a model of
/// this config's shape, trained on this run's data (or on the data in `dataDirectory`).
func loadWeights(from url: URL, into model: Transformer, job: JobContext, dataDirectory: URL? = nil) throws -> Checkpoint {
    let problem = try job.comm.rootDecides { () -> String in
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else { return "does not exist" }
        return isDirectory.boolValue ? "" : "is a file"
    }
    guard problem.isEmpty else {
        throw AllRanksError("\(url.path) \(problem): give a stage directory (e.g. <run-dir>/pretrain) or one of its step-* checkpoints")
    }
    let store = CheckpointStore(directory: url, comm: job.comm)
    let checkpoint: Checkpoint
    var source = url
    if try job.comm.rootDecides({ FileManager.default.fileExists(atPath: url.appendingPathComponent(CheckpointHeader.fileName).path) }) {
        do {
            checkpoint = try store.load(checkpoint: url)
        } catch {
            throw AllRanksError("cannot load checkpoint \(url.path): \(error)")
        }
    } else {
        let loaded: LoadedCheckpoint?
        do {
            loaded = try store.loadForConsumer()
        } catch {
            throw AllRanksError("cannot load the model in \(url.path): \(error)")
        }
        guard let loaded else {
            throw AllRanksError("no checkpoint in \(url.path)")
        }
        for note in loaded.notes { job.console.warn(note) }
        if try !job.comm.rootDecides({ CheckpointStore.hasDoneMarker(url) }) {
            job.console.warn(
                "\(url.path) has not finished (no \(CheckpointStore.doneFileName) marker): its newest valid checkpoint, "
                    + "step \(loaded.checkpoint.header.step), is used")
        }
        checkpoint = loaded.checkpoint
        source = loaded.directory
    }
    try checkCheckpointMatchesRun(
        checkpoint.header, at: source, config: job.config, dataIdentity: try dataIdentity(job, directory: dataDirectory), match: .modelAndData)
    try restore(checkpoint, model: model, optimizer: nil)
    return checkpoint
}
