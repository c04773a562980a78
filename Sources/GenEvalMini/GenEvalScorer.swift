import World

/// The verdict for one image against one metadata record, with GenEval-style reasons.
public struct GenEvalVerdict: Equatable, Sendable {
    public var correct: Bool
    public var reason: String
}

/// GenEval's `evaluate`: include clauses are ANDed, exclude clauses ORed; colour and position are
/// judged only on the `count` most confident detections of the class; a position clause needs its
/// target clause to have matched. `detections` may be in any order.
public func evaluateGenEval(detections: [DetectedObject], record: MetadataRecord) -> GenEvalVerdict {
    JudgeCalls.record()
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
