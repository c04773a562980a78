import Foundation

/// GenEval's margin: an offset must exceed this fraction of the two objects' summed extents
/// before it counts as a relation.
public let genEvalPositionThreshold = 0.1

/// Relations of box `a` relative to box `b` under GenEval's rule (`relative_position` in its
/// evaluator): shrink the centre offset by `threshold * (dim_a + dim_b)` per axis, then a relation
/// holds when the shrunk offset's component along it exceeds half the raw offset's length.
/// Image y grows downwards, so "above" is a negative dy.
public func genEvalRelations(of a: Box, relativeTo b: Box, threshold: Double = genEvalPositionThreshold) -> Set<Relation> {
    let offsetX = a.centerX - b.centerX, offsetY = a.centerY - b.centerY
    func shrink(_ offset: Double, _ extent: Double) -> Double {
        let magnitude = max(abs(offset) - threshold * extent, 0)
        return offset < 0 ? -magnitude : (offset > 0 ? magnitude : 0)
    }
    let revisedX = shrink(offsetX, a.width + b.width)
    let revisedY = shrink(offsetY, a.height + b.height)
    if abs(revisedX) < 1e-3 && abs(revisedY) < 1e-3 { return [] }
    let norm = (offsetX * offsetX + offsetY * offsetY).squareRoot()
    let dx = revisedX / norm, dy = revisedY / norm
    var relations: Set<Relation> = []
    if dx < -0.5 { relations.insert(.leftOf) }
    if dx > 0.5 { relations.insert(.rightOf) }
    if dy < -0.5 { relations.insert(.above) }
    if dy > 0.5 { relations.insert(.below) }
    return relations
}

/// The verdict for one image against one metadata record, with GenEval-style reasons.
public struct GenEvalVerdict: Equatable, Sendable {
    public var correct: Bool
    public var reason: String
}

/// GenEval's `evaluate`: include clauses are ANDed, exclude clauses ORed; colour and position are
/// judged only on the `count` most confident detections of the class; a position clause needs its
/// target clause to have matched. `detections` may be in any order.
public func evaluateGenEval(detections: [DetectedObject], record: MetadataRecord) -> GenEvalVerdict {
    var byClass: [ShapeClass: [DetectedObject]] = [:]
    for detection in detections { byClass[detection.shape, default: []].append(detection) }
    for shape in byClass.keys {
        // Stable order: confidence, then reading order, so ties never depend on hashing.
        byClass[shape]!.sort { ($0.confidence, -$0.box.y1, -$0.box.x1) > ($1.confidence, -$1.box.y1, -$1.box.x1) }
    }
    var correct = true
    var reasons: [String] = []
    var matchedGroups: [[DetectedObject]?] = []
    for requirement in record.include {
        let name = requirement.shape.rawValue
        var matched = true
        let found = Array((byClass[requirement.shape] ?? []).prefix(requirement.count))
        if found.count < requirement.count {
            correct = false; matched = false
            reasons.append("expected \(name)>=\(requirement.count), found \(found.count)")
        } else {
            if let color = requirement.color {
                let hits = found.filter { $0.color == color }.count
                if hits < requirement.count {
                    correct = false; matched = false
                    let seen = found.map(\.color.rawValue).joined(separator: ", ")
                    reasons.append("expected \(color.rawValue) \(name)>=\(requirement.count), found \(hits) \(color.rawValue); colors: \(seen)")
                }
            }
            if let position = requirement.position, matched {
                if position.target >= matchedGroups.count || matchedGroups[position.target] == nil {
                    correct = false; matched = false
                    reasons.append("no target for \(name) to be \(position.relation.rawValue)")
                } else {
                    search: for object in found {
                        for target in matchedGroups[position.target]! {
                            let relations = genEvalRelations(of: object.box, relativeTo: target.box)
                            if !relations.contains(position.relation) {
                                correct = false; matched = false
                                let described = relations.map(\.rawValue).sorted().joined(separator: " and ")
                                reasons.append(
                                    "expected \(name) \(position.relation.rawValue) target, found \(described.isEmpty ? "no relation to" : described) target")
                                break search
                            }
                        }
                    }
                }
            }
        }
        matchedGroups.append(matched ? found : nil)
    }
    for requirement in record.exclude {
        let present = byClass[requirement.shape]?.count ?? 0
        if present >= requirement.count {
            correct = false
            reasons.append("expected \(requirement.shape.rawValue)<\(requirement.count), found \(present)")
        }
    }
    return GenEvalVerdict(correct: correct, reason: reasons.joined(separator: "\n"))
}

/// Detections GenEval counts: its evaluator drops detector outputs below a confidence threshold,
/// with a stricter one for counting prompts (0.3 and 0.9 for its Mask2Former). Our confidence is
/// the IoU with the best shape template: 1.0 for every clean or round-tripped render, about 0.6
/// for the blobs of an image of random codes, which must not count as objects. Specks smaller
/// than any object the world draws (a lone 4x4 patch is a perfect little square) do not count
/// either.
public let genEvalConfidenceThreshold = 0.8
public let genEvalCountingConfidenceThreshold = 0.9
public let genEvalMinimumObjectSide = 6.0

/// Detects the objects of `image` and judges the confident ones against `record`.
public func evaluateGenEval(image: RGBImage, record: MetadataRecord) -> GenEvalVerdict {
    evaluateGenEval(allDetections: detectObjects(in: image), record: record)
}

/// Judges the confident ones among every detection of an image against `record`.
public func evaluateGenEval(allDetections: [DetectedObject], record: MetadataRecord) -> GenEvalVerdict {
    let threshold = record.tag == .counting ? genEvalCountingConfidenceThreshold : genEvalConfidenceThreshold
    let counted = allDetections.filter {
        $0.confidence >= threshold && $0.box.width >= genEvalMinimumObjectSide && $0.box.height >= genEvalMinimumObjectSide
    }
    return evaluateGenEval(detections: counted, record: record)
}

/// Per-category means over images and their unweighted mean, as GenEval's `summary_scores.py`.
public struct GenEvalSummary: Equatable, Sendable {
    public var correctImages: [Category: Int] = [:]
    public var totalImages: [Category: Int] = [:]

    public init() {}

    public mutating func add(category: Category, correct: Bool) {
        totalImages[category, default: 0] += 1
        if correct { correctImages[category, default: 0] += 1 }
    }

    /// Mean correctness of one category; nil when it had no images.
    public func score(_ category: Category) -> Double? {
        guard let total = totalImages[category], total > 0 else { return nil }
        return Double(correctImages[category] ?? 0) / Double(total)
    }

    /// Unweighted mean over the categories that were scored.
    public var overall: Double {
        let scores = Category.allCases.compactMap(score)
        return scores.isEmpty ? 0 : scores.reduce(0, +) / Double(scores.count)
    }

    public var imageCount: Int { totalImages.values.reduce(0, +) }

    /// `{"overall": x, "images": n, "categories": {"single_object": {"score": s, "correct": c, "images": n}, ...}}`
    public var json: String {
        var categories: [String] = []
        for category in Category.allCases {
            guard let score = score(category) else { continue }
            categories.append(
                "\"\(category.rawValue)\": {\"score\": \(formatScore(score)), \"correct\": \(correctImages[category] ?? 0), \"images\": \(totalImages[category] ?? 0)}"
            )
        }
        return "{\"overall\": \(formatScore(overall)), \"images\": \(imageCount), \"categories\": {" + categories.joined(separator: ", ") + "}}"
    }

    /// A fixed-width table, one category a line, then the overall score.
    public var table: String {
        var lines = ["category        score  correct/images"]
        for category in Category.allCases {
            guard let score = score(category) else { continue }
            lines.append(
                category.rawValue.padding(toLength: 14, withPad: " ", startingAt: 0)
                    + "  " + String(format: "%.4f", score) + "  \(correctImages[category] ?? 0)/\(totalImages[category] ?? 0)")
        }
        lines.append(
            "overall".padding(toLength: 14, withPad: " ", startingAt: 0) + "  " + String(format: "%.4f", overall)
                + "  (mean of \(Category.allCases.compactMap(score).count) categories)")
        return lines.joined(separator: "\n")
    }
}

func formatScore(_ value: Double) -> String { String(format: "%.6f", value) }

/// Scores GenEval-style samples held in memory: `images[i]` are the samples for `records[i]`
/// (GenEval uses 4 per prompt).
public func scoreGenEval(records: [MetadataRecord], images: [[RGBImage]]) -> GenEvalSummary {
    precondition(records.count == images.count, "scoreGenEval: \(records.count) records, \(images.count) image lists")
    var summary = GenEvalSummary()
    for (record, samples) in zip(records, images) {
        for image in samples { summary.add(category: record.tag, correct: evaluateGenEval(image: image, record: record).correct) }
    }
    return summary
}
