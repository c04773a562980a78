import Foundation

/// One line of `metrics.jsonl`: keys in insertion order so the file reads the same on every run.
public struct MetricsRecord {
    public private(set) var fields: [(String, String)] = []

    public init() {}

    public mutating func set(_ key: String, _ value: Double) {
        fields.append((key, value.isFinite ? formatNumber(value) : "null"))
    }

    public mutating func set(_ key: String, _ value: Int) {
        fields.append((key, String(value)))
    }

    public mutating func set(_ key: String, _ value: String) {
        fields.append((key, jsonString(value)))
    }

    public var json: String {
        "{" + fields.map { "\(jsonString($0.0)): \($0.1)" }.joined(separator: ", ") + "}"
    }
}

/// Appends records to `<stage dir>/metrics.jsonl` on rank 0. On resume it drops records past the
/// checkpoint's step, so a resumed run's file equals an uninterrupted run's.
public final class MetricsLog {
    public let url: URL
    public let enabled: Bool

    /// Collective: rank 0 trims or creates the file, every rank learns whether that worked.
    public init(url: URL, comm: Communicator, resumeAfterStep: Int?) throws {
        self.url = url
        enabled = comm.isRoot
        try comm.rootDecides {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            let existing = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
            let kept = existing.split(separator: "\n").filter { line in
                guard let resumeAfterStep, let step = Self.step(of: line) else { return false }
                return step <= resumeAfterStep
            }
            try writeFileAtomically(Data(kept.map { $0 + "\n" }.joined().utf8), to: url)
        }
    }

    public func append(_ record: MetricsRecord) {
        guard enabled, let handle = try? FileHandle(forWritingTo: url) else { return }
        defer { try? handle.close() }
        _ = try? handle.seekToEnd()
        try? handle.write(contentsOf: Data((record.json + "\n").utf8))
    }

    public static func step(of line: Substring) -> Int? {
        guard let range = line.range(of: "\"step\": ") else { return nil }
        return Int(line[range.upperBound...].prefix { $0.isNumber })
    }
}

/// Shortest decimal that reads back as the same Double (Swift's description), as JSON.
public func formatNumber(_ value: Double) -> String {
    if value == value.rounded(), abs(value) < 1e15 { return String(Int(value)) }
    return "\(value)"
}

public func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 { out += String(format: "\\u%04x", scalar.value) } else { out.unicodeScalars.append(scalar) }
        }
    }
    return out + "\""
}
