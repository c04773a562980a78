import Foundation

/// GenEval's six prompt categories, in GenEval's order (also the order of summary tables).
public enum Category: String, CaseIterable, Codable, Sendable {
    case singleObject = "single_object"
    case twoObject = "two_object"
    case counting
    case colors
    case position
    case colorAttr = "color_attr"
}

/// GenEval's relations, spelled as in its metadata.
public enum Relation: String, CaseIterable, Codable, Sendable {
    case leftOf = "left of"
    case rightOf = "right of"
    case above
    case below
}

/// One `include` or `exclude` clause of a GenEval metadata line.
public struct ObjectRequirement: Equatable, Sendable {
    public var shape: ShapeClass
    public var count: Int
    public var color: ObjectColor?
    /// Relation of these objects to the objects matched by include clause `target`.
    public var position: (relation: Relation, target: Int)?

    public init(shape: ShapeClass, count: Int, color: ObjectColor? = nil, position: (relation: Relation, target: Int)? = nil) {
        self.shape = shape; self.count = count; self.color = color; self.position = position
    }

    public static func == (a: ObjectRequirement, b: ObjectRequirement) -> Bool {
        a.shape == b.shape && a.count == b.count && a.color == b.color
            && a.position?.relation == b.position?.relation && a.position?.target == b.position?.target
    }
}

/// One line of GenEval's `evaluation_metadata.jsonl`:
/// `{"tag": ..., "include": [...], "exclude": [...], "prompt": ...}`.
public struct MetadataRecord: Equatable, Sendable {
    public var tag: Category
    public var include: [ObjectRequirement]
    public var exclude: [ObjectRequirement]
    public var prompt: String

    public init(tag: Category, include: [ObjectRequirement], exclude: [ObjectRequirement] = [], prompt: String) {
        self.tag = tag; self.include = include; self.exclude = exclude; self.prompt = prompt
    }

    /// The record as one JSON line, keys in GenEval's order; `exclude` only when present.
    public var jsonLine: String {
        func clause(_ requirement: ObjectRequirement) -> String {
            var fields = ["\"class\": \"\(requirement.shape.rawValue)\"", "\"count\": \(requirement.count)"]
            if let color = requirement.color { fields.append("\"color\": \"\(color.rawValue)\"") }
            if let position = requirement.position {
                fields.append("\"position\": [\"\(position.relation.rawValue)\", \(position.target)]")
            }
            return "{" + fields.joined(separator: ", ") + "}"
        }
        var parts = ["\"tag\": \"\(tag.rawValue)\"", "\"include\": [" + include.map(clause).joined(separator: ", ") + "]"]
        if !exclude.isEmpty { parts.append("\"exclude\": [" + exclude.map(clause).joined(separator: ", ") + "]") }
        parts.append("\"prompt\": \"\(prompt)\"")
        return "{" + parts.joined(separator: ", ") + "}"
    }

    /// Parses one metadata line; `line` (1-based) only labels errors.
    public static func parse(jsonLine text: String, line: Int) throws -> MetadataRecord {
        func fail(_ reason: String) -> WorldError { .metadata(line: line, reason: reason) }
        guard let data = text.data(using: .utf8),
            let object = try? JSONSerialization.jsonObject(with: data),
            let dictionary = object as? [String: Any]
        else { throw fail("not a JSON object") }
        guard let tagName = dictionary["tag"] as? String else { throw fail("missing string \"tag\"") }
        guard let tag = Category(rawValue: tagName) else { throw fail("unknown tag '\(tagName)'") }
        guard let prompt = dictionary["prompt"] as? String else { throw fail("missing string \"prompt\"") }
        guard let includeList = dictionary["include"] as? [Any] else { throw fail("missing list \"include\"") }

        func requirement(_ any: Any, in key: String, index: Int) throws -> ObjectRequirement {
            let label = "\(key)[\(index)]"
            guard let clause = any as? [String: Any] else { throw fail("\(label) is not an object") }
            guard let className = clause["class"] as? String else { throw fail("\(label) has no string \"class\"") }
            guard let shape = ShapeClass(rawValue: className) else { throw fail("\(label): unknown class '\(className)'") }
            guard let countNumber = clause["count"] as? NSNumber,
                let count = Int(exactly: countNumber.doubleValue), count >= 1, count <= 64
            else { throw fail("\(label) needs an integer \"count\" in 1...64") }
            var result = ObjectRequirement(shape: shape, count: count)
            if let colorValue = clause["color"] {
                guard let colorName = colorValue as? String, let color = ObjectColor(rawValue: colorName) else {
                    throw fail("\(label): unknown color \(colorValue)")
                }
                result.color = color
            }
            if let positionValue = clause["position"] {
                guard let pair = positionValue as? [Any], pair.count == 2,
                    let relationName = pair[0] as? String,
                    let targetNumber = pair[1] as? NSNumber, let target = Int(exactly: targetNumber.doubleValue)
                else { throw fail("\(label): \"position\" must be [relation, index]") }
                guard let relation = Relation(rawValue: relationName) else {
                    throw fail("\(label): unknown relation '\(relationName)'")
                }
                guard key == "include", target >= 0, target < index else {
                    throw fail("\(label): position target \(target) must name an earlier include clause")
                }
                result.position = (relation, target)
            }
            return result
        }

        let include = try includeList.enumerated().map { try requirement($0.element, in: "include", index: $0.offset) }
        guard !include.isEmpty else { throw fail("\"include\" is empty") }
        var exclude: [ObjectRequirement] = []
        if let excludeValue = dictionary["exclude"] {
            guard let excludeList = excludeValue as? [Any] else { throw fail("\"exclude\" is not a list") }
            exclude = try excludeList.enumerated().map { try requirement($0.element, in: "exclude", index: $0.offset) }
        }
        return MetadataRecord(tag: tag, include: include, exclude: exclude, prompt: prompt)
    }
}

/// Reads a metadata JSONL file (blank lines skipped); a bad line is an error naming the file and
/// the line's number.
public func readMetadataFile(_ url: URL) throws -> [MetadataRecord] {
    try checkRegularFile(url)
    let text: String
    do { text = try String(contentsOf: url, encoding: .utf8) } catch {
        throw WorldError.malformedFile(path: url.path, reason: "not UTF-8 text")
    }
    do { return try parseMetadataLines(text) } catch let error as WorldError {
        throw WorldError.malformedFile(path: url.path, reason: error.description)
    }
}

/// The longest metadata line accepted. GenEval's lines are a few hundred bytes; the JSON
/// parser's memory grows with a line's size, so a huge line is refused before it is parsed.
public let maximumMetadataLineBytes = 65_536

public func parseMetadataLines(_ text: String) throws -> [MetadataRecord] {
    var records: [MetadataRecord] = []
    // Split on bytes: splitting into Characters costs seconds on a line of megabytes.
    for (index, bytes) in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
        guard bytes.count <= maximumMetadataLineBytes else {
            throw WorldError.metadata(line: index + 1, reason: "\(bytes.count) bytes, more than the \(maximumMetadataLineBytes) allowed for one record")
        }
        let line = Substring(bytes)
        let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty { continue }
        records.append(try MetadataRecord.parse(jsonLine: trimmed, line: index + 1))
    }
    return records
}

public func writeMetadataFile(_ records: [MetadataRecord], to url: URL) throws {
    let text = records.map(\.jsonLine).joined(separator: "\n") + (records.isEmpty ? "" : "\n")
    try text.write(to: url, atomically: true, encoding: .utf8)
}
