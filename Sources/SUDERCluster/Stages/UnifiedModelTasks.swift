import ClusterRuntime
import Foundation
import GenEvalMini
import Model
import World

/// What the stages ask of the unified model: draw images for prompts and captions for images,
/// score text given an image and an image given text. Deterministic given the seeds passed in.
final class UnifiedModelTasks {
    let model: Transformer
    let sampler: Sampler
    let vocabulary: Vocabulary
    let oracle: Oracle
    let imageTokenCount: Int
    /// Sequences per sampler call; the sampler decodes them in groups of 8 or 16 prompts, side by
    /// side on the rank's threads, with a KV cache per group that runs at once.
    static let samplingChunk = 64

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
        for start in stride(from: 0, to: prompts.count, by: Self.samplingChunk) {
            let end = min(start + Self.samplingChunk, prompts.count)
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
        for start in stride(from: 0, to: images.count, by: Self.samplingChunk) {
            let end = min(start + Self.samplingChunk, images.count)
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
