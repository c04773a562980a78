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

    /// How `json` begins; without --force `suder eval geneval` replaces only a file that begins so.
    public static let jsonStart = "{\"overall\": "

    /// `{"overall": x, "images": n, "categories": {"single_object": {"score": s, "correct": c, "images": n}, ...}}`
    public var json: String {
        var categories: [String] = []
        for category in Category.allCases {
            guard let score = score(category) else { continue }
            categories.append(
                "\"\(category.rawValue)\": {\"score\": \(formatScore(score)), \"correct\": \(correctImages[category] ?? 0), \"images\": \(totalImages[category] ?? 0)}"
            )
        }
        return Self.jsonStart + "\(formatScore(overall)), \"images\": \(imageCount), \"categories\": {" + categories.joined(separator: ", ") + "}}"
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
