/// Canonical captions (what the understanding direction learns to write) and the parser that
/// reads a caption back into objects and a relation, for caption correctness.
///
/// Grammar (words separated by spaces; `item` = `a|an <color> <shape>`):
///     caption  = "a photo of" ( item
///                             | item ("left of" | "right of" | "above" | "below" | "and") item
///                             | item ("," item)* "and" item
///                             | <two|three|four> <shapes> ":" <color> ("," <color>)* "and" <color> )
/// A scene of n >= 2 objects of one class is captioned by its count and colours left to right;
/// two objects of different classes by the leftmost, its GenEval relation to the other ("left
/// of", else "above"/"below", else "and"), and the other.

/// Sorting for captions: left to right, then top to bottom.
func readingOrder(_ a: SceneObject, _ b: SceneObject) -> Bool {
    (a.box.centerX, a.box.centerY) < (b.box.centerX, b.box.centerY)
}

func itemText(_ color: ObjectColor, _ shape: ShapeClass) -> String { "\(color.article) \(color.rawValue) \(shape.rawValue)" }

/// The relation a caption states for `a` then `b`, or nil when GenEval's rule finds none.
func captionRelation(_ a: Box, _ b: Box) -> Relation? {
    let relations = genEvalRelations(of: a, relativeTo: b)
    return [Relation.leftOf, .rightOf, .above, .below].first(where: relations.contains)
}

public func canonicalCaption(_ scene: Scene) -> String {
    let objects = scene.objects.sorted(by: readingOrder)
    precondition(!objects.isEmpty && objects.count <= 4, "canonicalCaption: scenes hold 1...4 objects")
    if objects.count == 1 { return "a photo of " + itemText(objects[0].color, objects[0].shape) }
    if Set(objects.map(\.shape)).count == 1 {
        let colors = objects.map(\.color.rawValue)
        return "a photo of \(numberWords[objects.count]!) \(objects[0].shape.plural) : "
            + colors.dropLast().joined(separator: " , ") + " and " + colors.last!
    }
    if objects.count == 2 {
        let relation = captionRelation(objects[0].box, objects[1].box)?.rawValue ?? "and"
        return "a photo of " + itemText(objects[0].color, objects[0].shape) + " \(relation) " + itemText(objects[1].color, objects[1].shape)
    }
    let items = objects.map { itemText($0.color, $0.shape) }
    return "a photo of " + items.dropLast().joined(separator: " , ") + " and " + items.last!
}

/// What a caption claims: objects (in caption order) and at most one relation of the first to
/// the second.
public struct CaptionClaim: Equatable, Sendable {
    public var objects: [(color: ObjectColor, shape: ShapeClass)]
    public var relation: Relation?

    public static func == (a: CaptionClaim, b: CaptionClaim) -> Bool {
        a.relation == b.relation && a.objects.map { "\($0.color) \($0.shape)" } == b.objects.map { "\($0.color) \($0.shape)" }
    }
}

/// Parses a caption in the grammar above; throws `WorldError.caption` saying where it fails.
public func parseCaption(_ text: String) throws -> CaptionClaim {
    var words = Vocabulary.splitWords(text)[...]
    func fail(_ reason: String) -> WorldError { .caption("\(reason) in '\(text)'") }
    func expect(_ word: String) throws {
        guard words.first == word else { throw fail("expected '\(word)'") }
        words.removeFirst()
    }
    func color() throws -> ObjectColor {
        guard let word = words.first, let color = ObjectColor(rawValue: word) else { throw fail("expected a colour") }
        words.removeFirst(); return color
    }
    func item() throws -> (color: ObjectColor, shape: ShapeClass) {
        guard words.first == "a" || words.first == "an" else { throw fail("expected 'a' or 'an'") }
        words.removeFirst()
        let itemColor = try color()
        guard let word = words.first, let shape = ShapeClass(rawValue: word) else { throw fail("expected a shape") }
        words.removeFirst()
        return (itemColor, shape)
    }
    try expect("a"); try expect("photo"); try expect("of")
    if let word = words.first, let count = numberWords.first(where: { $0.value == word })?.key {
        words.removeFirst()
        guard let plural = words.first, let shape = ShapeClass(plural: plural) else { throw fail("expected a plural shape") }
        words.removeFirst()
        try expect(":")
        var colors = [try color()]
        while words.first == "," { words.removeFirst(); colors.append(try color()) }
        try expect("and"); colors.append(try color())
        guard words.isEmpty else { throw fail("unexpected '\(words.first!)'") }
        guard colors.count == count else { throw fail("\(colors.count) colours for \(word) \(plural)") }
        return CaptionClaim(objects: colors.map { ($0, shape) }, relation: nil)
    }
    var objects = [try item()]
    if words.isEmpty { return CaptionClaim(objects: objects, relation: nil) }
    if words.first == "," {
        while words.first == "," { words.removeFirst(); objects.append(try item()) }
        try expect("and"); objects.append(try item())
    } else if words.first == "and" {
        words.removeFirst(); objects.append(try item())
    } else {
        let relation: Relation
        switch words.first! {
        case "left": words.removeFirst(); try expect("of"); relation = .leftOf
        case "right": words.removeFirst(); try expect("of"); relation = .rightOf
        case "above": words.removeFirst(); relation = .above
        case "below": words.removeFirst(); relation = .below
        default: throw fail("unexpected '\(words.first!)'")
        }
        objects.append(try item())
        guard words.isEmpty else { throw fail("unexpected '\(words.first!)'") }
        return CaptionClaim(objects: objects, relation: relation)
    }
    guard words.isEmpty else { throw fail("unexpected '\(words.first!)'") }
    return CaptionClaim(objects: objects, relation: nil)
}

/// Caption correctness: the caption parses, names exactly the scene's objects (as a multiset of
/// colour and class), any stated relation holds under GenEval's rule, and a two-object caption
/// of different classes states a relation whenever the scene has one.
public func captionIsCorrect(_ text: String, scene: Scene) -> Bool {
    guard let claim = try? parseCaption(text) else { return false }
    func key(_ color: ObjectColor, _ shape: ShapeClass) -> String { "\(color.rawValue) \(shape.rawValue)" }
    let claimed = claim.objects.map { key($0.color, $0.shape) }.sorted()
    let actual = scene.objects.map { key($0.color, $0.shape) }.sorted()
    guard claimed == actual else { return false }
    guard claim.objects.count == 2, claim.objects[0].shape != claim.objects[1].shape else { return claim.relation == nil }
    let first = scene.objects.first { $0.shape == claim.objects[0].shape }!
    let second = scene.objects.first { $0.shape == claim.objects[1].shape }!
    let relations = genEvalRelations(of: first.box, relativeTo: second.box)
    if let relation = claim.relation { return relations.contains(relation) }
    return relations.isEmpty
}

/// Caption correctness for a model's output tokens (text ids, optionally ending in EOS); any
/// non-text token before EOS makes the caption wrong.
public func captionIsCorrect(tokens: [Int32], scene: Scene, vocabulary: Vocabulary) -> Bool {
    guard let text = try? vocabulary.decodeUntilEOS(tokens) else { return false }
    return captionIsCorrect(text, scene: scene)
}

/// Share of correct captions: `captions[i]` (model output tokens) describes `scenes[i]`.
public func captionAccuracy(captions: [[Int32]], scenes: [Scene], vocabulary: Vocabulary) -> Double {
    precondition(captions.count == scenes.count, "captionAccuracy: \(captions.count) captions, \(scenes.count) scenes")
    guard !captions.isEmpty else { return 0 }
    let correct = zip(captions, scenes).filter { captionIsCorrect(tokens: $0, scene: $1, vocabulary: vocabulary) }.count
    return Double(correct) / Double(captions.count)
}
