/// Imperfect renders for understanding pretraining. A captioner trained only on clean renders
/// names a broken shape after the patch codes it is made of, so the generation self-reward
/// log p(prompt | image) cannot tell a generator's broken cross from a clean one. These examples
/// show it such images: a clean scene's codes with some patches replaced the way a generator
/// gets them wrong. The label comes from the scene and the damage record, never from the
/// detector or the scorer: an object with at least `brokenShare` of its patches damaged (on it or
/// beside it) is broken and no longer counted, and the image is described by a training prompt
/// the intact objects satisfy, or by "a photo of nothing" when none is intact.
public struct ImperfectRenderMaker: Sendable {
    public static let nothingPrompt = "a photo of nothing"
    /// Share of an image's object patches that are replaced, drawn per image (half that share of
    /// the background patches beside objects). Most of a half-trained generator's images are
    /// nearly clean, with one or two wrong patches per object.
    public static let damageRange = 0.02...0.2

    /// Codes a swapped-in "any code" patch is drawn from.
    public let codeCount: Int
    public let backgroundCode: Int32
    /// An object is intact while at least this share of it survives as drawn (`survivingShare`);
    /// below it the object is broken and no longer counted or described.
    public static let intactShare = 0.8

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

    /// The objects of `scene` that survive the damage in `damaged` (the damaged codes, decoded):
    /// those whose `survivingShare` is at least `intactShare`.
    public func intactObjects(scene: Scene, damaged: RGBImage, patchSize: Int) -> [SceneObject] {
        scene.objects.filter { survivingShare(of: $0, in: damaged, margin: patchSize) >= Self.intactShare }
    }

    /// How a prompt for an imperfect render was chosen.
    public enum PromptSource: Sendable { case original, other, nothing }

    /// `original`'s prompt if the intact objects still satisfy it; else a training prompt of a
    /// random category that they satisfy; else `nothingPrompt` (no intact object: any intact
    /// object satisfies its single_object prompt).
    public func prompt(
        intact: [SceneObject], original: MetadataRecord,
        using random: inout SplitMix64RNG
    ) -> (text: String, source: PromptSource) {
        if sceneSatisfies(original, objects: intact) { return (original.prompt, .original) }
        for category in Category.allCases.shuffled(using: &random) {
            let satisfied = (trainingPrompts[category] ?? []).filter { sceneSatisfies($0, objects: intact) }
            if let record = satisfied.randomElement(using: &random) { return (record.prompt, .other) }
        }
        return (Self.nothingPrompt, .nothing)
    }
}

/// Whether true objects satisfy `record` by GenEval's rules read on the scene itself: each include
/// clause finds at least `count` objects of its class, all of its colour when it names one (with
/// exact labels no "most confident" instance can be picked); every (object, target) pair of a
/// position clause holds the relation on the true boxes; no exclude clause finds `count` objects.
public func sceneSatisfies(_ record: MetadataRecord, objects: [SceneObject]) -> Bool {
    func ofShape(_ shape: ShapeClass) -> [SceneObject] { objects.filter { $0.shape == shape } }
    for requirement in record.include {
        let found = ofShape(requirement.shape)
        guard found.count >= requirement.count else { return false }
        if let color = requirement.color, !found.allSatisfy({ $0.color == color }) { return false }
        if let position = requirement.position {
            let targets = ofShape(record.include[position.target].shape)
            for object in found {
                for target in targets where !genEvalRelations(of: object.box, relativeTo: target.box).contains(position.relation) {
                    return false
                }
            }
        }
    }
    return record.exclude.allSatisfy { ofShape($0.shape).count < $0.count }
}

/// How much of `object` survives as drawn in `image`: the intersection over union, inside its box
/// grown by `margin` pixels, of its drawn mask with the pixels whose colour is nearer to the
/// object's palette colour than to the background and every other palette colour. 1 on the clean
/// render; an erased patch lowers it, and so does a stray patch of its colour beside it.
public func survivingShare(of object: SceneObject, in image: RGBImage, margin: Int) -> Double {
    let palette = [backgroundRGB] + ObjectColor.allCases.map(\.rgb)
    let own = 1 + ObjectColor.allCases.firstIndex(of: object.color)!
    func nearest(_ offset: Int) -> Int {
        let r = Int(image.pixels[offset]), g = Int(image.pixels[offset + 1]), b = Int(image.pixels[offset + 2])
        var best = 0, bestDistance = Int.max
        for (index, colour) in palette.enumerated() {
            let dr = r - Int(colour.r), dg = g - Int(colour.g), db = b - Int(colour.b)
            let distance = dr * dr + dg * dg + db * db
            if distance < bestDistance { best = index; bestDistance = distance }
        }
        return best
    }
    var intersection = 0, union = 0
    for y in max(0, object.y - margin)..<min(image.height, object.y + object.size + margin) {
        for x in max(0, object.x - margin)..<min(image.width, object.x + object.size + margin) {
            let column = x - object.x, row = y - object.y
            let drawn =
                column >= 0 && row >= 0 && column < object.size && row < object.size
                && shapeContains(object.shape, column: column, row: row, width: object.size, height: object.size)
            let seen = nearest(3 * (y * image.width + x)) == own
            if drawn && seen { intersection += 1 }
            if drawn || seen { union += 1 }
        }
    }
    return union == 0 ? 0 : Double(intersection) / Double(union)
}
