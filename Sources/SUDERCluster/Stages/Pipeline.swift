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
    switch stage {
    case .data: try runDataStage(job)
    case .pretrain: try runPretrainStage(job)
    case .suder: try runSuderStage(job)
    case .eval: try runEvalStage(job)
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
