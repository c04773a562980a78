import ClusterRuntime
import Foundation
import Model
import World

/// The kinds of supervised sequences pretraining mixes.
enum PretrainKind: Int, CaseIterable {
    case generationFromPrompt, generationFromCaption, captionFull, captionPromptStyle, promptImperfect, probe

    /// The loss this kind's sequences count towards.
    var loss: PretrainLoss {
        switch self {
        case .generationFromPrompt, .generationFromCaption: return .generation
        case .captionFull, .captionPromptStyle, .promptImperfect: return .understanding
        case .probe: return .probes
        }
    }
}

/// Pretraining's losses, logged separately as `loss/<name>`.
enum PretrainLoss: String, CaseIterable {
    case generation, understanding, probes

    var metric: String { "loss/" + rawValue }
}

/// The supervised training data and how a global batch is drawn from it. A batch depends only on
/// (seed, step), so it is the same for any rank count and needs no state in checkpoints.
struct PretrainData {
    let vocabulary: Vocabulary
    let pairs: [PromptImagePair]
    let captions: [CaptionExample]
    let probes: [ProbeExample]
    let imperfect: [PromptImagePair]
    let seed: UInt64
    /// Cumulative probabilities over `PretrainKind.allCases`.
    let cumulative: [Double]
    let promptDropout: Double

    init(dataset: DatasetReader, settings: PretrainSettings) throws {
        vocabulary = dataset.vocabulary
        pairs = try dataset.trainPairs()
        captions = try dataset.trainCaptions()
        probes = try dataset.trainProbes()
        let imperfectShare = settings.imperfectPrompts
        do {
            imperfect = imperfectShare > 0 ? try dataset.trainImperfect() : []
        } catch WorldError.missingFile(let path) {
            throw AllRanksError(
                "missing file \(path): the dataset was written before imperfect renders; run the data stage again "
                    + "into a new run directory, or set pretrain.imperfect_prompts=0")
        }
        seed = settings.seed
        promptDropout = settings.promptDropout
        let generation = settings.mixGeneration, understanding = settings.mixUnderstanding
        let fromCaption = settings.captionConditioned, promptStyle = settings.promptStyleCaptions
        var weights = [
            generation * (1 - fromCaption), generation * fromCaption, understanding * (1 - promptStyle),
            understanding * promptStyle * (1 - imperfectShare), understanding * promptStyle * imperfectShare,
            settings.mixProbes,
        ]
        // A kind without data gets no share.
        let available = [!pairs.isEmpty, !captions.isEmpty, !captions.isEmpty, !pairs.isEmpty, !imperfect.isEmpty, !probes.isEmpty]
        for i in weights.indices where !available[i] { weights[i] = 0 }
        let total = weights.reduce(0, +)
        guard total > 0 else { throw AllRanksError("pretraining has no data: the dataset's training splits are empty or the mix gives them no share") }
        var running = 0.0
        cumulative = weights.map {
            running += $0 / total; return running
        }
    }

    /// Item `item` of global batch `step`: its kind and its token sequence with the target span.
    func example(step: Int, item: Int) throws -> (kind: PretrainKind, sequence: TokenSequence) {
        var rng = Xoshiro256RNG(seed: streamSeed(seed, StreamPurpose.pretrainData, UInt64(step), UInt64(item)))
        let u = rng.nextUniform()
        let kind = PretrainKind(rawValue: cumulative.firstIndex { u < $0 } ?? cumulative.count - 1)!
        func pick(_ count: Int) -> Int { Int(rng.next() % UInt64(count)) }
        switch kind {
        case .generationFromPrompt, .generationFromCaption:
            let (text, image): ([Int32], [Int32])
            if kind == .generationFromPrompt {
                let pair = pairs[pick(pairs.count)]
                (text, image) = (pair.prompt, pair.image)
            } else {
                let example = captions[pick(captions.count)]
                (text, image) = (example.caption, example.image)
            }
            // Prompt dropout teaches the unconditional stream classifier-free guidance needs:
            // the same null prompt the sampler uses (PADs keep the positions aligned).
            let dropped = rng.nextUniform() < promptDropout
            let prompt = dropped ? [Int32](repeating: Vocabulary.pad, count: text.count) : text
            return (kind, vocabulary.generationSequence(prompt: prompt, image: image))
        case .captionFull:
            let example = captions[pick(captions.count)]
            return (kind, vocabulary.understandingSequence(image: example.image, task: .caption, text: example.caption))
        case .captionPromptStyle, .promptImperfect:
            let pool = kind == .captionPromptStyle ? pairs : imperfect
            let pair = pool[pick(pool.count)]
            return (kind, vocabulary.understandingSequence(image: pair.image, task: .prompt, text: pair.prompt))
        case .probe:
            let probe = probes[pick(probes.count)]
            return (kind, try vocabulary.probeSequence(image: probe.image, question: probe.question, answer: probe.answer))
        }
    }
}

/// `suder pretrain`: data-parallel supervised training of the base model on both directions and
/// the yes/no probes. Every rank computes its share of each global batch; one allreduce sums the
/// gradients; every rank applies the same AdamW step.
func runPretrainStage(_ job: JobContext) throws {
    let comm = job.comm, console = job.console
    let settings = PretrainSettings(job.config), modelSettings = ModelSettings(job.config), evalSettings = EvalSettings(job.config)
    let dataset = try openDataset(job)
    let data = try PretrainData(dataset: dataset, settings: settings)
    let modelConfig = modelSettings.modelConfig(vocabulary: dataset.vocabulary)
    try checkModelFitsWorld(modelConfig, job: job)
    let microBatch = modelSettings.microBatch
    let model = Transformer(config: modelConfig, seed: streamSeed(settings.seed, StreamPurpose.initialisation), batchCapacity: microBatch)
    let optimizer = AdamW(parameterTable: model.parameterTable, parameterCount: model.parameterCount, weightDecay: settings.weightDecay)
    // Every rank initialises from the same seed; the session then broadcasts rank 0's parameters
    // and verifies them, so a rank with a different BLAS or build cannot drift silently.
    let session = try TrainingSession(job: job, stage: .pretrain, model: model, optimizer: optimizer) {}
    let tasks = try UnifiedModelTasks(model: model, dataset: dataset)
    let validation = try ValidationSet(dataset: dataset, settings: evalSettings)

    let steps = settings.steps, batchSize = settings.batchSize
    let schedule = LearningRateSchedule(
        peak: settings.learningRate, warmupSteps: settings.warmupSteps, totalSteps: steps,
        minRatio: settings.minLearningRateRatio)
    let clip = settings.gradClip
    let logEvery = settings.logEvery, evalEvery = settings.evalEvery, checkpointEvery = settings.checkpointEvery
    console.print(
        "pretrain: \(model.parameterCount) parameters, \(steps) steps of \(batchSize) sequences over \(comm.size) rank(s), "
            + "\(data.pairs.count) pairs, \(data.captions.count) captions, \(data.imperfect.count) imperfect renders, \(data.probes.count) probes")
    if let notice = idleRanksNotice(items: batchSize, ranks: comm.size, of: "sequence of a step", setBy: "pretrain.batch_size") {
        console.print(notice)
    }

    let progress = console.progress("pretrain", total: steps, unit: "steps", resumedFrom: session.step)
    // Metrics since the last log line, the same on every rank (each step's sums are reduced), so
    // a checkpoint mid-window carries it and a resumed run logs what an uninterrupted one does.
    var window = try PretrainMetrics.resumed(from: session.resumedSections)
    var windowStart = DispatchTime.now().uptimeNanoseconds
    var windowCommunication = 0.0, windowSteps = 0
    var progressDetail = ""
    while session.step < steps {
        let step = session.step + 1
        model.zeroGradients()
        var stepSums = PretrainMetrics.empty()
        // This rank's items of the global batch, rank r taking r, r + N, ...
        let mine = try shardIndices(count: batchSize, rank: comm.rank, size: comm.size).map { try data.example(step: step, item: $0) }
        for start in stride(from: 0, to: mine.count, by: microBatch) {
            let chunk = mine[start..<min(start + microBatch, mine.count)]
            let batch = TokenBatch(sequences: chunk.map(\.sequence.tokens), targetStarts: chunk.map(\.sequence.targetRange.lowerBound))
            let sums = model.forward(batch)
            let counts = batch.weightedCounts
            // Loss = mean over the global batch of each sequence's mean token NLL, so the short
            // captions weigh as much as the 65-token images.
            model.backward(sequenceCoefficients: counts.map { -1 / (Float(batchSize) * Float($0)) })
            for (n, item) in chunk.enumerated() {
                stepSums.add(item.kind.loss.metric, -sums[n] / Double(counts[n]))
                stepSums.add("tokens", Double(batch.lengths[n]))
            }
            let flops = FLOPs.trainingStep(modelConfig, batch: chunk.count, seqLen: batch.seqLen, headRows: counts.reduce(0, +))
            stepSums.add("flops", flops, count: 0)
        }
        windowCommunication += try session.allreduceGradients(what: "pretrain")
        let gradNorm = clipGradients(model.gradients, maxNorm: clip)
        let learningRate = schedule.rate(atStep: step)
        optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: learningRate)
        session.advance()
        windowSteps += 1
        stepSums.allreduce(comm)
        // The norm of the allreduced gradient: the same on every rank, so added once, after the reduce.
        stepSums.add("grad_norm", Double(gradNorm))
        window.add(stepSums)

        if step % logEvery == 0 || step == steps {
            let seconds = elapsedSeconds(since: windowStart)
            var record = MetricsRecord()
            record.set("step", step)
            for loss in PretrainLoss.allCases {
                if let value = window.mean(loss.metric) { record.set(loss.metric, value) }
            }
            record.set("lr", Double(learningRate))
            record.set("grad_norm", window.mean("grad_norm") ?? 0)
            record.set("tokens_per_s", (window.sum("tokens") ?? 0) / seconds)
            record.set("gflops_per_s", (window.sum("flops") ?? 0) / seconds / 1e9)
            record.set("step_time_s", seconds / Double(windowSteps))
            record.set("communication_s", windowCommunication)
            record.set("peak_memory_mb", peakResidentMegabytes())
            session.metrics.append(record)
            let losses = PretrainLoss.allCases.compactMap { loss in
                window.mean(loss.metric).map { "\(loss.rawValue.prefix(3)) \(String(format: "%.3f", $0))" }
            }
            progressDetail = losses.joined(separator: " ") + String(format: "  %.0f tok/s", (window.sum("tokens") ?? 0) / seconds)
            window = PretrainMetrics.empty()
            windowStart = DispatchTime.now().uptimeNanoseconds
            windowCommunication = 0
            windowSteps = 0
        }
        progress.advance(detail: progressDetail)
        if evalEvery > 0 && step % evalEvery == 0 && step < steps {
            try quickEvaluation(step: step, tasks: tasks, validation: validation, settings: evalSettings, session: session)
        }
        try session.stopIfRequested { PretrainMetrics.section(window) }
        if checkpointEvery > 0 && step % checkpointEvery == 0 { try session.save(extra: PretrainMetrics.section(window)) }
    }
    try quickEvaluation(step: session.step, tasks: tasks, validation: validation, settings: evalSettings, session: session)
    try session.finish()
    console.print("pretrain: finished \(session.step) steps; checkpoints in \(job.stageDirectory(StageName.pretrain.rawValue).path)")
}

/// Pretraining's metric sums. Every name is registered up front, in the order the checkpoint
/// section stores them (a window that saw no probes yet still has their slot).
enum PretrainMetrics {
    static let names = PretrainLoss.allCases.map(\.metric) + ["tokens", "flops", "grad_norm"]
    static let sectionName = "metrics_window"

    static func empty() -> MetricSums {
        var sums = MetricSums()
        for name in names { sums.add(name, 0, count: 0) }
        return sums
    }

    /// The window as a checkpoint section: sums then counts, float64, in `names` order.
    static func section(_ window: MetricSums) -> [String: [UInt8]] {
        [sectionName: (window.sums + window.counts).withUnsafeBytes { Array($0) }]
    }

    /// The window saved in the checkpoint a run resumes from, else an empty one.
    static func resumed(from sections: [String: [UInt8]]) throws -> MetricSums {
        var window = empty()
        guard let bytes = sections[sectionName] else { return window }
        guard bytes.count == 16 * names.count else {
            throw AllRanksError("checkpoint section \(sectionName) is \(bytes.count) bytes, expected \(16 * names.count)")
        }
        let values = bytes.withUnsafeBytes { raw in (0..<2 * names.count).map { raw.loadUnaligned(fromByteOffset: 8 * $0, as: Double.self) } }
        for (i, name) in names.enumerated() { window.add(name, values[i], count: values[names.count + i]) }
        return window
    }
}

/// Sequences must fit the model: the longest is an understanding sequence with a full caption.
func checkModelFitsWorld(_ modelConfig: ModelConfig, job: JobContext) throws {
    if let problem = sequenceFitProblem(maxSeq: modelConfig.maxSeq, canvas: job.config.int("data.canvas"), patch: job.config.int("data.patch")) {
        throw AllRanksError(problem)
    }
    do { try modelConfig.validate() } catch { throw AllRanksError("\(error)") }
}
