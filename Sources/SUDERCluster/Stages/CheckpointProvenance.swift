import ClusterRuntime
import Foundation
import World

// A checkpoint stores the config it was written under and the identity of its data. Loading it
// into a run with other settings would continue one experiment under another's name (and
// `config.yaml` would record settings that did not produce the weights), so both are compared.

/// What identifies the dataset in the run directory: the data seed and a hash of the vocabulary
/// and codebook files in `directory` (the run's data stage unless given). Rank 0 reads the files;
/// every rank learns the same string. Collective.
func dataIdentity(_ job: JobContext, directory: URL? = nil) throws -> String {
    let directory = directory ?? job.stageDirectory(StageName.data.rawValue)
    return try job.comm.rootDecides {
        var bytes: [UInt8] = []
        for name in [DatasetFile.vocabulary, DatasetFile.codebook] {
            bytes += try readWholeFile(directory.appendingPathComponent(name), limit: 1 << 30)
        }
        return "data.seed \(job.config.int("data.seed")), vocabulary and codebook xxhash64 \(String(format: "%016llx", xxhash64(bytes)))"
    }
}

/// How much of the run a loaded checkpoint must match.
enum CheckpointMatch {
    /// Resuming a stage: every key that can change results (the run directory's rule), and the data.
    case wholeConfig
    /// Starting from another stage's model (the base model of the SUDER stage, `--init`, eval):
    /// the model's keys and the data; the other stages' keys are this run's to choose.
    case modelAndData
}

/// Throws an error naming every differing key (checkpoint value, then this run's) when the
/// checkpoint was written under settings `match` says must agree. Checkpoints from before the
/// data identity was stored are compared on their config alone.
func checkCheckpointMatchesRun(
    _ header: CheckpointHeader, at source: URL, config: ResolvedConfig, dataIdentity: String, match: CheckpointMatch
) throws {
    let stored: ResolvedConfig
    do {
        stored = try ResolvedConfig.resolve(
            fileContents: (source.appendingPathComponent(CheckpointHeader.fileName), header.configYAML), overrides: [],
            schema: configSchema, acceptRenamedKeys: true)
    } catch {
        throw AllRanksError("checkpoint \(source.path): cannot read the config it was written under: \(error)")
    }
    var keys = config.differences(from: stored, ignoring: configSchema.resultNeutralPrefixes)
    if match == .modelAndData {
        // The micro-batch only bounds memory; it is not part of what the weights are.
        keys = keys.filter { $0.hasPrefix("model.") && $0 != "model.micro_batch" }
    }
    var differences = keys.map { "\($0): \(stored.values[$0]?.description ?? "-") -> \(config.values[$0]?.description ?? "-")" }
    if !header.dataIdentity.isEmpty && header.dataIdentity != dataIdentity {
        differences.append("data: \(header.dataIdentity) -> \(dataIdentity)")
    }
    guard differences.isEmpty else {
        throw AllRanksError(
            "checkpoint \(source.path) (stage \(header.stage), step \(header.step)) was written under another config "
                + "(checkpoint -> this run: \(differences.joined(separator: "; "))); "
                + (match == .wholeConfig
                    ? "resume it in the run directory it came from, or move it away to start this stage afresh"
                    : "start from a model of this config and dataset"))
    }
}

/// A stage resumes only from a checkpoint it wrote for the step its directory is named after,
/// within the steps this run takes: one copied or renamed in by hand would otherwise go on from
/// another stage's step, or count as finished without training.
func checkResumePoint(_ header: CheckpointHeader, at source: URL, stage: StageName, config: ResolvedConfig) throws {
    let lastStepKey = stage == .pretrain ? "pretrain.steps" : "suder.rounds"
    let problem: String
    if header.stage != stage.rawValue {
        problem = "it was written by the \(header.stage) stage, not \(stage.rawValue)"
    } else if source.lastPathComponent != CheckpointStore.directoryName(step: header.step) {
        problem = "it holds step \(header.step), not the step its name says"
    } else if header.step > config.int(lastStepKey) {
        problem = "it is at step \(header.step), past the last step of this run (\(lastStepKey) = \(config.int(lastStepKey)))"
    } else {
        return
    }
    throw AllRanksError(
        "\(stage.rawValue): cannot resume from checkpoint \(source.path): \(problem). A stage resumes only from the checkpoints it "
            + "wrote itself; move this one out of \(source.deletingLastPathComponent().path)"
            + (stage == .suder ? " (to start SUDER from a model, give it with --init)" : ""))
}
