import ClusterRuntime
import Foundation
import Model
import World

/// `suder caption`: captions of the user's images with SUDER's dual self-reward, and yes/no probes.
public struct CaptionOptions {
    public var checkpoint: URL
    public var data: URL?
    public var images: [URL]
    /// Captions per image; more than one needs a temperature above 0.
    public var count: Int
    /// 0 = greedy, as the eval stage captions.
    public var temperature: Double
    public var seed: Int?
    /// A yes/no probe, e.g. "is there a red circle ?".
    public var ask: String?

    public init(checkpoint: URL, data: URL?, images: [URL], count: Int, temperature: Double, seed: Int?, ask: String?) {
        self.checkpoint = checkpoint; self.data = data; self.images = images; self.count = count
        self.temperature = temperature; self.seed = seed; self.ask = ask
    }
}

public func runCaptionCommand(_ options: CaptionOptions) -> Never {
    runWithTrainedModel(checkpoint: options.checkpoint, data: options.data) { opened in
        opened.job.console.print(try caption(options, opened).map(\.text).joined(separator: "\n"))
    }
}

/// What `caption` found for one image.
struct ImageCaptions {
    let file: URL
    /// (caption, mean log p(image tokens | caption)), in sampling order.
    var captions: [(text: String, selfReward: Double)]
    var probe: (question: String, yes: Double, no: Double)?

    var text: String {
        var lines = [file.path]
        for (text, reward) in captions {
            lines.append(String(format: "  caption: %@    self-reward %.4f (mean log p(image | caption) per image token)", "\"\(text)\"", reward))
        }
        if let probe {
            // The two answers' probabilities renormalised over {yes, no}, then the raw ones.
            let pYes = exp(probe.yes), pNo = exp(probe.no)
            lines.append(
                String(
                    format: "  ask \"%@\": %@ (yes %.4f, no %.4f; p(yes) %.4g, p(no) %.4g among all words)",
                    probe.question, probe.yes > probe.no ? "yes" : "no", pYes / (pYes + pNo), pNo / (pYes + pNo), pYes, pNo))
        }
        return lines.joined(separator: "\n")
    }
}

func caption(_ options: CaptionOptions, _ opened: TrainedModel) throws -> [ImageCaptions] {
    let tasks = opened.tasks
    guard !options.images.isEmpty else { throw AllRanksError("give at least one PNG image") }
    guard options.count >= 1 else { throw AllRanksError("--n must be at least 1; received \(options.count)") }
    guard options.count == 1 || options.temperature > 0 else {
        throw AllRanksError("--n \(options.count) with --temperature 0 would repeat one greedy caption; give --temperature above 0")
    }
    let question = try options.ask.map { try encodeUserText($0, what: "--ask", vocabulary: tasks.vocabulary) }
    let encoder = VQEncoder(codebook: tasks.oracle.codebook)
    // Rank 0 reads and checks the files; every rank gets their pixels.
    let size = opened.canvasSize, imageBytes = 3 * size * size
    let pixels = try opened.job.comm.rootDecides { try options.images.flatMap { try readUserImage($0, canvasSize: size).pixels } }
    let images = options.images.indices.map { i in
        let image = RGBImage(width: size, height: size, pixels: Array(pixels[(i * imageBytes)..<((i + 1) * imageBytes)]))
        return tasks.vocabulary.imageTokens(codes: encoder.encode(image))
    }

    let seed = UInt64(options.seed ?? opened.job.config.int("run.seed"))
    let repeated = images.flatMap { image in Array(repeating: image, count: options.count) }
    let seeds = images.indices.flatMap { i in (0..<options.count).map { streamSeed(seed, StreamPurpose.evalCaption, UInt64(i), UInt64($0)) } }
    let drawn = tasks.sampleCaptions(images: repeated, seeds: seeds, temperature: Float(options.temperature), topK: 0)
    // SUDER's understanding-direction reward, computed as the SUDER stage does.
    let rewards = tasks.imageGivenText(images: repeated, texts: drawn.map(tasks.captionText)).map(\.mean)
    let answers = try question.map { q in try tasks.probeAnswerLogProbabilities(images: images, questions: images.map { _ in q }) }

    return options.images.enumerated().map { i, file in
        var result = ImageCaptions(file: file, captions: [])
        for n in (i * options.count)..<((i + 1) * options.count) {
            // `describe` shows a stray special token (an untrained model may draw one) instead of failing on it.
            result.captions.append((tasks.vocabulary.describe(tasks.captionText(drawn[n])), rewards[n]))
        }
        if let answers, let ask = options.ask { result.probe = (ask, answers[i].yes, answers[i].no) }
        return result
    }
}

/// A user's image, checked before any model work: a regular file holding a PNG of the world's size.
func readUserImage(_ url: URL, canvasSize: Int) throws -> RGBImage {
    let expected = "a \(canvasSize)x\(canvasSize) PNG image"
    var status = stat()
    guard stat(url.path, &status) == 0 else {
        throw AllRanksError("\(url.path): cannot read (\(String(cString: strerror(errno)))); expected \(expected)")
    }
    switch status.st_mode & S_IFMT {
    case S_IFREG: break
    case S_IFDIR: throw AllRanksError("\(url.path) is a directory; expected \(expected)")
    default: throw AllRanksError("\(url.path) is not a regular file (a FIFO, socket or device); expected \(expected)")
    }
    let image: RGBImage
    do { image = try readPNG(url) } catch { throw AllRanksError("\(url.path) is not a readable PNG (\(error)); expected \(expected)") }
    guard image.width == canvasSize, image.height == canvasSize else {
        throw AllRanksError("\(url.path) is \(image.width)x\(image.height) pixels; expected \(expected), the size this model was trained on")
    }
    return image
}
