import XCTest

@testable import ClusterRuntime
@testable import SUDERCluster

/// Hostile config files for the YAML reader, seeded and bounded in time: random YAML built from
/// the schema's keys and from junk, mutations of a valid config, and alias chains of every depth
/// and fan-out. Every input must end in a resolved config or a `ConfigError` naming the file,
/// each within a second; never a crash, a hang or a large allocation.
final class ConfigFuzzTests: XCTestCase {
    private var generator = SplitMix64(seed: 20_261_129)
    private func random(_ range: Range<Int>) -> Int { Int.random(in: range, using: &generator) }
    private func pick<T>(_ items: [T]) -> T { items[random(0..<items.count)] }

    private lazy var directory: URL = {
        let url = temporaryDirectory("config-fuzz")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }()

    override func tearDown() {
        try? FileManager.default.removeItem(at: directory)
    }

    private var reasons = Set<String>()
    private var resolved = 0

    private func expectCleanOutcome(_ text: String, _ what: String) {
        let file = directory.appendingPathComponent("fuzz.yaml")
        try? FileManager.default.removeItem(at: file)
        XCTAssertTrue(FileManager.default.createFile(atPath: file.path, contents: Data(text.utf8)))
        let started = Date()
        do {
            _ = try ResolvedConfig.resolve(file: file, overrides: [])
            resolved += 1
        } catch let error as ConfigError {
            XCTAssertTrue(error.description.contains("fuzz.yaml"), "\(what): \(error)")
            reasons.insert(String(error.description.split(separator: ":").dropFirst().first ?? "").prefix(24).description)
        } catch {
            XCTFail("\(what): unexpected error type \(type(of: error)): \(error)")
        }
        let seconds = Date().timeIntervalSince(started)
        XCTAssertLessThan(seconds, 1, "\(what) took \(seconds) s:\n\(text.prefix(400))")
    }

    private lazy var keys = configSchema.fields.map(\.key)
    private let scalars = [
        "1", "-1", "0", "96", "1e308", "-1e400", "nan", ".inf", "true", "no", "~", "null", "''", "\"\"",
        "simpo", "dpo", "joint", "9223372036854775807", "99999999999999999999", "0x10", "1_000", "[]", "{}",
        "\"\\u0000\"", "!!binary aGVsbG8=", "!custom x", "2026-11-29", "'a: b'", "|\n  block\n",
    ]

    /// A random YAML value of at most `depth` levels, with anchors and aliases among them.
    private func value(_ depth: Int, anchors: inout [String]) -> String {
        let choice = depth <= 0 ? random(0..<2) : random(0..<6)
        switch choice {
        case 0: return pick(scalars)
        case 1: return anchors.isEmpty ? pick(scalars) : "*" + pick(anchors)
        case 2:
            let items = (0..<random(0..<4)).map { _ in value(depth - 1, anchors: &anchors) }
            return "[" + items.joined(separator: ", ") + "]"
        case 3:
            let items = (0..<random(0..<4)).map { i in "k\(i): " + value(depth - 1, anchors: &anchors) }
            return "{" + items.joined(separator: ", ") + "}"
        default:
            let name = "a\(anchors.count)"
            let inner = value(depth - 1, anchors: &anchors)
            anchors.append(name)
            return "&\(name) " + inner
        }
    }

    private func randomDocument() -> String {
        var anchors: [String] = []
        var lines: [String] = []
        for _ in 0..<random(1..<12) {
            let key = random(0..<4) == 0 ? pick(["model", "suder", "x", "model.d_model", "? [a]", "\"quoted\"", ""]) : pick(keys)
            lines.append("\(key): \(value(3, anchors: &anchors))")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private func mutate(_ text: String) -> String {
        var characters = Array(text)
        let junk: [String] = [":", "-", "&x", "*x", "[", "]", "{", "}", "\n", "  ", "\t", "#", "\"", "'", "?", "!", "|", ">", "%", "@", "`", "\u{0}", "é"]
        for _ in 0..<random(1..<3) {
            guard !characters.isEmpty else { break }
            let at = random(0..<characters.count)
            switch random(0..<3) {
            case 0: characters.insert(contentsOf: pick(junk), at: at)
            case 1: characters.remove(at: at)
            default: characters.removeSubrange(at..<min(characters.count, at + random(1..<20)))
            }
        }
        return String(characters)
    }

    func testRandomAndMutatedYAMLEndsInAConfigOrANamedError() throws {
        let peakBefore = peakResidentBytes()
        let started = Date()
        let valid = try ResolvedConfig.resolve(file: nil, overrides: []).yaml()
        for iteration in 0..<600 {
            let text = iteration % 2 == 0 ? randomDocument() : mutate(valid)
            expectCleanOutcome(text, "iteration \(iteration)")
        }
        XCTAssertGreaterThan(resolved, 5, "mutations of the valid config should often still resolve")
        XCTAssertGreaterThan(reasons.count, 8, "rejections should come from many checks: \(reasons.sorted())")
        XCTAssertLessThan(peakResidentBytes() - peakBefore, 256 << 20)
        XCTAssertLessThan(Date().timeIntervalSince(started), 60)
    }

    /// Chains of aliases, each level naming the previous `fanout` times, as lists, as mappings and
    /// as mapping keys: small ones resolve to a type error or unknown key, large ones are refused
    /// for their size; all quickly.
    func testAliasChainsOfEveryDepthAndFanout() {
        let peakBefore = peakResidentBytes()
        for depth in 1...30 {
            for fanout in [1, 2, 3, 9] {
                for form in 0..<3 {
                    var lines = [form == 1 ? "a0: &a0 {k: 1}" : "a0: &a0 [x]"]
                    for level in 1...depth {
                        let uses = (0..<fanout).map { form == 1 ? "k\($0): *a\(level - 1)" : "*a\(level - 1)" }
                        lines.append(
                            "a\(level): &a\(level) " + (form == 1 ? "{" + uses.joined(separator: ", ") + "}" : "[" + uses.joined(separator: ", ") + "]"))
                    }
                    if form == 2 { lines.append("? *a\(depth)\n: 1") }
                    expectCleanOutcome(lines.joined(separator: "\n") + "\n", "depth \(depth) fanout \(fanout) form \(form)")
                }
            }
        }
        XCTAssertLessThan(peakResidentBytes() - peakBefore, 256 << 20)
    }
}
