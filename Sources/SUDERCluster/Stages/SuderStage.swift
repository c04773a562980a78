import ClusterRuntime
import Foundation
import Model
import World

/// The two directions of the unified model SUDER improves.
enum Direction: String, CaseIterable {
    case generation, understanding
}

/// Which directions train in a round.
enum DirectionMode: String {
    case joint, generation, understanding, alternating

    func trains(_ direction: Direction, round: Int) -> Bool {
        switch self {
        case .joint: return true
        case .generation: return direction == .generation
        case .understanding: return direction == .understanding
        case .alternating: return (round % 2 == 1) == (direction == .generation)
        }
    }
}

/// Labels for diagnostics and the oracle ablation. A self-rewarded run reads them only on rank 0,
/// after each round's update, to measure reward fidelity; they never reach a reward or a gradient.
struct SuderLabels {
    let promptRecords: [MetadataRecord]
    let imageScenes: [Scene]

    init(dataset: DatasetReader) throws {
        promptRecords = try dataset.unpairedPromptRecords()
        imageScenes = try dataset.unpairedImageScenes()
    }
}

/// `suder suder`: self-improvement rounds (`SuderRound.swift`). Each round the ranks split the
/// round's unpaired prompts and images, draw K samples per item, score each with the model's own
/// other direction, pair each group's best and worst, and take a preference step on the pairs.
func runSuderStage(_ job: JobContext) throws {
    let comm = job.comm, console = job.console
    let settings = SuderSettings(job.config), modelSettings = ModelSettings(job.config), evalSettings = EvalSettings(job.config)
    let dataset = try openDataset(job)
    let prompts = try dataset.unpairedPrompts()
    let images = try dataset.unpairedImages()
    guard settings.promptsPerRound <= prompts.count, settings.imagesPerRound <= images.count else {
        throw AllRanksError(
            "suder.prompts_per_round (\(settings.promptsPerRound)) and suder.images_per_round (\(settings.imagesPerRound)) "
                + "must not exceed the unpaired prompts (\(prompts.count)) and images (\(images.count)) of the dataset")
    }
    let initial = job.suderInit ?? job.stageDirectory(StageName.pretrain.rawValue)
    if try job.suderInit == nil && !job.stageFinished(StageName.pretrain.rawValue) {
        throw AllRanksError("suder: the pretrain stage has not finished in \(job.runDir.path); run it first or pass --init CHECKPOINT")
    }
    let modelConfig = modelSettings.modelConfig(vocabulary: dataset.vocabulary)
    try checkModelFitsWorld(modelConfig, job: job)
    let model = Transformer(config: modelConfig, seed: 0, batchCapacity: modelSettings.microBatch)
    let optimizer = AdamW(parameterTable: model.parameterTable, parameterCount: model.parameterCount, weightDecay: settings.weightDecay)
    let session = try TrainingSession(job: job, stage: .suder, model: model, optimizer: optimizer) {
        let source = try loadWeights(from: initial, into: model, job: job)
        console.print("suder: starting from \(initial.path) (stage \(source.header.stage), step \(source.header.step))")
    }
    // The frozen reference (DPO, GRPO's KL penalty) is always the starting model, also after a resume.
    var reference: Transformer?
    if settings.needsReference {
        let frozen = Transformer(config: modelConfig, seed: 0, batchCapacity: modelSettings.microBatch)
        _ = try loadWeights(from: initial, into: frozen, job: job)
        reference = frozen
    }
    let tasks = try UnifiedModelTasks(model: model, dataset: dataset)
    // Labels: the oracle ablation needs them on every rank; diagnostics only on rank 0.
    let labels: SuderLabels? = settings.reward == .oracle || comm.isRoot ? try SuderLabels(dataset: dataset) : nil
    let validation = try ValidationSet(dataset: dataset, settings: evalSettings)
    let sampleLog =
        settings.logSamples
        ? try MetricsLog(
            url: job.stageDirectory(StageName.suder.rawValue).appendingPathComponent("samples.jsonl"), comm: comm,
            resumeAfterStep: session.step)
        : nil
    let round = SuderRound(
        settings: settings, prompts: prompts, images: images, labels: labels, tasks: tasks,
        trainer: PreferenceTrainer(session: session, settings: settings, reference: reference),
        diagnostics: SuderDiagnostics(
            labels: labels, tasks: tasks, comm: comm, sampleLog: sampleLog,
            pairing: GroupPairing(settings)))
    switch settings.reward {
    case .selfReward: break
    case .oracle:
        console.print("suder: reward = ORACLE (detector verdicts and caption labels): an upper-bound ablation that reads labels, not SUDER")
    case .random, .shuffled:
        console.print(
            "suder: reward = \(settings.reward.rawValue.uppercased()), \(settings.reward.label): the self-reward run's samples and update size, "
                + "\(settings.reward == .random ? "chosen and rejected drawn at random in each group" : "each group's self-rewards permuted before pairing"); "
                + "a control, not SUDER")
    }
    if let state = session.resumedSections[LikelihoodGuard.checkpointSection] { try round.likelihoodGuard.restore(state) }
    let objective: String
    switch settings.objective {
    case .simpo: objective = "simpo (beta \(settings.simpoBeta), gamma \(settings.simpoGamma))"
    case .dpo: objective = "dpo (beta \(settings.dpoBeta))"
    case .grpo: objective = "grpo (kl \(settings.grpoKL), clip \(settings.grpoClip))"
    }
    console.print(
        "suder: \(settings.rounds) rounds of \(settings.promptsPerRound) prompts and \(settings.imagesPerRound) images, K = \(settings.k), "
            + "\(objective), directions \(settings.mode.rawValue), over \(comm.size) rank(s)")
    let roundWork = [
        (settings.mode != .understanding, settings.promptsPerRound, "prompt of a round", "suder.prompts_per_round"),
        (settings.mode != .generation, settings.imagesPerRound, "image of a round", "suder.images_per_round"),
    ]
    for (trained, items, work, key) in roundWork where trained {
        if let notice = idleRanksNotice(items: items, ranks: comm.size, of: work, setBy: key) { console.print(notice) }
    }

    let progress = console.progress("suder", total: settings.rounds, unit: "rounds", resumedFrom: session.step)
    while session.step < settings.rounds {
        let number = session.step + 1
        var record = MetricsRecord()
        record.set("step", number)
        record.set("round", number)
        record.set("reward_source", settings.reward.rawValue)
        let outcome = try round.run(number, record: &record)
        session.advance()
        if settings.evalEvery > 0 && number % settings.evalEvery == 0 && number < settings.rounds {
            try quickEvaluation(step: number, tasks: tasks, validation: validation, settings: evalSettings, session: session)
        }
        session.metrics.append(record)
        progress.advance(detail: outcome)
        let guardState = [LikelihoodGuard.checkpointSection: round.likelihoodGuard.encoded]
        try session.stopIfRequested { guardState }
        if round.likelihoodGuard.stopAfterRound {
            console.print(
                "suder: logps/chosen fell \(settings.guardRounds) rounds in a row; the likelihood guard (factor 0) ends the stage after round \(number)")
            break
        }
        try session.save(extra: guardState)
    }
    try quickEvaluation(step: session.step, tasks: tasks, validation: validation, settings: evalSettings, session: session)
    try session.finish(extra: [LikelihoodGuard.checkpointSection: round.likelihoodGuard.encoded])
    console.print("suder: finished \(session.step) rounds; checkpoints in \(job.stageDirectory(StageName.suder.rawValue).path)")
}
