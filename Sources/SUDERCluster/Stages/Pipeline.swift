import ClusterRuntime
import Foundation

/// The job suite's stages, in pipeline order.
public enum StageName: String, CaseIterable {
    case data, pretrain, suder, eval
}

/// Runs one stage unless its DONE marker says it already finished in this run directory.
public func runStage(_ stage: StageName, job: JobContext) throws {
    if try job.stageFinished(stage.rawValue) {
        job.console.print("stage \(stage.rawValue): already finished in \(job.stageDirectory(stage.rawValue).path) (DONE marker); nothing to do")
        return
    }
    job.console.print("stage \(stage.rawValue): starting")
    // Every stage checkpoints (or keeps its finished parts) and exits 85 on SIGUSR1 / SIGTERM.
    StopSignals.install()
    switch stage {
    case .data: try runDataStage(job)
    case .pretrain: try runPretrainStage(job)
    case .suder: try runSuderStage(job)
    case .eval: try runEvalStage(job)
    }
    // A stop that came too late to cut the stage short still ends the job before the next one.
    if StopSignals.shouldCheckpointAndStop(job.comm) {
        job.console.print("stage \(stage.rawValue): finished; stop requested, exiting for a requeue")
        job.comm.exitTogether(code: RequeueExitCode.checkpointed.rawValue)
    }
}

/// Runs the stages in order up to and including `until`, skipping those already finished.
public func runPipeline(job: JobContext, until: StageName = .eval) throws {
    for stage in StageName.allCases {
        try runStage(stage, job: job)
        if stage == until { break }
    }
    job.console.print("pipeline: finished through stage \(until.rawValue)")
}
