import Foundation
import Model
import World

/// The kinds of supervised sequences pretraining mixes.
enum PretrainKind: Int, CaseIterable {
    case generationFromPrompt, generationFromCaption, captionFull, captionPromptStyle, promptImperfect, probe

    var direction: String {
        switch self {
        case .generationFromPrompt, .generationFromCaption: return "generation"
        case .captionFull, .captionPromptStyle, .promptImperfect: return "understanding"
        case .probe: return "probes"
        }
    }
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

    init(dataset: DatasetReader, config: ResolvedConfig) throws {
        vocabulary = dataset.vocabulary
        pairs = try dataset.trainPairs()
        captions = try dataset.trainCaptions()
        probes = try dataset.trainProbes()
        let imperfectShare = config.double("pretrain.imperfect_prompts")
        do {
            imperfect = imperfectShare > 0 ? try dataset.trainImperfect() : []
        } catch WorldError.missingFile(let path) {
            throw AgreedError(
                "missing file \(path): the dataset was written before imperfect renders; run the data stage again "
                    + "into a new run directory, or set pretrain.imperfect_prompts=0")
        }
        seed = UInt64(config.int("run.seed"))
        promptDropout = config.double("pretrain.prompt_dropout")
        let generation = config.double("pretrain.mix_generation"), understanding = config.double("pretrain.mix_understanding")
        let fromCaption = config.double("pretrain.caption_conditioned"), promptStyle = config.double("pretrain.prompt_style_captions")
        var weights = [
            generation * (1 - fromCaption), generation * fromCaption, understanding * (1 - promptStyle),
            understanding * promptStyle * (1 - imperfectShare), understanding * promptStyle * imperfectShare,
            config.double("pretrain.mix_probes"),
        ]
        // A kind without data gets no share.
        let available = [!pairs.isEmpty, !captions.isEmpty, !captions.isEmpty, !pairs.isEmpty, !imperfect.isEmpty, !probes.isEmpty]
        for i in weights.indices where !available[i] { weights[i] = 0 }
        let total = weights.reduce(0, +)
        guard total > 0 else { throw AgreedError("pretraining has no data: the dataset's training splits are empty or the mix gives them no share") }
        var running = 0.0
        cumulative = weights.map {
            running += $0 / total; return running
        }
    }

    /// Item `item` of global batch `step`: its kind and its token sequence with the target span.
    func example(step: Int, item: Int) throws -> (kind: PretrainKind, sequence: TokenSequence) {
        var rng = SeededRNG(seed: streamSeed(seed, StreamPurpose.pretrainData, UInt64(step), UInt64(item)))
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
    let config = job.config, comm = job.comm, console = job.console
    let dataset = try openDataset(job)
    let data = try PretrainData(dataset: dataset, config: config)
    let modelConfig = modelConfig(config, vocabulary: dataset.vocabulary)
    try checkModelFitsWorld(modelConfig, job: job)
    let microBatch = config.int("pretrain.micro_batch")
    let model = Transformer(
        config: modelConfig, seed: streamSeed(UInt64(config.int("run.seed")), StreamPurpose.initialisation),
        batchCapacity: microBatch)
    let optimizer = AdamW(
        parameterTable: model.parameterTable, parameterCount: model.parameterCount,
        weightDecay: Float(config.double("pretrain.weight_decay")))
    // Every rank initialises from the same seed; the session then broadcasts rank 0's parameters
    // and verifies them, so a rank with a different BLAS or build cannot drift silently.
    let session = try TrainingSession(job: job, stage: .pretrain, model: model, optimizer: optimizer) {}
    let workbench = try ModelWorkbench(model: model, dataset: dataset)
    let validation = try ValidationSet(dataset: dataset, config: config)

    let steps = config.int("pretrain.steps"), batchSize = config.int("pretrain.batch_size")
    let schedule = LearningRateSchedule(
        peak: Float(config.double("pretrain.lr")), warmupSteps: config.int("pretrain.warmup_steps"),
        totalSteps: steps, minRatio: Float(config.double("pretrain.min_lr_ratio")))
    let clip = Float(config.double("pretrain.grad_clip"))
    let logEvery = config.int("pretrain.log_every"), evalEvery = config.int("pretrain.eval_every")
    let checkpointEvery = config.int("pretrain.checkpoint_every")
    console.print(
        "pretrain: \(model.parameterCount) parameters, \(steps) steps of \(batchSize) sequences over \(comm.size) rank(s), "
            + "\(data.pairs.count) pairs, \(data.captions.count) captions, \(data.imperfect.count) imperfect renders, \(data.probes.count) probes")

    let progress = console.progress("pretrain", total: steps, unit: "steps")
    progress.advance(by: session.step)
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
                stepSums.add("loss/" + item.kind.direction, -sums[n] / Double(counts[n]))
                stepSums.add("tokens", Double(batch.lengths[n]))
            }
            stepSums.add("flops", FLOPs.trainingStep(modelConfig, batch: chunk.count, seqLen: batch.seqLen), count: 0)
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
            for direction in ["generation", "understanding", "probes"] {
                if let loss = window.mean("loss/" + direction) { record.set("loss/" + direction, loss) }
            }
            record.set("lr", Double(learningRate))
            record.set("grad_norm", window.mean("grad_norm") ?? 0)
            record.set("tokens_per_s", (window.sum("tokens") ?? 0) / seconds)
            record.set("gflops_per_s", (window.sum("flops") ?? 0) / seconds / 1e9)
            record.set("step_time_s", seconds / Double(windowSteps))
            record.set("communication_s", windowCommunication)
            record.set("peak_memory_mb", peakResidentMegabytes())
            session.metrics.append(record)
            let losses = ["generation", "understanding", "probes"].compactMap { d in
                window.mean("loss/" + d).map { "\(d.prefix(3)) \(String(format: "%.3f", $0))" }
            }
            progressDetail = losses.joined(separator: " ") + String(format: "  %.0f tok/s", (window.sum("tokens") ?? 0) / seconds)
            window = PretrainMetrics.empty()
            windowStart = DispatchTime.now().uptimeNanoseconds
            windowCommunication = 0
            windowSteps = 0
        }
        progress.advance(detail: progressDetail)
        if evalEvery > 0 && step % evalEvery == 0 && step < steps {
            try quickEvaluation(step: step, workbench: workbench, validation: validation, session: session)
        }
        try session.stopIfRequested { PretrainMetrics.section(window) }
        if checkpointEvery > 0 && step % checkpointEvery == 0 { try session.save(extra: PretrainMetrics.section(window)) }
    }
    try quickEvaluation(step: session.step, workbench: workbench, validation: validation, session: session)
    try session.finish()
    console.print("pretrain: finished \(session.step) steps; checkpoints in \(job.stageDirectory(StageName.pretrain.rawValue).path)")
}

/// Pretraining's metric sums. Every name is registered up front in one order: the allreduce pairs
/// (sum, count) entries by position, so ranks that met the kinds in different orders would mix them.
enum PretrainMetrics {
    static let names = ["loss/generation", "loss/understanding", "loss/probes", "tokens", "flops", "grad_norm"]
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
            throw AgreedError("checkpoint section \(sectionName) is \(bytes.count) bytes, expected \(16 * names.count)")
        }
        let values = bytes.withUnsafeBytes { raw in (0..<2 * names.count).map { raw.loadUnaligned(fromByteOffset: 8 * $0, as: Double.self) } }
        for (i, name) in names.enumerated() { window.add(name, values[i], count: values[names.count + i]) }
        return window
    }
}

extension MetricSums {
    /// Adds every (sum, count) of `other`, name by name.
    mutating func add(_ other: MetricSums) {
        for (i, name) in other.names.enumerated() { add(name, other.sums[i], count: other.counts[i]) }
    }
}

/// Sequences must fit the model: the longest is an understanding sequence with a full caption.
func checkModelFitsWorld(_ modelConfig: ModelConfig, job: JobContext) throws {
    let imageTokens = (job.config.int("data.canvas") / job.config.int("data.patch")) * (job.config.int("data.canvas") / job.config.int("data.patch"))
    let longest = 4 + imageTokens + maxCaptionTokens + 1
    guard modelConfig.maxSeq >= longest else {
        throw AgreedError(
            "model.max_seq (\(modelConfig.maxSeq)) is shorter than the longest sequence of this world (\(longest) tokens: "
                + "BOS BOI, \(imageTokens) image tokens, EOI, task marker, up to \(maxCaptionTokens) caption words, EOS)")
    }
    do { try modelConfig.validate() } catch { throw AgreedError("\(error)") }
}

/// Held-out data for the periodic checks during training: validation loss per direction, a
/// GenEval-mini subset, caption accuracy and POPE-mini.
struct ValidationSet {
    let images: [EvalImage]
    let records: [MetadataRecord]
    let probes: [PopeSplit: [ProbeExample]]

    init(dataset: DatasetReader, config: ResolvedConfig) throws {
        images = Array(try dataset.evalImages().prefix(config.int("pretrain.eval_images")))
        let all = try dataset.evalMetadata()
        let wanted = min(all.count, config.int("pretrain.eval_prompts"))
        // Evenly spread over the file, which lists the categories in turn.
        records = wanted == 0 ? [] : (0..<wanted).map { all[$0 * all.count / wanted] }
        var probes: [PopeSplit: [ProbeExample]] = [:]
        for split in PopeSplit.allCases { probes[split] = Array(try dataset.evalProbes(split).prefix(images.count)) }
        self.probes = probes
    }
}

/// Validation losses, a quick GenEval-mini and understanding scores, logged as `eval/...` at `step`.
func quickEvaluation(step: Int, workbench: ModelWorkbench, validation: ValidationSet, session: TrainingSession) throws {
    let job = session.job, comm = job.comm, config = job.config
    let started = DispatchTime.now().uptimeNanoseconds
    var sums = MetricSums()
    let mine = shardIndices(count: validation.images.count, rank: comm.rank, size: comm.size)
    let images = mine.map { validation.images[$0].image }
    let captions = try mine.map { try workbench.vocabulary.encode(canonicalCaption(validation.images[$0].scene)) }
    for score in workbench.textGivenImage(texts: captions, images: images, task: .caption) { sums.add("understanding", -score.mean) }
    for score in workbench.imageGivenText(images: images, texts: captions) { sums.add("generation", -score.mean) }
    sums.add("understanding", 0, count: 0)
    sums.add("generation", 0, count: 0)
    sums.allreduce(comm)

    let settings = ImageSampling(
        temperature: Float(config.double("eval.temperature")), topK: config.int("eval.top_k"),
        guidanceWeight: Float(config.double("eval.cfg_weight")))
    let genEval = try runGenEval(
        records: validation.records, workbench: workbench, imagesPerPrompt: config.int("eval.images_per_prompt"),
        settings: settings, seed: UInt64(config.int("run.seed")), comm: comm)
    let understanding = try runUnderstandingEval(images: validation.images, probes: validation.probes, workbench: workbench, comm: comm)
    guard comm.isRoot, let genEval, let understanding else { return }
    var record = MetricsRecord()
    record.set("step", step)
    record.set("eval/val_loss/generation", sums.mean("generation") ?? .nan)
    record.set("eval/val_loss/understanding", sums.mean("understanding") ?? .nan)
    record.set("eval/geneval_overall", genEval.summary.overall)
    for category in Category.allCases {
        if let score = genEval.summary.score(category) { record.set("eval/geneval/\(category.rawValue)", score) }
    }
    record.set("eval/caption_accuracy", understanding.captionAccuracy)
    for split in PopeSplit.allCases { record.set("eval/pope_f1/\(split.rawValue)", understanding.pope[split]?.f1 ?? .nan) }
    record.set("eval/seconds", elapsedSeconds(since: started))
    session.metrics.append(record)
    let line = String(
        format: "eval at step %d: val loss gen %.3f und %.3f, GenEval-mini (%d prompts) %.3f, captions %.3f, POPE F1 %.3f (%.0f s)",
        step, sums.mean("generation") ?? .nan, sums.mean("understanding") ?? .nan, validation.records.count,
        genEval.summary.overall, understanding.captionAccuracy, understanding.pope[.adversarial]?.f1 ?? .nan,
        elapsedSeconds(since: started))
    job.console.print(line)
}
