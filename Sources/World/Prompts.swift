/// GenEval's six prompt templates over the world's classes and colours, the full prompt space of
/// each category, and the seeded split of that space into training and held-out (eval) prompts.

let numberWords = [2: "two", 3: "three", 4: "four"]

/// Counts the counting category asks for (GenEval uses 2-4).
public let countingRange = 2...4

public extension MetadataRecord {
    static func singleObject(_ shape: ShapeClass) -> MetadataRecord {
        MetadataRecord(
            tag: .singleObject, include: [ObjectRequirement(shape: shape, count: 1)],
            prompt: "a photo of a \(shape.rawValue)")
    }

    static func twoObject(_ first: ShapeClass, _ second: ShapeClass) -> MetadataRecord {
        MetadataRecord(
            tag: .twoObject,
            include: [ObjectRequirement(shape: first, count: 1), ObjectRequirement(shape: second, count: 1)],
            prompt: "a photo of a \(first.rawValue) and a \(second.rawValue)")
    }

    static func counting(_ shape: ShapeClass, _ count: Int) -> MetadataRecord {
        MetadataRecord(
            tag: .counting, include: [ObjectRequirement(shape: shape, count: count)],
            exclude: [ObjectRequirement(shape: shape, count: count + 1)],
            prompt: "a photo of \(numberWords[count]!) \(shape.plural)")
    }

    static func colors(_ color: ObjectColor, _ shape: ShapeClass) -> MetadataRecord {
        MetadataRecord(
            tag: .colors, include: [ObjectRequirement(shape: shape, count: 1, color: color)],
            prompt: "a photo of \(color.article) \(color.rawValue) \(shape.rawValue)")
    }

    /// "a photo of a `subject` `relation` a `target`": GenEval lists the target first and points
    /// the subject's position clause at it.
    static func position(_ subject: ShapeClass, _ relation: Relation, _ target: ShapeClass) -> MetadataRecord {
        MetadataRecord(
            tag: .position,
            include: [
                ObjectRequirement(shape: target, count: 1),
                ObjectRequirement(shape: subject, count: 1, position: (relation, 0)),
            ],
            prompt: "a photo of a \(subject.rawValue) \(relation.rawValue) a \(target.rawValue)")
    }

    static func colorAttr(_ firstColor: ObjectColor, _ first: ShapeClass, _ secondColor: ObjectColor, _ second: ShapeClass) -> MetadataRecord {
        MetadataRecord(
            tag: .colorAttr,
            include: [
                ObjectRequirement(shape: first, count: 1, color: firstColor),
                ObjectRequirement(shape: second, count: 1, color: secondColor),
            ],
            prompt:
                "a photo of \(firstColor.article) \(firstColor.rawValue) \(first.rawValue) and \(secondColor.article) \(secondColor.rawValue) \(second.rawValue)"
        )
    }
}

/// Every distinct prompt of a category (two_object, position and color_attr use two different
/// classes, color_attr two different colours, as GenEval's prompts do).
public func promptSpace(_ category: Category) -> [MetadataRecord] {
    let shapes = ShapeClass.allCases, colors = ObjectColor.allCases
    switch category {
    case .singleObject:
        return shapes.map { .singleObject($0) }
    case .twoObject:
        return shapes.flatMap { a in shapes.filter { $0 != a }.map { b in .twoObject(a, b) } }
    case .counting:
        return shapes.flatMap { shape in countingRange.map { .counting(shape, $0) } }
    case .colors:
        return colors.flatMap { color in shapes.map { .colors(color, $0) } }
    case .position:
        return shapes.flatMap { a in shapes.filter { $0 != a }.flatMap { b in Relation.allCases.map { .position(a, $0, b) } } }
    case .colorAttr:
        return shapes.flatMap { a in
            shapes.filter { $0 != a }.flatMap { b in
                colors.flatMap { ca in colors.filter { $0 != ca }.map { cb in .colorAttr(ca, a, cb, b) } }
            }
        }
    }
}

/// The training and held-out prompts of one category.
public struct PromptSplit: Sendable {
    public var training: [MetadataRecord]
    public var heldOut: [MetadataRecord]
}

/// How many prompts of a category are held out for evaluation: a quarter of the space (capped at
/// `cap`), except single_object, whose four prompts are the class names and cannot be withheld
/// without withholding a class; its eval prompts are training prompts on new images.
public func heldOutCount(_ category: Category, cap: Int) -> Int {
    category == .singleObject ? 0 : min(cap, promptSpace(category).count / 4)
}

/// Splits a category's prompts with `generator`, retrying until every word of the category's
/// prompts still appears in a training prompt (so eval tests composition, not unseen words).
public func splitPrompts(_ category: Category, heldOutCap: Int, generator: inout SplitMix64RNG) -> PromptSplit {
    let space = promptSpace(category)
    let count = heldOutCount(category, cap: heldOutCap)
    if count == 0 { return PromptSplit(training: space, heldOut: space) }
    let allWords = Set(space.flatMap { $0.prompt.split(separator: " ") })
    for _ in 0..<10_000 {
        let order = Array(space.indices).shuffled(using: &generator)
        let heldOutIndices = Set(order.prefix(count))
        let training = space.indices.filter { !heldOutIndices.contains($0) }.map { space[$0] }
        if Set(training.flatMap { $0.prompt.split(separator: " ") }) == allWords {
            return PromptSplit(training: training, heldOut: order.prefix(count).sorted().map { space[$0] })
        }
    }
    preconditionFailure("splitPrompts: no split of \(category.rawValue) keeps every word in training")
}
