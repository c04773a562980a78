/// GenEval's six prompt templates over the world's classes and colours, the full prompt space of
/// each category (`Splits.swift` divides it into train, dev and test).

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
