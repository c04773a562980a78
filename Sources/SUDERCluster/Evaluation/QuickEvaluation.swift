import ClusterRuntime
import Foundation
import Model
import World

/// Held-out data for the periodic checks during training: validation loss per direction, a
/// GenEval-mini subset, caption accuracy and POPE-mini.
struct ValidationSet {
    let images: [EvalImage]
    let records: [MetadataRecord]
    let probes: [PopeSplit: [ProbeExample]]

    init(dataset: DatasetReader, settings: EvalSettings) throws {
        images = Array(try dataset.evalImages().prefix(settings.quickImages))
        let all = try dataset.evalMetadata()
        let wanted = min(all.count, settings.quickPrompts)
        // Evenly spread over the file, which lists the categories in turn.
        records = wanted == 0 ? [] : (0..<wanted).map { all[$0 * all.count / wanted] }
        var probes: [PopeSplit: [ProbeExample]] = [:]
        for split in PopeSplit.allCases { probes[split] = Array(try dataset.evalProbes(split).prefix(images.count)) }
        self.probes = probes
    }
}

/// Validation losses, a quick GenEval-mini and understanding scores, logged as `eval/...` at `step`.
func quickEvaluation(
    step: Int, tasks: UnifiedModelTasks, validation: ValidationSet, settings: EvalSettings,
    session: TrainingSession
) throws {
    let job = session.job, comm = job.comm
    let started = DispatchTime.now().uptimeNanoseconds
    var sums = MetricSums()
    let mine = shardIndices(count: validation.images.count, rank: comm.rank, size: comm.size)
    let images = mine.map { validation.images[$0].image }
    let captions = try mine.map { try tasks.vocabulary.encode(canonicalCaption(validation.images[$0].scene)) }
    for score in tasks.textGivenImage(texts: captions, images: images, task: .caption) { sums.add("understanding", -score.mean) }
    for score in tasks.imageGivenText(images: images, texts: captions) { sums.add("generation", -score.mean) }
    sums.add("understanding", 0, count: 0)
    sums.add("generation", 0, count: 0)
    sums.allreduce(comm)

    let genEval = try runGenEval(
        records: validation.records, tasks: tasks, imagesPerPrompt: settings.imagesPerPrompt,
        settings: settings.imageSampling, seed: settings.seed, comm: comm)
    let understanding = try runUnderstandingEval(images: validation.images, probes: validation.probes, tasks: tasks, comm: comm)
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
