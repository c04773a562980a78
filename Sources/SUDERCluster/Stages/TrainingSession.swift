import ClusterRuntime
import Foundation
import Model

/// What the pretrain and SUDER stages share: the model and optimizer, the stage's checkpoint
/// store and metrics file, resume, the gradient allreduce, and stopping on a signal.
final class TrainingSession {
    let job: JobContext
    let stage: StageName
    let model: Transformer
    let optimizer: AdamW
    let store: CheckpointStore
    let metrics: MetricsLog
    /// The run's data, recorded in every checkpoint and compared on resume.
    let dataIdentity: String
    /// Optimizer steps (pretrain) or rounds (SUDER) completed.
    private(set) var step = 0
    /// Stage-specific sections of the checkpoint this session resumed from.
    private(set) var resumedSections: [String: [UInt8]] = [:]
    private var savedStep = -1

    /// Opens the stage directory (the caller checked that the stage has not finished): resumes
    /// from the newest valid checkpoint if there is one (refused unless this stage wrote it, see
    /// `checkResumePoint`), else calls `initialise` (which fills the parameters from rank 0's
    /// point of view) and makes every rank hold rank 0's parameters.
    init(job: JobContext, stage: StageName, model: Transformer, optimizer: AdamW, initialise: () throws -> Void) throws {
        self.job = job
        self.stage = stage
        self.model = model
        self.optimizer = optimizer
        let directory = job.stageDirectory(stage.rawValue)
        store = CheckpointStore(directory: directory, config: job.config, comm: job.comm)
        StopSignals.install(graceSeconds: 0)
        dataIdentity = try SUDERCluster.dataIdentity(job)
        let loaded: LoadedCheckpoint?
        do {
            loaded = try store.loadNewestValid()
        } catch let error as CheckpointError {
            throw AllRanksError("\(stage.rawValue): \(error)")
        }
        if let loaded {
            for note in loaded.notes { job.console.warn(note) }
            try checkResumePoint(loaded.checkpoint.header, at: loaded.directory, stage: stage, config: job.config)
            try checkCheckpointMatchesRun(
                loaded.checkpoint.header, at: loaded.directory, config: job.config, dataIdentity: dataIdentity, match: .wholeConfig)
            try restore(loaded.checkpoint, model: model, optimizer: optimizer)
            step = loaded.checkpoint.header.step
            savedStep = step
            resumedSections = loaded.checkpoint.sections
            job.console.print("\(stage.rawValue): resuming from \(loaded.directory.path) (step \(step))")
        } else {
            try initialise()
        }
        try synchronizeParameters(model, comm: job.comm)
        metrics = try MetricsLog(
            url: directory.appendingPathComponent("metrics.jsonl"), comm: job.comm,
            resumeAfterStep: loaded == nil ? nil : step)
    }

    func advance() { step += 1 }

    /// Sums every rank's gradients in place (the caller normalised them by the global batch) and
    /// stops the job cleanly if any is not finite. Returns the seconds spent communicating.
    func allreduceGradients(what: String) throws -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        job.comm.allreduce(model.gradients, op: .sum, file: #fileID, line: #line)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        if let index = firstNonFiniteIndex(UnsafeBufferPointer(model.gradients)) {
            throw AllRanksError(
                "\(stage.rawValue) step \(step + 1): \(what) gradient element \(index) is \(model.gradients[index]); "
                    + "stopping before it reaches the weights or a checkpoint (lower the learning rate?)", exitCode: 1)
        }
        return seconds
    }

    /// Writes a checkpoint of the current step (once per step).
    func save(extra: [String: [UInt8]] = [:]) throws {
        guard savedStep != step else { return }
        let started = Date()
        do {
            try store.save(
                makeCheckpoint(
                    stage: stage, step: step, job: job, dataIdentity: dataIdentity, model: model,
                    optimizer: optimizer, extra: extra))
        } catch let error as CheckpointError {
            // The store throws the same error on every rank: end together with rank 0's message
            // instead of an MPI abort.
            throw AllRanksError("\(stage.rawValue): checkpoint at step \(step) not written (earlier checkpoints are intact): \(error)", exitCode: 1)
        }
        savedStep = step
        job.console.print("\(stage.rawValue): checkpoint at step \(step) (\(String(format: "%.2f", Date().timeIntervalSince(started))) s)")
    }

    /// At a step boundary: if a stop signal arrived on any rank, checkpoint and end the job with
    /// the "checkpointed, please requeue" code.
    func stopIfRequested(extra: () -> [String: [UInt8]] = { [:] }) throws {
        guard StopSignals.shouldCheckpointAndStop(job.comm) else { return }
        job.console.print("\(stage.rawValue): stop requested; checkpointing at step \(step)")
        try save(extra: extra())
        job.comm.exitTogether(code: RequeueExitCode.checkpointed.rawValue)
    }

    /// Final checkpoint and the DONE marker.
    func finish(extra: [String: [UInt8]] = [:]) throws {
        try save(extra: extra)
        try store.markDone(step: step)
    }
}

func elapsedSeconds(since start: UInt64) -> Double {
    Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}
