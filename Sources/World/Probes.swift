/// POPE-style object-existence probes ("is there a red circle ?" -> yes/no) and their metrics.

/// POPE's three ways of choosing absent objects for "no" questions.
public enum PopeSplit: String, CaseIterable, Codable, Sendable {
    /// Any absent colour-class pair.
    case random
    /// The absent pairs seen most often in the training scenes.
    case popular
    /// Absent pairs that share a colour or a class with an object in the image (attribute swaps).
    case adversarial
}

public struct Probe: Equatable, Codable, Sendable {
    public var color: ObjectColor
    public var shape: ShapeClass
    /// The ground truth: whether the image shows this colour-class pair.
    public var answer: Bool

    public init(color: ObjectColor, shape: ShapeClass, answer: Bool) {
        self.color = color; self.shape = shape; self.answer = answer
    }

    public var question: String { "is there \(itemText(color, shape)) ?" }
}

/// A (colour, shape) combination.
public struct ObjectKind: Hashable, Comparable, Sendable {
    public var color: ObjectColor
    public var shape: ShapeClass
    public init(color: ObjectColor, shape: ShapeClass) { self.color = color; self.shape = shape }
    public static let all = ObjectColor.allCases.flatMap { color in ShapeClass.allCases.map { ObjectKind(color: color, shape: $0) } }
    var index: Int { ObjectKind.all.firstIndex(of: self)! }
    public var text: String { "\(color.rawValue) \(shape.rawValue)" }
    public static func < (a: ObjectKind, b: ObjectKind) -> Bool { a.index < b.index }
}

/// Builds the probes of one image: `yesCount` questions about objects present (repeating when the
/// image has fewer kinds) and as many "no" questions chosen by `split` among `askable` (the
/// combinations the data split may mention). `popularity` ranks kinds by how often training
/// scenes contain them (most popular first).
public func makeProbes(
    scene: Scene, split: PopeSplit, yesCount: Int, popularity: [ObjectColor: [ShapeClass: Int]],
    askable: Set<ObjectKind> = Set(ObjectKind.all), generator: inout SplitMix64RNG
) -> [Probe] {
    let present = Set(scene.objects.map { ObjectKind(color: $0.color, shape: $0.shape) })
    let presentList = present.sorted().shuffled(using: &generator)
    let absent = ObjectKind.all.filter { !present.contains($0) && askable.contains($0) }
    var probes: [Probe] = []
    for i in 0..<yesCount {
        let kind = presentList[i % presentList.count]
        probes.append(Probe(color: kind.color, shape: kind.shape, answer: true))
    }
    var candidates: [ObjectKind]
    switch split {
    case .random:
        candidates = absent.shuffled(using: &generator)
    case .popular:
        // Ties (the generator draws kinds uniformly) are broken at random.
        candidates = absent.shuffled(using: &generator)
        candidates.sort { popularity[$0.color]?[$0.shape] ?? 0 > popularity[$1.color]?[$1.shape] ?? 0 }
    case .adversarial:
        let swaps = absent.filter { kind in present.contains { $0.color == kind.color || $0.shape == kind.shape } }
        candidates = swaps.shuffled(using: &generator) + absent.filter { !swaps.contains($0) }.shuffled(using: &generator)
    }
    for i in 0..<yesCount {
        let kind = candidates[i % candidates.count]
        probes.append(Probe(color: kind.color, shape: kind.shape, answer: false))
    }
    return probes
}

/// POPE's report: accuracy, precision, recall and F1 of "yes", and the share of "yes" answers.
public struct PopeMetrics: Equatable, Sendable {
    public var count: Int
    public var accuracy: Double
    public var precision: Double
    public var recall: Double
    public var f1: Double
    public var yesRatio: Double

    /// `truth[i]` is the probe's answer, `predicted[i]` the model's.
    public init(truth: [Bool], predicted: [Bool]) {
        precondition(truth.count == predicted.count, "PopeMetrics: \(truth.count) answers, \(predicted.count) predictions")
        var tp = 0, fp = 0, tn = 0, fn = 0
        for (t, p) in zip(truth, predicted) {
            switch (t, p) {
            case (true, true): tp += 1
            case (false, true): fp += 1
            case (false, false): tn += 1
            case (true, false): fn += 1
            }
        }
        count = truth.count
        let total = Double(max(count, 1))
        accuracy = Double(tp + tn) / total
        precision = tp + fp == 0 ? 0 : Double(tp) / Double(tp + fp)
        recall = tp + fn == 0 ? 0 : Double(tp) / Double(tp + fn)
        f1 = precision + recall == 0 ? 0 : 2 * precision * recall / (precision + recall)
        yesRatio = Double(tp + fp) / total
    }
}
