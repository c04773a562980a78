import ClusterRuntime
import Foundation
import Model
import World

/// A trained model opened from a checkpoint for the commands that use one outside a stage
/// (`generate`, `caption`): the run's config, its dataset (vocabulary and codebook) and the weights.
struct TrainedModel {
    let job: JobContext
    let dataset: DatasetReader
    let tasks: UnifiedModelTasks
    let checkpoint: Checkpoint
    /// Pixels a side of the world's images.
    let canvasSize: Int
}

/// Where a checkpoint's model comes from: `checkpoint` is a `step-*` directory (holding the header)
/// or a stage directory (its model as `loadWeights` reads it); the run directory above it holds
/// `config.yaml` and, unless `data` is given, `data/`.
func checkpointRunDirectory(_ checkpoint: URL) throws -> URL {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: checkpoint.path, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw AllRanksError(
            "--checkpoint \(checkpoint.path) is not a directory: give a stage directory (e.g. <run-dir>/suder) or one of its step-* directories")
    }
    let isStepDirectory = FileManager.default.fileExists(atPath: checkpoint.appendingPathComponent(CheckpointHeader.fileName).path)
    let stage = isStepDirectory ? checkpoint.standardizedFileURL.deletingLastPathComponent() : checkpoint.standardizedFileURL
    return stage.deletingLastPathComponent()
}

/// Opens the model on every rank. Rank 0 finds and reads the run's config for every rank, so all
/// reach the same verdict; a run recorded before a key was renamed still opens.
func openTrainedModel(checkpoint: URL, data: URL?, comm: Communicator) throws -> TrainedModel {
    let runDir = URL(fileURLWithPath: try comm.rootDecides { try checkpointRunDirectory(checkpoint).path }, isDirectory: true)
    let configFile = runDir.appendingPathComponent("config.yaml")
    let configText = try comm.rootDecides {
        guard FileManager.default.fileExists(atPath: configFile.path) else {
            throw AllRanksError("no \(configFile.path): the model's settings are read from the config.yaml of the checkpoint's run directory")
        }
        return try ResolvedConfig.readConfigFile(configFile)
    }
    let config: ResolvedConfig
    do {
        config = try ResolvedConfig.resolve(
            fileContents: (configFile, configText), overrides: [], schema: configSchema, acceptRenamedKeys: true)
    } catch { throw AllRanksError("\(error)") }
    let job = JobContext(comm: comm, config: config, runDir: runDir)
    let dataDirectory = data ?? job.stageDirectory(StageName.data.rawValue)
    try comm.rootDecides {
        do {
            _ = try DatasetReader(directory: dataDirectory).codebook()
        } catch {
            throw AllRanksError(
                "cannot read the vocabulary and codebook in \(dataDirectory.path) (\(error)); "
                    + (data == nil
                        ? "give --data DIR, the data directory of the run the model was trained on"
                        : "--data must be the data directory of the run the model was trained on"))
        }
    }
    let dataset = try DatasetReader(directory: dataDirectory)
    let modelSettings = ModelSettings(config)
    let modelConfig = modelSettings.modelConfig(vocabulary: dataset.vocabulary)
    try checkModelFitsWorld(modelConfig, job: job)
    let model = Transformer(config: modelConfig, seed: 0, batchCapacity: modelSettings.microBatch)
    let loaded = try loadWeights(from: checkpoint, into: model, job: job, dataDirectory: dataDirectory)
    return TrainedModel(
        job: job, dataset: dataset, tasks: try UnifiedModelTasks(model: model, dataset: dataset), checkpoint: loaded,
        canvasSize: config.int("data.canvas"))
}

/// Runs a command that needs a trained model on every rank; errors end all ranks together.
func runWithTrainedModel(checkpoint: URL, data: URL?, _ body: (TrainedModel) throws -> Void) -> Never {
    let comm = makeCommunicator()
    let opened: TrainedModel
    do {
        opened = try openTrainedModel(checkpoint: checkpoint, data: data, comm: comm)
    } catch let error as AllRanksError {
        if comm.isRoot { printError("error: \(error.description)") }
        comm.exitTogether(code: error.exitCode)
    } catch {
        if comm.isRoot { printError("error: \(error)") }
        comm.exitTogether(code: 2)
    }
    runReportingErrors(opened.job) { try body(opened) }
}

/// Text to word ids; a word outside the vocabulary is an error naming it and listing the words.
func encodeUserText(_ text: String, what: String, vocabulary: Vocabulary) throws -> [Int32] {
    for word in Vocabulary.splitWords(text) where (try? vocabulary.id(of: word)) == nil {
        throw AllRanksError(
            "\(what) '\(text)': the word '\(word)' is not in the model's vocabulary; its words are: "
                + vocabulary.words.joined(separator: " "))
    }
    return try vocabulary.encode(text)
}
