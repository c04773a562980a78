import World

/// Oracle rewards for diagnosis (never used inside a SUDER run): the detector's GenEval verdict
/// for generated images and caption correctness for generated captions, both 1 or 0. They bound
/// what a perfect reward could do and measure how often the self-reward orders pairs the same way.
public struct Oracle {
    public let vocabulary: Vocabulary
    public let codebook: VQCodebook

    public init(vocabulary: Vocabulary, codebook: VQCodebook) {
        precondition(vocabulary.codebookSize == codebook.codeCount, "Oracle: vocabulary and codebook sizes differ")
        self.vocabulary = vocabulary; self.codebook = codebook
    }

    /// Decodes image tokens (vocabulary ids) to pixels; throws on a non-image token or a
    /// count that does not fill a square grid.
    public func decodeImage(tokens: [Int32]) throws -> RGBImage {
        let codes = try vocabulary.imageCodes(tokens: tokens)
        let side = Int(Double(codes.count).squareRoot())
        guard side > 0, side * side == codes.count else { throw WorldError.invalidTokens("\(codes.count) image tokens do not form a square grid") }
        return codebook.decode(codes: codes)
    }

    /// 1 when the decoded image satisfies the prompt's record under GenEval-mini, else 0.
    public func imageReward(imageTokens: [Int32], record: MetadataRecord) -> Float {
        imageVerdict(imageTokens: imageTokens, record: record)?.verdict.correct == true ? 1 : 0
    }

    /// Every object the detector finds in the decoded image and GenEval-mini's verdict on them;
    /// nil when the tokens are not an image.
    public func imageVerdict(imageTokens: [Int32], record: MetadataRecord) -> (detections: [DetectedObject], verdict: GenEvalVerdict)? {
        guard let image = try? decodeImage(tokens: imageTokens) else { return nil }
        let detections = detectObjects(in: image)
        return (detections, evaluateGenEval(allDetections: detections, record: record))
    }

    /// 1 when the caption (text tokens, optionally ending in EOS) is correct for the scene, else 0.
    public func captionReward(captionTokens: [Int32], scene: Scene) -> Float {
        captionIsCorrect(tokens: captionTokens, scene: scene, vocabulary: vocabulary) ? 1 : 0
    }
}
