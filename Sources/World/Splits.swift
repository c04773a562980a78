/// The split of the prompt space into train, dev and test by equivalence class, and the (colour,
/// shape) combinations each eval split holds out. docs/DATA.md states the rule.

/// The three parts of the prompt space. Everything a training stage reads comes from `train`.
public enum DataSplit: String, CaseIterable, Codable, Sendable {
    case train, dev, test
}

/// The splits with an evaluation set: `dev` for every decision, `test` sealed for the final
/// evaluation of a frozen configuration.
public enum EvalSplit: String, CaseIterable, Codable, Sendable {
    case dev, test

    public var dataSplit: DataSplit { self == .dev ? .dev : .test }
}

/// A key shared by every prompt that states the same requirements: object order does not matter
/// ("a circle and a square" == "a square and a circle") and a relation equals its mirror ("a
/// circle left of a square" == "a square right of a circle").
public func equivalenceClass(of record: MetadataRecord) -> String {
    func item(_ requirement: ObjectRequirement) -> String {
        ([requirement.color?.rawValue, "\(requirement.count)", requirement.shape.rawValue] as [String?]).compactMap { $0 }.joined(separator: " ")
    }
    if let subjectIndex = record.include.firstIndex(where: { $0.position != nil }), let position = record.include[subjectIndex].position {
        let subject = item(record.include[subjectIndex]), target = item(record.include[position.target])
        switch position.relation {
        case .leftOf: return "\(record.tag.rawValue): \(subject) left of \(target)"
        case .rightOf: return "\(record.tag.rawValue): \(target) left of \(subject)"
        case .above: return "\(record.tag.rawValue): \(subject) above \(target)"
        case .below: return "\(record.tag.rawValue): \(target) above \(subject)"
        }
    }
    return "\(record.tag.rawValue): " + record.include.map(item).sorted().joined(separator: " & ")
}

/// The (colour, shape) combinations a record asks for by name.
public func namedCombinations(_ record: MetadataRecord) -> [ObjectKind] {
    record.include.compactMap { requirement in requirement.color.map { ObjectKind(color: $0, shape: requirement.shape) } }
}

/// The prompts of every split and category, and the combinations each eval split holds out.
public struct PromptSplits: Sendable {
    public var prompts: [DataSplit: [Category: [MetadataRecord]]]
    /// Per eval split one combination per shape, in distinct colours; dev's and test's colours
    /// are disjoint, so every colour keeps three shapes and every shape six colours in train.
    public var heldOutCombinations: [EvalSplit: [ObjectKind]]

    public func prompts(_ split: DataSplit, _ category: Category) -> [MetadataRecord] { prompts[split]?[category] ?? [] }

    public func allPrompts(_ split: DataSplit) -> [MetadataRecord] { Category.allCases.flatMap { prompts(split, $0) } }

    /// The combinations a scene, caption or probe of `split` may show or mention: train shows no
    /// held-out combination, dev and test none of the other eval split's.
    public func allowedCombinations(_ split: DataSplit) -> Set<ObjectKind> {
        let hidden: [ObjectKind]
        switch split {
        case .train: hidden = EvalSplit.allCases.flatMap { heldOutCombinations[$0] ?? [] }
        case .dev: hidden = heldOutCombinations[.test] ?? []
        case .test: hidden = heldOutCombinations[.dev] ?? []
        }
        return Set(ObjectKind.all).subtracting(hidden)
    }
}

/// Categories whose prompts cannot be held out: single_object's four prompts are the class names,
/// and withholding one would withhold a word. Dev and test show them on new scenes.
public let categoriesNotHeldOut: [Category] = [.singleObject]

/// Classes each eval split takes in two_object, counting and position: an eighth of the category's
/// classes, at least one.
func classesPerEvalSplit(_ classCount: Int) -> Int { max(1, (classCount + 7) / 8) }

/// Splits the prompt space with `generator`.
///
/// - colors and color_attr: a class goes to the eval split whose held-out combination it names;
///   a class naming combinations of both eval splits is in no split; the rest is train.
/// - two_object, counting, position: a seeded eighth of the classes each to dev and test, retried
///   until every word of the category still occurs in a train prompt.
/// - single_object: every prompt in every split (`categoriesNotHeldOut`).
public func splitPromptSpace(generator: inout SplitMix64RNG) -> PromptSplits {
    let shapes = ShapeClass.allCases, colors = ObjectColor.allCases.shuffled(using: &generator)
    precondition(colors.count >= 2 * shapes.count, "splitPromptSpace: needs two colours per shape to hold out combinations")
    var heldOut: [EvalSplit: [ObjectKind]] = [:]
    for (index, split) in EvalSplit.allCases.enumerated() {
        let splitColors = colors[(index * shapes.count)..<((index + 1) * shapes.count)]
        heldOut[split] = zip(splitColors, shapes.shuffled(using: &generator)).map { ObjectKind(color: $0, shape: $1) }.sorted()
    }
    var prompts: [DataSplit: [Category: [MetadataRecord]]] = [:]
    func assign(_ records: [MetadataRecord], to split: DataSplit, _ category: Category) {
        prompts[split, default: [:]][category, default: []] += records
    }
    for category in Category.allCases {
        let space = promptSpace(category)
        var classes: [String: [MetadataRecord]] = [:], classOrder: [String] = []
        for record in space {
            let key = equivalenceClass(of: record)
            if classes[key] == nil { classOrder.append(key) }
            classes[key, default: []].append(record)
        }
        switch category {
        case .singleObject:
            for split in DataSplit.allCases { assign(space, to: split, category) }
        case .colors, .colorAttr:
            for key in classOrder {
                let named = Set(namedCombinations(classes[key]![0]))
                let inDev = !named.isDisjoint(with: heldOut[.dev]!), inTest = !named.isDisjoint(with: heldOut[.test]!)
                if inDev && inTest { continue }
                assign(classes[key]!, to: inDev ? .dev : (inTest ? .test : .train), category)
            }
        case .twoObject, .counting, .position:
            let count = classesPerEvalSplit(classOrder.count)
            let allWords = Set(space.flatMap { Vocabulary.splitWords($0.prompt) })
            var found = false
            for _ in 0..<10_000 {
                let order = classOrder.shuffled(using: &generator)
                let train = order.dropFirst(2 * count).flatMap { classes[$0]! }
                guard Set(train.flatMap { Vocabulary.splitWords($0.prompt) }) == allWords else { continue }
                assign(order.prefix(count).flatMap { classes[$0]! }, to: .dev, category)
                assign(order.dropFirst(count).prefix(count).flatMap { classes[$0]! }, to: .test, category)
                assign(train, to: .train, category)
                found = true
                break
            }
            precondition(found, "splitPromptSpace: no split of \(category.rawValue) keeps every word in train")
        }
    }
    // Stable order within each split: the prompt space's.
    for split in DataSplit.allCases {
        for category in Category.allCases {
            let order = Dictionary(uniqueKeysWithValues: promptSpace(category).enumerated().map { ($1.prompt, $0) })
            prompts[split, default: [:]][category] = (prompts[split]?[category] ?? []).sorted { order[$0.prompt]! < order[$1.prompt]! }
        }
    }
    return PromptSplits(prompts: prompts, heldOutCombinations: heldOut)
}
