/// Imperfect renders for understanding pretraining. A captioner trained only on clean renders
/// names a broken shape after the patch codes it is made of, so the generation self-reward
/// log p(prompt | image) cannot tell a generator's broken cross from a clean one. These examples
/// show it such images: a clean scene's codes with some patches replaced the way a generator
/// gets them wrong, described by a training prompt the decoded image satisfies by GenEval's
/// rules (the exact detector reads it), or by "a photo of nothing" when the detector finds
/// nothing GenEval would count.
public struct ImperfectRenderMaker: Sendable {
    public static let nothingPrompt = "a photo of nothing"
    /// Share of an image's object patches that are replaced, drawn per image (half that share of
    /// the background patches beside objects). Most of a half-trained generator's images are
    /// nearly clean, with one or two wrong patches per object.
    public static let damageRange = 0.02...0.2

    /// Codes a swapped-in "any code" patch is drawn from.
    public let codeCount: Int
    public let backgroundCode: Int32
    /// Training prompts per category; held-out prompts never describe an imperfect render.
    public let trainingPrompts: [Category: [MetadataRecord]]

    public init(codeCount: Int, backgroundCode: Int32, trainingPrompts: [Category: [MetadataRecord]]) {
        self.codeCount = codeCount; self.backgroundCode = backgroundCode; self.trainingPrompts = trainingPrompts
    }

    /// `codes` with patches on or 4-adjacent to an object replaced: an object patch is erased
    /// (40%), swapped for another patch of the same image (a wrong outline, 50%) or for any code
    /// (another colour, 10%); a background patch beside an object gains a stray patch of the
    /// image (90%) or any code (10%).
    public func damage(_ codes: [Int32], using random: inout SplitMix64RNG) -> [Int32] {
        let side = Int(Double(codes.count).squareRoot())
        let objectCodes = codes.filter { $0 != backgroundCode }
        guard side * side == codes.count, !objectCodes.isEmpty else { return codes }
        let rate = Double.random(in: Self.damageRange, using: &random)
        func isObject(_ x: Int, _ y: Int) -> Bool { x >= 0 && y >= 0 && x < side && y < side && codes[y * side + x] != backgroundCode }
        var damaged = codes
        for index in codes.indices {
            let x = index % side, y = index / side
            let onObject = isObject(x, y)
            guard onObject || isObject(x - 1, y) || isObject(x + 1, y) || isObject(x, y - 1) || isObject(x, y + 1),
                Double.random(in: 0..<1, using: &random) < (onObject ? rate : rate / 2)
            else { continue }
            let u = Double.random(in: 0..<1, using: &random)
            if onObject && u < 0.4 {
                damaged[index] = backgroundCode
            } else if u < 0.9 {
                damaged[index] = objectCodes.randomElement(using: &random)!
            } else {
                damaged[index] = Int32.random(in: 0..<Int32(codeCount), using: &random)
            }
        }
        return damaged
    }

    /// How a prompt for an imperfect render was chosen.
    public enum PromptSource: Sendable { case original, other, nothing }

    /// `original`'s prompt if the detections still satisfy it; else a training prompt of a random
    /// category that they satisfy; else `nothingPrompt` (no detection GenEval counts, since any
    /// counted object satisfies its single_object prompt).
    public func prompt(
        for detections: [DetectedObject], original: MetadataRecord,
        using random: inout SplitMix64RNG
    ) -> (text: String, source: PromptSource) {
        if evaluateGenEval(allDetections: detections, record: original).correct { return (original.prompt, .original) }
        for category in Category.allCases.shuffled(using: &random) {
            let satisfied = (trainingPrompts[category] ?? []).filter { evaluateGenEval(allDetections: detections, record: $0).correct }
            if let record = satisfied.randomElement(using: &random) { return (record.prompt, .other) }
        }
        return (Self.nothingPrompt, .nothing)
    }
}
