import Foundation
import GenEvalMini
import Model
import World

/// Sampling settings for drawing images from the model.
struct ImageSampling {
    var temperature: Float
    var topK: Int
    var guidanceWeight: Float
}

/// Model-facing helpers shared by the stages: drawing images and captions, scoring spans.
/// Everything is deterministic given the seeds passed in.
final class ModelWorkbench {
    let model: Transformer
    let sampler: Sampler
    let vocabulary: Vocabulary
    let oracle: Oracle
    let imageTokenCount: Int
    /// Sequences per sampler call: bounds the KV cache's memory.
    let samplingChunk = 64

    init(model: Transformer, dataset: DatasetReader) throws {
        self.model = model
        sampler = Sampler(model: model)
        vocabulary = dataset.vocabulary
        let codebook = try dataset.codebook()
        oracle = Oracle(vocabulary: vocabulary, codebook: codebook)
        let side = codebook.gridSide(canvasSize: try datasetCanvasSize(dataset))
        imageTokenCount = side * side
    }

    /// Image tokens for each (prompt, seed), with classifier-free guidance against the null prompt.
    func sampleImages(prompts: [[Int32]], seeds: [UInt64], settings: ImageSampling) -> [[Int32]] {
        var images: [[Int32]] = []
        images.reserveCapacity(prompts.count)
        for start in stride(from: 0, to: prompts.count, by: samplingChunk) {
            let end = min(start + samplingChunk, prompts.count)
            let prefixes = prompts[start..<end].map { vocabulary.generationPrefix(prompt: $0) }
            let guidance =
                settings.guidanceWeight > 0
                ? Guidance(weight: settings.guidanceWeight, nullPrompts: prompts[start..<end].map { vocabulary.nullGenerationPrefix(promptLength: $0.count) })
                : nil
            images += sampler.sample(
                prompts: prefixes, maxNewTokens: imageTokenCount, allowedRange: vocabulary.imageRange,
                temperature: settings.temperature, topK: settings.topK, guidance: guidance,
                seeds: Array(seeds[start..<end]))
        }
        return images
    }

    /// Caption tokens (text, ending in EOS unless cut at the length limit) for each (image, seed).
    /// Temperature 0 is greedy.
    func sampleCaptions(images: [[Int32]], seeds: [UInt64], temperature: Float, topK: Int) -> [[Int32]] {
        // EOS sits below the word ids; the range also admits BOI, EOI and the task markers, which
        // never follow a task marker in training text, so they keep ~zero probability.
        let textAndEOS = Vocabulary.eos..<vocabulary.textRange.upperBound
        var captions: [[Int32]] = []
        captions.reserveCapacity(images.count)
        for start in stride(from: 0, to: images.count, by: samplingChunk) {
            let end = min(start + samplingChunk, images.count)
            let prefixes = images[start..<end].map { vocabulary.understandingPrefix(image: $0, task: .caption) }
            captions += sampler.sample(
                prompts: prefixes, maxNewTokens: maxCaptionTokens + 1, allowedRange: textAndEOS,
                stopToken: Vocabulary.eos, temperature: temperature, topK: topK, seeds: Array(seeds[start..<end]))
        }
        return captions
    }

    /// Mean log p of the text (and its EOS) given the image, through the understanding format
    /// with `task`'s marker: SUDER's reward for an image sampled for a prompt (`.prompt`).
    func textGivenImage(texts: [[Int32]], images: [[Int32]], task: UnderstandingTask) -> [SpanScore] {
        let sequences = zip(images, texts).map { vocabulary.understandingSequence(image: $0, task: task, text: $1) }
        return model.score(TokenBatch(sequences: sequences.map(\.tokens), targetStarts: sequences.map(\.targetRange.lowerBound)))
    }

    /// Mean log p of the image tokens given the text, through the generation format: SUDER's
    /// reward for a caption sampled for that image. EOI is not part of the image.
    func imageGivenText(images: [[Int32]], texts: [[Int32]]) -> [SpanScore] {
        let sequences = zip(texts, images).map { vocabulary.generationSequence(prompt: $0, image: $1) }
        let batch = TokenBatch(sequences: sequences.map { Array($0.tokens.dropLast()) }, targetStarts: sequences.map(\.targetRange.lowerBound))
        return model.score(batch)
    }

    /// Text tokens of a caption without its EOS (and anything after it).
    func captionText(_ tokens: [Int32]) -> [Int32] {
        Array(tokens.prefix { $0 != Vocabulary.eos })
    }
}

private func datasetCanvasSize(_ dataset: DatasetReader) throws -> Int {
    // The eval images are square token grids; the canvas is grid side x patch size.
    let codebook = try dataset.codebook()
    guard let first = try dataset.evalImages().first else { return codebook.patchSize * 8 }
    return Int(Double(first.image.count).squareRoot()) * codebook.patchSize
}

/// GenEval-mini of a model: per record, `imagesPerPrompt` images sampled with seeds derived from
/// (seed, record, k), scored by the exact detector. Collective; ranks split the records.
struct GenEvalRun {
    var summary = GenEvalSummary()
    /// Correct images per record (0...imagesPerPrompt), in record order: for bootstrap intervals.
    var correctPerRecord: [Int] = []
    /// Image tokens per record and sample, kept on rank 0 when asked (for PNG folders).
    var images: [[[Int32]]] = []
}

func runGenEval(
    records: [MetadataRecord], workbench: ModelWorkbench, imagesPerPrompt: Int, settings: ImageSampling,
    seed: UInt64, comm: Communicator, keepImages: Bool = false, progress: Progress? = nil
) throws -> GenEvalRun? {
    let mine = shardIndices(count: records.count, rank: comm.rank, size: comm.size)
    var prompts: [[Int32]] = [], seeds: [UInt64] = []
    for i in mine {
        let prompt = try workbench.vocabulary.encode(records[i].prompt)
        for k in 0..<imagesPerPrompt {
            prompts.append(prompt)
            seeds.append(streamSeed(seed, StreamPurpose.evalImage, UInt64(i), UInt64(k)))
        }
    }
    // Sample in slices so progress moves; each slice is whole records.
    var images: [[Int32]] = []
    let slice = workbench.samplingChunk
    for start in stride(from: 0, to: prompts.count, by: slice) {
        let end = min(start + slice, prompts.count)
        images += workbench.sampleImages(prompts: Array(prompts[start..<end]), seeds: Array(seeds[start..<end]), settings: settings)
        progress?.advance(by: (end - start) * comm.size / imagesPerPrompt)
    }
    // Each rank scores its own images; rank 0 gathers (record, verdicts, tokens).
    var packed = ByteWriter()
    for (n, i) in mine.enumerated() {
        packed.u32(UInt32(i))
        for k in 0..<imagesPerPrompt {
            let tokens = images[n * imagesPerPrompt + k]
            let correct = (try? workbench.oracle.decodeImage(tokens: tokens)).map { evaluateGenEval(image: $0, record: records[i]).correct } ?? false
            packed.u8(correct ? 1 : 0)
            if keepImages { for t in tokens { packed.u32(UInt32(bitPattern: t)) } }
        }
    }
    guard let gathered = comm.gather(packed.bytes, root: 0) else { return nil }
    var run = GenEvalRun()
    run.correctPerRecord = Array(repeating: 0, count: records.count)
    run.images = keepImages ? Array(repeating: [], count: records.count) : []
    for bytes in gathered {
        var reader = ByteReader(bytes, file: "gathered GenEval results")
        while reader.remaining > 0 {
            let i = Int(try reader.u32("record"))
            for _ in 0..<imagesPerPrompt {
                let correct = try reader.u8("verdict") == 1
                run.summary.add(category: records[i].tag, correct: correct)
                run.correctPerRecord[i] += correct ? 1 : 0
                if keepImages {
                    run.images[i].append(try (0..<workbench.imageTokenCount).map { _ in Int32(bitPattern: try reader.u32("token")) })
                }
            }
        }
    }
    return run
}

/// Caption accuracy and POPE-mini on held-out images. Collective; rank 0 gets the numbers.
struct UnderstandingRun {
    var captionAccuracy: Double
    var captionCount: Int
    var pope: [PopeSplit: PopeMetrics]
}

func runUnderstandingEval(
    images: [EvalImage], probes: [PopeSplit: [ProbeExample]], workbench: ModelWorkbench,
    comm: Communicator
) throws -> UnderstandingRun? {
    var sums = MetricSums()
    let mine = shardIndices(count: images.count, rank: comm.rank, size: comm.size)
    // Greedy captions: the model's best description, no sampling noise in the metric.
    let captions = workbench.sampleCaptions(images: mine.map { images[$0].image }, seeds: mine.map { UInt64($0) }, temperature: 0, topK: 0)
    let correct = zip(mine, captions).filter { captionIsCorrect(tokens: $1, scene: images[$0].scene, vocabulary: workbench.vocabulary) }.count
    sums.add("caption_correct", Double(correct), count: Double(mine.count))

    var answers: [PopeSplit: [UInt8]] = [:]
    for split in PopeSplit.allCases {
        let list = probes[split] ?? []
        let mineProbes = shardIndices(count: list.count, rank: comm.rank, size: comm.size)
        let yes = try workbench.vocabulary.id(of: "yes"), no = try workbench.vocabulary.id(of: "no")
        let contexts = mineProbes.map { workbench.vocabulary.probePrefix(image: list[$0].image) + list[$0].question }
        let yesScores = workbench.model.score(contexts: contexts, targets: contexts.map { _ in [yes] })
        let noScores = workbench.model.score(contexts: contexts, targets: contexts.map { _ in [no] })
        var packed = ByteWriter()
        for (n, i) in mineProbes.enumerated() {
            packed.u32(UInt32(i))
            packed.u8(yesScores[n].sum > noScores[n].sum ? 1 : 0)
        }
        if let gathered = comm.gather(packed.bytes, root: 0) {
            var predicted = [UInt8](repeating: 0, count: list.count)
            for bytes in gathered {
                var reader = ByteReader(bytes, file: "gathered POPE answers")
                while reader.remaining > 0 {
                    let i = Int(try reader.u32("probe"))
                    predicted[i] = try reader.u8("answer")
                }
            }
            answers[split] = predicted
        }
    }
    sums.allreduce(comm)
    guard comm.isRoot else { return nil }
    var pope: [PopeSplit: PopeMetrics] = [:]
    for split in PopeSplit.allCases {
        let list = probes[split] ?? []
        pope[split] = PopeMetrics(truth: list.map(\.answer), predicted: (answers[split] ?? []).map { $0 == 1 })
    }
    return UnderstandingRun(captionAccuracy: sums.mean("caption_correct") ?? 0, captionCount: images.count, pope: pope)
}

/// Names of independent random streams (the first part after the run seed).
enum StreamPurpose {
    static let initialisation: UInt64 = 1
    static let pretrainData: UInt64 = 2
    static let evalImage: UInt64 = 3
    static let suderRoundItems: UInt64 = 4
    static let suderImage: UInt64 = 5
    static let suderCaption: UInt64 = 6
    static let evalCaption: UInt64 = 7
}
