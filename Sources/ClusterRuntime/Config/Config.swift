import Foundation
import Yams

/// The type and allowed values of one config key.
public enum ConfigKind: Equatable {
    case int(ClosedRange<Int>)
    case double(ClosedRange<Double>)
    case bool
    case choice([String])
    case string
    /// A key that no longer exists under this name: setting it is an error naming the new one.
    case renamed(to: String)

    public var typeName: String {
        switch self {
        case .int(let r): return "integer in \(r.lowerBound)...\(r.upperBound == Int.max ? "" : String(r.upperBound))"
        case .double(let r): return "number in \(r.lowerBound)...\(r.upperBound == .infinity ? "" : String(r.upperBound))"
        case .bool: return "true or false"
        case .choice(let options): return "one of " + options.joined(separator: ", ")
        case .string: return "string"
        case .renamed(let newKey): return "renamed \(newKey)"
        }
    }
}

public enum ConfigValue: Equatable, CustomStringConvertible {
    case int(Int), double(Double), bool(Bool), string(String)

    public var description: String {
        switch self {
        case .int(let v): return String(v)
        case .double(let v): return String(v)
        case .bool(let v): return String(v)
        case .string(let v): return v
        }
    }
}

/// One key of the schema: dotted name, type, default and a line of help.
public struct ConfigField {
    public let key: String
    public let kind: ConfigKind
    public let defaultValue: ConfigValue
    public let help: String

    public init(_ key: String, _ kind: ConfigKind, _ defaultValue: ConfigValue, _ help: String) {
        self.key = key
        self.kind = kind
        self.defaultValue = defaultValue
        self.help = help
    }

    /// `old` was renamed `new`: an old config or override gets an error naming the new key.
    public static func renamed(_ old: String, to new: String) -> ConfigField {
        ConfigField(old, .renamed(to: new), .string(""), "renamed \(new)")
    }
}

/// The keys a job accepts, and the rules over them. The runtime owns `runtime.*` and
/// `checkpoint.*` (`runtimeConfigFields`); the job adds its own.
public struct ConfigSchema {
    public let fields: [ConfigField]
    /// Checks that involve several keys at once.
    public let checkConsistency: (ResolvedConfig) throws -> Void
    /// Keys (or key prefixes) that change how a run is carried out or logged, never its results:
    /// a run directory may be continued with other values for them.
    public let resultNeutralPrefixes: [String]

    public init(fields: [ConfigField], resultNeutralPrefixes: [String] = [], checkConsistency: @escaping (ResolvedConfig) throws -> Void = { _ in }) {
        self.fields = fields
        self.resultNeutralPrefixes = ["runtime.", "checkpoint.keep_last"] + resultNeutralPrefixes
        self.checkConsistency = checkConsistency
    }
}

public struct ConfigError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A fully resolved config: defaults < YAML file < `key.sub=value` overrides, every value checked
/// against the schema. Stages read typed values by dotted key.
public struct ResolvedConfig: Equatable {
    public private(set) var values: [String: ConfigValue]
    /// Where each value came from: "default", the file name, or "override".
    public private(set) var sources: [String: String]

    /// `acceptRenamedKeys` reads a renamed key under its new name (for configs recorded in a run
    /// directory before the rename); otherwise a renamed key is an error naming the new one.
    public static func resolve(file: URL?, overrides: [String], schema: ConfigSchema, acceptRenamedKeys: Bool = false) throws -> ResolvedConfig {
        try resolve(fileContents: file.map { ($0, try readConfigFile($0)) }, overrides: overrides, schema: schema, acceptRenamedKeys: acceptRenamedKeys)
    }

    /// The text of a config file.
    public static func readConfigFile(_ file: URL) throws -> String {
        do {
            return try String(contentsOf: file, encoding: .utf8)
        } catch {
            throw ConfigError("cannot read config file \(file.path): \(error.localizedDescription)")
        }
    }

    /// `resolve` over a config file's text read elsewhere (by rank 0, for every rank).
    public static func resolve(
        fileContents file: (url: URL, text: String)?, overrides: [String], schema: ConfigSchema,
        acceptRenamedKeys: Bool = false
    ) throws -> ResolvedConfig {
        var config = ResolvedConfig(values: [:], sources: [:])
        for field in schema.fields {
            if case .renamed = field.kind { continue }
            config.values[field.key] = field.defaultValue
            config.sources[field.key] = "default"
        }
        let fields = Dictionary(uniqueKeysWithValues: schema.fields.map { ($0.key, $0) })
        /// The field a key sets: a renamed key's new field when accepted, else an error.
        func fieldSetBy(_ key: String, place: String) throws -> ConfigField {
            guard let field = fields[key] else { throw unknownKey(key, place: place, schema: schema) }
            guard case .renamed(let newKey) = field.kind else { return field }
            guard acceptRenamedKeys, let renamed = fields[newKey] else {
                throw ConfigError("\(place): \(key) was renamed \(newKey)")
            }
            return renamed
        }
        if let (file, text) = file {
            for (key, node) in try flattenYAML(text, file: file.path) {
                let place = "\(file.lastPathComponent)\(node.mark.map { " line \($0.line)" } ?? "")"
                let field = try fieldSetBy(key, place: place)
                config.values[field.key] = try parse(node: node, field: field, place: place)
                config.sources[field.key] = file.lastPathComponent
            }
        }
        for override in overrides {
            guard let eq = override.firstIndex(of: "="), eq != override.startIndex else {
                throw ConfigError("override '\(override)' is not of the form key.sub=value")
            }
            let key = String(override[..<eq])
            let raw = String(override[override.index(after: eq)...])
            let field = try fieldSetBy(key, place: "command line")
            config.values[field.key] = try parse(text: raw, field: field, place: "command line")
            config.sources[field.key] = "override"
        }
        return config
    }

    public func int(_ key: String) -> Int {
        guard case .int(let v) = value(key) else { preconditionFailure("config key \(key) is not an integer") }
        return v
    }

    public func double(_ key: String) -> Double {
        switch value(key) {
        case .double(let v): return v
        case .int(let v): return Double(v)
        default: preconditionFailure("config key \(key) is not a number")
        }
    }

    public func bool(_ key: String) -> Bool {
        guard case .bool(let v) = value(key) else { preconditionFailure("config key \(key) is not a bool") }
        return v
    }

    public func string(_ key: String) -> String {
        guard case .string(let v) = value(key) else { preconditionFailure("config key \(key) is not a string") }
        return v
    }

    public func value(_ key: String) -> ConfigValue {
        guard let v = values[key] else { preconditionFailure("config key \(key) is not in the schema") }
        return v
    }

    /// Returns a copy with `key` set, checked against the schema (used by tests and the pipeline).
    public func setting(_ key: String, _ text: String, schema: ConfigSchema) throws -> ResolvedConfig {
        guard let field = schema.fields.first(where: { $0.key == key }) else { throw Self.unknownKey(key, place: "setting", schema: schema) }
        var copy = self
        copy.values[key] = try Self.parse(text: text, field: field, place: "setting")
        copy.sources[key] = "override"
        return copy
    }

    /// The resolved config as nested YAML, every key present; loading it back gives the same config.
    public func yaml() -> String {
        var lines: [String] = []
        var openPath: [Substring] = []
        for key in values.keys.sorted() {
            let parts = key.split(separator: ".")
            let parents = Array(parts.dropLast())
            var common = 0
            while common < min(openPath.count, parents.count) && openPath[common] == parents[common] { common += 1 }
            for depth in common..<parents.count {
                lines.append(String(repeating: "  ", count: depth) + parents[depth] + ":")
            }
            openPath = parents
            let rendered: String
            if case .string(let s) = values[key]! { rendered = "\"\(s)\"" } else { rendered = values[key]!.description }
            lines.append(String(repeating: "  ", count: parents.count) + "\(parts.last!): \(rendered)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A fixed-width table of every key, its value and where the value came from.
    public func table() -> String {
        let keys = values.keys.sorted()
        let keyWidth = max(3, keys.map(\.count).max() ?? 0)
        let valueWidth = max(5, keys.map { values[$0]!.description.count }.max() ?? 0)
        var out =
            "key".padding(toLength: keyWidth, withPad: " ", startingAt: 0) + "  "
            + "value".padding(toLength: valueWidth, withPad: " ", startingAt: 0) + "  source\n"
        out += String(repeating: "-", count: keyWidth + valueWidth + 12) + "\n"
        for key in keys {
            out +=
                key.padding(toLength: keyWidth, withPad: " ", startingAt: 0) + "  "
                + values[key]!.description.padding(toLength: valueWidth, withPad: " ", startingAt: 0) + "  "
                + (sources[key] ?? "") + "\n"
        }
        return out
    }

    /// Keys whose values differ, ignoring keys under the given prefixes.
    public func differences(from other: ResolvedConfig, ignoring prefixes: [String] = []) -> [String] {
        Set(values.keys).union(other.values.keys).sorted().filter { key in
            !prefixes.contains(where: { key.hasPrefix($0) }) && values[key] != other.values[key]
        }
    }

    // MARK: parsing

    private static func flattenYAML(_ text: String, file: String) throws -> [(String, Node)] {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw ConfigError("\(file) is not valid YAML: \(error)")
        }
        guard let root else { return [] }
        guard root.mapping != nil else { throw ConfigError("\(file): the top level must be a mapping of keys") }
        var result: [(String, Node)] = []
        func walk(_ node: Node, prefix: String) throws {
            guard let mapping = node.mapping else {
                result.append((prefix, node))
                return
            }
            for (keyNode, valueNode) in mapping {
                guard let name = keyNode.string else {
                    throw ConfigError("\(file) line \(keyNode.mark?.line ?? 0): keys must be strings")
                }
                try walk(valueNode, prefix: prefix.isEmpty ? name : prefix + "." + name)
            }
        }
        try walk(root, prefix: "")
        return result
    }

    private static func parse(node: Node, field: ConfigField, place: String) throws -> ConfigValue {
        guard let scalar = node.scalar else {
            throw typeError(field, received: node.sequence != nil ? "a list" : "a mapping", place: place)
        }
        return try parse(text: scalar.string, field: field, place: place)
    }

    public static func parse(text: String, field: ConfigField, place: String) throws -> ConfigValue {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        switch field.kind {
        case .int(let range):
            guard let v = Int(trimmed.replacingOccurrences(of: "_", with: "")) else {
                throw typeError(field, received: "'\(text)'", place: place)
            }
            guard range.contains(v) else { throw rangeError(field, received: text, place: place) }
            return .int(v)
        case .double(let range):
            guard let v = Double(trimmed), v.isFinite else { throw typeError(field, received: "'\(text)'", place: place) }
            guard range.contains(v) else { throw rangeError(field, received: text, place: place) }
            return .double(v)
        case .bool:
            switch trimmed.lowercased() {
            case "true", "yes", "on": return .bool(true)
            case "false", "no", "off": return .bool(false)
            default: throw typeError(field, received: "'\(text)'", place: place)
            }
        case .choice(let options):
            guard options.contains(trimmed) else {
                let hint = closestMatch(to: trimmed, among: options).map { " (did you mean '\($0)'?)" } ?? ""
                throw ConfigError("\(place): \(field.key) expects \(field.kind.typeName); received '\(text)'\(hint)")
            }
            return .string(trimmed)
        case .string:
            return .string(trimmed)
        case .renamed(let newKey):
            throw ConfigError("\(place): \(field.key) was renamed \(newKey)")
        }
    }

    private static func typeError(_ field: ConfigField, received: String, place: String) -> ConfigError {
        ConfigError("\(place): \(field.key) expects \(field.kind.typeName); received \(received)")
    }

    private static func rangeError(_ field: ConfigField, received: String, place: String) -> ConfigError {
        ConfigError("\(place): \(field.key) expects \(field.kind.typeName); received \(received), which is out of range")
    }

    private static func unknownKey(_ key: String, place: String, schema: ConfigSchema) -> ConfigError {
        let hint = closestMatch(to: key, among: schema.fields.map(\.key)).map { " (did you mean '\($0)'?)" } ?? ""
        return ConfigError("\(place): unknown config key '\(key)'\(hint)")
    }
}

/// The candidate within a small edit distance of `word`, if any: typos, not different words.
public func closestMatch(to word: String, among candidates: [String]) -> String? {
    let scored = candidates.map { ($0, editDistance(word, $0)) }
    guard let best = scored.min(by: { $0.1 < $1.1 }) else { return nil }
    return best.1 <= max(2, word.count / 4) ? best.0 : nil
}

public func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var previous = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in 1...max(b.count, 1) where !b.isEmpty {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return a.isEmpty ? b.count : previous[b.count]
}
