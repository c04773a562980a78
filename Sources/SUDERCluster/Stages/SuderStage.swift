import Foundation
import GenEvalMini
import Model
import World

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

enum Direction: String, CaseIterable {
    case generation, understanding
}

/// One group's best and worst sample: the completion tokens after a shared context.
struct PreferencePair {
    let direction: Direction
    let context: [Int32]
    let chosen: [Int32]
    let rejected: [Int32]
}

/// The settings of a SUDER run, read once from the config.
struct SuderSettings {
    let rounds, promptsPerRound, imagesPerRound, k, topK, stepsPerRound, evalEvery: Int
    let temperature: Float
    let imageSampling: ImageSampling
    let objective: String
    let beta, gamma, dpoBeta, chosenNLL: Double
    let mode: DirectionMode
    let oracleReward: Bool
    let logSamples: Bool
    /// Groups whose best and worst rewards differ by no more than this give no pair.
    let minimumRewardGap: [Direction: Double]
    /// Each direction's weight in the joint preference loss.
    let lossWeight: [Direction: Double]
    let learningRate, gradClip: Float
    let seed: UInt64

    init(_ config: ResolvedConfig) {
        rounds = config.int("suder.rounds")
        promptsPerRound = config.int("suder.prompts_per_round")
        imagesPerRound = config.int("suder.images_per_round")
        k = config.int("suder.k")
        topK = config.int("suder.top_k")
        stepsPerRound = config.int("suder.steps_per_round")
        evalEvery = config.int("suder.eval_every")
        temperature = Float(config.double("suder.temperature"))
        imageSampling = ImageSampling(temperature: temperature, topK: topK, guidanceWeight: Float(config.double("suder.cfg_weight")))
        objective = config.string("suder.objective")
        beta = config.double("suder.beta")
        gamma = config.double("suder.gamma")
        dpoBeta = config.double("suder.dpo_beta")
        chosenNLL = config.double("suder.chosen_nll")
        mode = DirectionMode(rawValue: config.string("suder.direction"))!
        oracleReward = config.string("suder.reward") == "oracle"
        logSamples = config.bool("suder.log_samples")
        minimumRewardGap = [
            .generation: config.double("suder.min_reward_gap_generation"),
            .understanding: config.double("suder.min_reward_gap_understanding"),
        ]
        lossWeight = [.generation: 1, .understanding: config.double("suder.loss_weight_understanding")]
        learningRate = Float(config.double("suder.lr"))
        gradClip = Float(config.double("suder.grad_clip"))
        seed = UInt64(config.int("run.seed"))
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

/// `suder suder`: self-improvement rounds. Each round the ranks split the round's unpaired
/// prompts and images; for each prompt the model draws K images, scored by the mean log p(prompt |
/// image) through the understanding format; for each image it draws K captions, scored by the mean
/// log p(image | caption) through the generation format; each group's best and worst sample form a
/// pair; online SimPO (or DPO) trains on the pairs of both directions; one allreduce per direction
/// averages the gradients; every rank applies the same AdamW step.
func runSuderStage(_ job: JobContext) throws {
    let config = job.config, comm = job.comm, console = job.console
    let settings = SuderSettings(config)
    let dataset = try openDataset(job)
    let prompts = try dataset.unpairedPrompts()
    let images = try dataset.unpairedImages()
    guard settings.promptsPerRound <= prompts.count, settings.imagesPerRound <= images.count else {
        throw AgreedError(
            "suder.prompts_per_round (\(settings.promptsPerRound)) and suder.images_per_round (\(settings.imagesPerRound)) "
                + "must not exceed the unpaired prompts (\(prompts.count)) and images (\(images.count)) of the dataset")
    }
    let initial = job.suderInit ?? job.stageDirectory(StageName.pretrain.rawValue)
    if job.suderInit == nil && !job.isFinished(StageName.pretrain.rawValue) {
        throw AgreedError("suder: the pretrain stage has not finished in \(job.runDir.path); run it first or pass --init CHECKPOINT")
    }
    let modelConfig = modelConfig(config, vocabulary: dataset.vocabulary)
    try checkModelFitsWorld(modelConfig, job: job)
    let microBatch = config.int("pretrain.micro_batch")
    let model = Transformer(config: modelConfig, seed: 0, batchCapacity: microBatch)
    let optimizer = AdamW(
        parameterTable: model.parameterTable, parameterCount: model.parameterCount,
        weightDecay: Float(config.double("suder.weight_decay")))
    let session = try TrainingSession(job: job, stage: .suder, model: model, optimizer: optimizer) {
        let source = try loadWeights(from: initial, into: model, job: job)
        console.print("suder: starting from \(initial.path) (stage \(source.header.stage), step \(source.header.step))")
    }
    // DPO's frozen reference is always the starting model, also after a resume.
    var reference: Transformer?
    if settings.objective == "dpo" {
        let frozen = Transformer(config: modelConfig, seed: 0, batchCapacity: microBatch)
        _ = try loadWeights(from: initial, into: frozen, job: job)
        reference = frozen
    }
    let workbench = try ModelWorkbench(model: model, dataset: dataset)
    // Labels: the oracle ablation needs them on every rank; diagnostics only on rank 0.
    let labels: SuderLabels? = settings.oracleReward || comm.isRoot ? try SuderLabels(dataset: dataset) : nil
    let validation = try ValidationSet(dataset: dataset, config: config)
    let sampleLog =
        settings.logSamples
        ? try MetricsLog(
            url: job.stageDirectory(StageName.suder.rawValue).appendingPathComponent("samples.jsonl"), comm: comm,
            resumeAfterStep: session.step)
        : nil
    if settings.oracleReward {
        console.print("suder: reward = ORACLE (detector verdicts and caption labels): an upper-bound ablation that reads labels, not SUDER")
    }
    console.print(
        "suder: \(settings.rounds) rounds of \(settings.promptsPerRound) prompts and \(settings.imagesPerRound) images, K = \(settings.k), "
            + "\(settings.objective) (beta \(settings.objective == "dpo" ? settings.dpoBeta : settings.beta)\(settings.objective == "simpo" ? ", gamma \(settings.gamma)" : "")), "
            + "directions \(settings.mode.rawValue), over \(comm.size) rank(s)")

    let progress = console.progress("suder", total: settings.rounds, unit: "rounds")
    progress.advance(by: session.step)
    while session.step < settings.rounds {
        let round = session.step + 1
        var record = MetricsRecord()
        record.set("step", round)
        record.set("round", round)
        record.set("reward_source", settings.oracleReward ? "oracle" : "self")
        let outcome = try runRound(
            round: round, settings: settings, prompts: prompts, images: images, labels: labels,
            workbench: workbench, reference: reference, session: session, sampleLog: sampleLog, record: &record)
        session.advance()
        if settings.evalEvery > 0 && round % settings.evalEvery == 0 && round < settings.rounds {
            try quickEvaluation(step: round, workbench: workbench, validation: validation, session: session)
        }
        session.metrics.append(record)
        progress.advance(detail: outcome)
        try session.stopIfRequested()
        try session.save()
    }
    try quickEvaluation(step: session.step, workbench: workbench, validation: validation, session: session)
    try session.finish()
    console.print("suder: finished \(session.step) rounds; checkpoints in \(job.stageDirectory(StageName.suder.rawValue).path)")
}

/// The round's items: a seeded choice of `count` distinct indices out of `total`, the same on
/// every rank and for every rank count.
func roundItems(total: Int, count: Int, seed: UInt64, round: Int, direction: Direction) -> [Int] {
    var rng = SeededRNG(seed: streamSeed(seed, StreamPurpose.suderRoundItems, UInt64(round), direction == .generation ? 0 : 1))
    var indices = Array(0..<total)
    for i in 0..<min(count, total) {
        let j = i + Int(rng.next() % UInt64(total - i))
        indices.swapAt(i, j)
    }
    return Array(indices.prefix(count))
}

/// Index of the best and worst reward in a group, nil when they differ by no more than
/// `minimumGap` (with 0: when every reward ties).
func bestAndWorst(_ rewards: [Double], minimumGap: Double = 0) -> (best: Int, worst: Int)? {
    guard let best = rewards.indices.max(by: { rewards[$0] < rewards[$1] }),
        let worst = rewards.indices.min(by: { rewards[$0] < rewards[$1] }),
        rewards[best] - rewards[worst] > minimumGap
    else { return nil }
    return (best, worst)
}

/// What distinguishes the two directions within a round.
private struct RoundDirection {
    let direction: Direction
    let purpose: UInt64
    /// The unpaired prompts (generation) or images (understanding).
    let items: [[Int32]]
    let perRound: Int
    let context: (Int) -> [Int32]
    /// Samples for the given items (each repeated K times) and seeds.
    let draw: (_ items: [Int], _ seeds: [UInt64]) -> [[Int32]]
    let selfReward: (_ items: [Int], _ drawn: [[Int32]]) -> [Double]
    /// Only in the oracle ablation, where every rank holds the labels.
    let oracleReward: (_ item: Int, _ tokens: [Int32]) -> Double
}

/// One round: sample, reward, pair, update. Returns a short progress line.
private func runRound(
    round: Int, settings: SuderSettings, prompts: [[Int32]], images: [[Int32]], labels: SuderLabels?,
    workbench: ModelWorkbench, reference: Transformer?, session: TrainingSession, sampleLog: MetricsLog?,
    record: inout MetricsRecord
) throws -> String {
    let comm = session.job.comm, vocabulary = workbench.vocabulary, K = settings.k
    var sums = MetricSums()
    var times = (sampling: 0.0, scoring: 0.0, update: 0.0, communication: 0.0)
    var pairs: [PreferencePair] = []
    // Every sample with its reward, for the diagnostics on rank 0.
    var samples: [(direction: Direction, item: Int, tokens: [Int32], reward: Double)] = []

    // One direction at a time: draw K samples per item, reward each, keep each group's best and
    // worst. The directions differ only in what is drawn, how it is rewarded and the context.
    let directions = [
        RoundDirection(
            direction: .generation, purpose: StreamPurpose.suderImage, items: prompts, perRound: settings.promptsPerRound,
            context: { vocabulary.generationPrefix(prompt: prompts[$0]) },
            draw: { items, seeds in workbench.sampleImages(prompts: items.map { prompts[$0] }, seeds: seeds, settings: settings.imageSampling) },
            // R_gen = (1/|X_T|) log p(X_T | Y_V): the prompt (and its EOS) given the drawn image.
            selfReward: { items, drawn in
                workbench.textGivenImage(texts: items.map { prompts[$0] }, images: drawn, task: .prompt).map(\.mean)
            },
            oracleReward: { item, tokens in Double(workbench.oracle.imageReward(imageTokens: tokens, record: labels!.promptRecords[item])) }),
        RoundDirection(
            direction: .understanding, purpose: StreamPurpose.suderCaption, items: images, perRound: settings.imagesPerRound,
            context: { vocabulary.understandingPrefix(image: images[$0], task: .caption) },
            draw: { items, seeds in
                workbench.sampleCaptions(images: items.map { images[$0] }, seeds: seeds, temperature: settings.temperature, topK: settings.topK)
            },
            // R_und = (1/|X_V|) log p(X_V | Y_T): the image tokens given the drawn caption.
            selfReward: { items, drawn in
                workbench.imageGivenText(images: items.map { images[$0] }, texts: drawn.map(workbench.captionText)).map(\.mean)
            },
            oracleReward: { item, tokens in Double(workbench.oracle.captionReward(captionTokens: tokens, scene: labels!.imageScenes[item])) }),
    ]
    for part in directions where settings.mode.trains(part.direction, round: round) {
        let name = part.direction.rawValue
        let roundItems = roundItems(total: part.items.count, count: part.perRound, seed: settings.seed, round: round, direction: part.direction)
        let mine = shardIndices(count: roundItems.count, rank: comm.rank, size: comm.size).map { roundItems[$0] }
        let groupItems = mine.flatMap { Array(repeating: $0, count: K) }
        let seeds = mine.flatMap { i in (0..<K).map { streamSeed(settings.seed, part.purpose, UInt64(round), UInt64(i), UInt64($0)) } }
        var start = DispatchTime.now().uptimeNanoseconds
        let drawn = part.draw(groupItems, seeds)
        times.sampling += elapsedSeconds(since: start)
        start = DispatchTime.now().uptimeNanoseconds
        let rewards = settings.oracleReward ? zip(groupItems, drawn).map { part.oracleReward($0, $1) } : part.selfReward(groupItems, drawn)
        times.scoring += elapsedSeconds(since: start)
        for (n, i) in mine.enumerated() {
            let group = Array(rewards[(n * K)..<((n + 1) * K)])
            for k in 0..<K {
                samples.append((part.direction, i, drawn[n * K + k], group[k]))
                sums.add("\(name)/reward", group[k])
                sums.add("\(name)/reward_sq", group[k] * group[k])
            }
            guard let (best, worst) = bestAndWorst(group, minimumGap: settings.minimumRewardGap[part.direction]!) else {
                sums.add("\(name)/ties", 1); continue
            }
            pairs.append(
                PreferencePair(
                    direction: part.direction, context: part.context(i), chosen: drawn[n * K + best],
                    rejected: drawn[n * K + worst]))
        }
    }

    // Global pair counts per direction: each direction's loss is its mean over all ranks' pairs.
    var pairCounts = Direction.allCases.map { d in pairs.filter { $0.direction == d }.count }
    comm.allreduce(&pairCounts, op: .sum)
    for _ in 0..<settings.stepsPerRound {
        let start = DispatchTime.now().uptimeNanoseconds
        let update = try preferenceUpdate(
            pairs: pairs, globalCounts: pairCounts, settings: settings, reference: reference,
            session: session, sums: &sums)
        times.communication += update.communication
        times.update += elapsedSeconds(since: start) - update.communication
        // Every rank holds the same global norm: count it once.
        for (d, norm) in update.gradNorms { sums.add("\(d.rawValue)/grad_norm", comm.isRoot ? norm : 0, count: comm.isRoot ? 1 : 0) }
    }

    sums.allreduce(comm)
    for (index, d) in Direction.allCases.enumerated() where sums.mean("\(d.rawValue)/reward") != nil {
        let p = d.rawValue
        record.set("\(p)/pairs", pairCounts[index])
        record.set("\(p)/ties_dropped", Int(sums.sum("\(p)/ties") ?? 0))
        for name in ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected", "grad_norm"] {
            if let value = sums.mean("\(p)/\(name)") { record.set("\(p)/\(name)", value) }
        }
        if let mean = sums.mean("\(p)/reward"), let meanSquare = sums.mean("\(p)/reward_sq") {
            record.set("\(p)/self_reward_mean", mean)
            record.set("\(p)/self_reward_std", max(0, meanSquare - mean * mean).squareRoot())
        }
    }
    var timeSums = [times.sampling, times.scoring, times.update, times.communication]
    comm.allreduce(&timeSums, op: .max)
    record.set("time/sampling_s", timeSums[0])
    record.set("time/scoring_s", timeSums[1])
    record.set("time/update_s", timeSums[2])
    record.set("time/communication_s", timeSums[3])
    try recordFidelity(
        round: round, samples: samples, minimumRewardGap: settings.minimumRewardGap, labels: labels,
        workbench: workbench, comm: comm, sampleLog: sampleLog, record: &record)

    let parts = Direction.allCases.compactMap { d -> String? in
        guard let margin = sums.mean("\(d.rawValue)/rewards/margins") else { return nil }
        return "\(d.rawValue.prefix(3)) loss \(String(format: "%.3f", sums.mean("\(d.rawValue)/loss") ?? .nan)) margin \(String(format: "%.3f", margin))"
    }
    return parts.joined(separator: "  ")
}

/// Gradient of the preference loss over this rank's pairs, one direction at a time so each
/// direction's global gradient norm can be logged, then one AdamW step.
private func preferenceUpdate(
    pairs: [PreferencePair], globalCounts: [Int], settings: SuderSettings, reference: Transformer?,
    session: TrainingSession, sums: inout MetricSums
) throws -> (communication: Double, gradNorms: [(Direction, Double)]) {
    let model = session.model
    let chunkPairs = max(1, model.batchCapacity / 2)
    var communication = 0.0
    var gradNorms: [(Direction, Double)] = []
    var stash: [Float] = []
    for (d, direction) in Direction.allCases.enumerated() where globalCounts[d] > 0 {
        model.zeroGradients()
        let mine = pairs.filter { $0.direction == direction }
        for start in stride(from: 0, to: mine.count, by: chunkPairs) {
            let chunk = mine[start..<min(start + chunkPairs, mine.count)]
            // Sequences alternate chosen, rejected; the completion is weighted, the context not.
            let sequences = chunk.flatMap { [$0.context + $0.chosen, $0.context + $0.rejected] }
            let batch = TokenBatch(sequences: sequences, targetStarts: chunk.flatMap { [$0.context.count, $0.context.count] })
            let referenceSums = reference.map { $0.forward(batch) }
            let logps = model.forward(batch)
            let lengths = batch.weightedCounts.map(Double.init)
            let chosen = stride(from: 0, to: logps.count, by: 2).map { logps[$0] }, rejected = stride(from: 1, to: logps.count, by: 2).map { logps[$0] }
            let chosenLengths = stride(from: 0, to: lengths.count, by: 2).map { lengths[$0] }
            let rejectedLengths = stride(from: 1, to: lengths.count, by: 2).map { lengths[$0] }
            let losses: PreferenceLosses
            if let referenceSums {
                losses = dpoLoss(
                    chosenLogProbs: chosen, rejectedLogProbs: rejected,
                    referenceChosenLogProbs: stride(from: 0, to: referenceSums.count, by: 2).map { referenceSums[$0] },
                    referenceRejectedLogProbs: stride(from: 1, to: referenceSums.count, by: 2).map { referenceSums[$0] },
                    beta: settings.dpoBeta)
            } else {
                losses = simpoLoss(
                    chosenLogProbs: chosen, chosenLengths: chosenLengths, rejectedLogProbs: rejected,
                    rejectedLengths: rejectedLengths, beta: settings.beta, gamma: settings.gamma)
            }
            let scale = settings.lossWeight[direction]! / Double(globalCounts[d])
            // d/d logp_w of chosenNLL * (-logp_w / |y_w|).
            let chosenCoefficients = zip(losses.chosenGradients, chosenLengths).map { $0 - settings.chosenNLL / $1 }
            model.backward(sequenceCoefficients: zip(chosenCoefficients, losses.rejectedGradients).flatMap { [Float($0 * scale), Float($1 * scale)] })
            let p = direction.rawValue
            for i in chunk.indices.map({ $0 - start }) {
                sums.add("\(p)/loss", losses.losses[i] - settings.chosenNLL * chosen[i] / chosenLengths[i])
                sums.add("\(p)/rewards/chosen", losses.chosenRewards[i])
                sums.add("\(p)/rewards/rejected", losses.rejectedRewards[i])
                sums.add("\(p)/rewards/margins", losses.chosenRewards[i] - losses.rejectedRewards[i])
                sums.add("\(p)/rewards/accuracies", losses.chosenRewards[i] > losses.rejectedRewards[i] ? 1 : 0)
                sums.add("\(p)/logps/chosen", chosen[i] / chosenLengths[i])
                sums.add("\(p)/logps/rejected", rejected[i] / rejectedLengths[i])
            }
        }
        communication += try session.allreduceGradients(what: "suder \(direction.rawValue)")
        gradNorms.append((direction, l2Norm(UnsafeBufferPointer(model.gradients))))
        if stash.isEmpty {
            stash = Array(model.gradients)
        } else {
            for i in stash.indices { stash[i] += model.gradients[i] }
        }
    }
    guard !stash.isEmpty else { return (communication, gradNorms) }
    _ = stash.withUnsafeBufferPointer { model.gradients.update(from: $0) }
    clipGradients(model.gradients, maxNorm: settings.gradClip)
    session.optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: settings.learningRate)
    return (communication, gradNorms)
}

/// Reward fidelity, computed after the update by rank 0 from labels the rewards never saw: the
/// share of pairs the oracle orders as the self-reward did (among pairs the oracle tells apart),
/// per direction and per GenEval category; the within-group ranking accuracy over all samples
/// (`fidelity_auc`); and the oracle's score of all samples. Each group's pair is re-derived from
/// its gathered rewards by the same `bestAndWorst`, so only the samples travel. With
/// `suder.log_samples` every sample goes to `samples.jsonl` with its reward and the oracle's verdict.
private func recordFidelity(
    round: Int, samples: [(direction: Direction, item: Int, tokens: [Int32], reward: Double)],
    minimumRewardGap: [Direction: Double], labels: SuderLabels?, workbench: ModelWorkbench,
    comm: Communicator, sampleLog: MetricsLog?, record: inout MetricsRecord
) throws {
    var writer = ByteWriter()
    writer.u32(UInt32(samples.count))
    for sample in samples {
        writer.u8(sample.direction == .generation ? 0 : 1)
        writer.u32(UInt32(sample.item))
        writer.u64(sample.reward.bitPattern)
        writer.u32(UInt32(sample.tokens.count))
        for t in sample.tokens { writer.u32(UInt32(bitPattern: t)) }
    }
    guard let gathered = comm.gather(writer.bytes, root: 0), let labels else { return }
    // A group's samples arrive together and in draw order: items are split between ranks whole.
    var groups: [Direction: [Int: [(reward: Double, oracle: Float)]]] = [:]
    for bytes in gathered {
        var reader = ByteReader(bytes, file: "gathered SUDER samples")
        for _ in 0..<(try reader.u32("samples")) {
            let direction: Direction = try reader.u8("direction") == 0 ? .generation : .understanding
            let item = Int(try reader.u32("item"))
            let reward = Double(bitPattern: try reader.u64("reward"))
            let count = Int(try reader.u32("length"))
            guard count <= reader.remaining / 4 else { throw AgreedError("malformed gathered samples", exitCode: 1) }
            let tokens = try (0..<count).map { _ in Int32(bitPattern: try reader.u32("token")) }
            let found = direction == .generation ? workbench.oracle.imageVerdict(imageTokens: tokens, record: labels.promptRecords[item]) : nil
            let score =
                direction == .generation
                ? (found?.verdict.correct == true ? 1 : 0)
                : workbench.oracle.captionReward(captionTokens: tokens, scene: labels.imageScenes[item])
            groups[direction, default: [:]][item, default: []].append((reward, score))
            if let sampleLog {
                sampleLog.append(
                    sampleRecord(
                        round: round, direction: direction, item: item, tokens: tokens, reward: reward,
                        oracle: score, found: found, labels: labels, workbench: workbench))
            }
        }
    }
    var agree: [String: Int] = [:], disagree: [String: Int] = [:], oracleTies: [String: Int] = [:]
    var ranking: [String: (wins: Double, pairs: Int)] = [:]
    var sampleScore: [Direction: (sum: Double, count: Int)] = [:]
    for (direction, byItem) in groups {
        for (item, group) in byItem {
            var keys = [direction.rawValue]
            if direction == .generation { keys.append("generation/\(labels.promptRecords[item].tag.rawValue)") }
            sampleScore[direction, default: (0, 0)].sum += group.reduce(0) { $0 + Double($1.oracle) }
            sampleScore[direction, default: (0, 0)].count += group.count
            let (wins, count) = withinGroupRanking(group)
            for key in keys { ranking[key, default: (0, 0)].wins += wins; ranking[key, default: (0, 0)].pairs += count }
            guard let (best, worst) = bestAndWorst(group.map(\.reward), minimumGap: minimumRewardGap[direction]!) else { continue }
            let (w, l) = (group[best].oracle, group[worst].oracle)
            for key in keys {
                if w > l { agree[key, default: 0] += 1 } else if w < l { disagree[key, default: 0] += 1 } else { oracleTies[key, default: 0] += 1 }
            }
        }
    }
    for key in Set(agree.keys).union(disagree.keys).union(oracleTies.keys).sorted() {
        let a = agree[key] ?? 0, d = disagree[key] ?? 0, t = oracleTies[key] ?? 0
        if a + d > 0 { record.set("fidelity/\(key)", Double(a) / Double(a + d)) }
        record.set("fidelity_pairs/\(key)", a + d)
        record.set("fidelity_oracle_ties/\(key)", t)
    }
    for (direction, score) in sampleScore.sorted(by: { $0.key.rawValue < $1.key.rawValue }) where score.count > 0 {
        record.set("oracle_sample_accuracy/\(direction.rawValue)", score.sum / Double(score.count))
    }
    for (key, value) in ranking.sorted(by: { $0.key < $1.key }) where value.pairs > 0 {
        record.set("fidelity_auc/\(key)", value.wins / Double(value.pairs))
        record.set("fidelity_auc_pairs/\(key)", value.pairs)
    }
}

/// Over every (right, wrong) pair of samples in one group (oracle 1 vs 0): how many the reward
/// ranks right above wrong, ties counting half, and how many such pairs there are.
func withinGroupRanking(_ group: [(reward: Double, oracle: Float)]) -> (wins: Double, pairs: Int) {
    var wins = 0.0, pairs = 0
    for right in group where right.oracle > 0 {
        for wrong in group where wrong.oracle == 0 {
            pairs += 1
            wins += right.reward > wrong.reward ? 1 : (right.reward == wrong.reward ? 0.5 : 0)
        }
    }
    return (wins, pairs)
}

/// One line of `samples.jsonl`: what was drawn, its self-reward, the oracle's verdict and why.
private func sampleRecord(
    round: Int, direction: Direction, item: Int, tokens: [Int32], reward: Double, oracle: Float,
    found: (detections: [DetectedObject], verdict: GenEvalVerdict)?, labels: SuderLabels,
    workbench: ModelWorkbench
) -> MetricsRecord {
    var line = MetricsRecord()
    line.set("step", round)
    line.set("direction", direction.rawValue)
    line.set("item", item)
    line.set("reward", reward)
    line.set("oracle", Int(oracle))
    switch direction {
    case .generation:
        let prompt = labels.promptRecords[item]
        line.set("category", prompt.tag.rawValue)
        line.set("prompt", prompt.prompt)
        if let found {
            let objects = found.detections.map { "\($0.color.rawValue) \($0.shape.rawValue) \(String(format: "%.2f", $0.confidence))" }
            line.set("detected", objects.joined(separator: ", "))
            line.set("verdict", found.verdict.reason)
        } else {
            line.set("verdict", "not an image")
        }
    case .understanding:
        line.set("caption", (try? workbench.vocabulary.decodeUntilEOS(tokens)) ?? workbench.vocabulary.describe(tokens))
        line.set("truth", canonicalCaption(labels.imageScenes[item]))
    }
    return line
}
