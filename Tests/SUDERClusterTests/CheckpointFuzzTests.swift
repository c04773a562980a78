import XCTest

@testable import ClusterRuntime
@testable import SUDERCluster

/// Hostile inputs for the readers: random bytes and mutations of valid files, seeded and bounded.
/// Every input must end in a value or a `CheckpointError` naming the file; never a crash, a trap
/// or a large allocation (checked through the peak resident size).
final class CheckpointFuzzTests: XCTestCase {
    private var generator = SplitMix64(seed: 20_261_127)

    private func random(_ range: Range<Int>) -> Int { Int.random(in: range, using: &generator) }

    /// One of: flip bits, overwrite a run with random bytes, write an extreme 8-byte integer,
    /// truncate, insert random bytes, duplicate a slice.
    private func mutate(_ input: [UInt8]) -> [UInt8] {
        var bytes = input
        for _ in 0..<random(1..<4) {
            guard !bytes.isEmpty else { return [UInt8(random(0..<256))] }
            let at = random(0..<bytes.count)
            switch random(0..<6) {
            case 0:
                bytes[at] ^= UInt8(1 << random(0..<8))
            case 1:
                for i in at..<min(bytes.count, at + random(1..<16)) { bytes[i] = UInt8(random(0..<256)) }
            case 2:
                let extremes: [UInt64] = [0, 1, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 40, UInt64(Int64.max), UInt64.max]
                var value = extremes[random(0..<extremes.count)].littleEndian
                withUnsafeBytes(of: &value) { raw in
                    for i in 0..<min(8, bytes.count - at) { bytes[at + i] = raw[i] }
                }
            case 3:
                bytes.removeSubrange(at...)
            case 4:
                bytes.insert(contentsOf: (0..<random(1..<32)).map { _ in UInt8(random(0..<256)) }, at: at)
            default:
                let end = min(bytes.count, at + random(1..<64))
                bytes.insert(contentsOf: bytes[at..<end], at: random(0..<bytes.count))
            }
        }
        return bytes
    }

    /// Re-seals a mutated header with a valid checksum, so the mutation reaches the parser
    /// instead of stopping at the checksum (a crafted file, not a damaged one).
    private func reseal(_ header: [UInt8]) -> [UInt8] {
        guard header.count >= 28 else { return header }
        var bytes = Array(header.dropLast(8))
        var checksum = xxhash64(bytes).littleEndian
        withUnsafeBytes(of: &checksum) { bytes.append(contentsOf: $0) }
        return bytes
    }

    /// Distinct rejection reasons seen (the problem text up to its first digit or colon), to check
    /// that the fuzzing reaches past the first check.
    private var reasons = Set<String>()

    private func expectCleanOutcome(_ file: String, _ body: () throws -> Void) {
        do {
            try body()
        } catch let error as CheckpointError {
            XCTAssertFalse(error.problem.isEmpty)
            reasons.insert(String(error.problem.prefix { !$0.isNumber && $0 != ":" }))
            XCTAssertTrue(error.description.contains(file), "\(error)")
        } catch {
            XCTFail("\(file): unexpected error type \(type(of: error)): \(error)")
        }
    }

    func testHeaderAndSectionDecodersSurviveHostileBytes() throws {
        let peakBefore = peakResidentBytes()
        var valid = sampleCheckpoint(step: 11).header
        valid.sections = [
            SectionEntry(name: "weights", layout: .float32Grouped, uncompressedSize: 384, compressedSize: 300, checksum: 1),
            SectionEntry(name: "adam_step", layout: .raw, uncompressedSize: 8, compressedSize: 17, checksum: 2),
        ]
        let header = valid.encoded()
        let frame = try ZstdCodec(level: 3, threads: 0).compress(sampleCheckpoint(step: 11).sections["weights"]!, file: "w")
        for iteration in 0..<4000 {
            let choice = iteration % 4
            let input: [UInt8]
            switch choice {
            case 0: input = (0..<random(0..<200)).map { _ in UInt8(random(0..<256)) }
            case 1: input = mutate(header)
            case 2: input = reseal(mutate(header))
            default: input = mutate(frame)
            }
            if choice == 3 {
                expectCleanOutcome("frame \(iteration)") {
                    _ = try ZstdCodec.decompress(input, expectedSize: random(0..<2) == 0 ? 384 : random(0..<1 << 20), file: "frame \(iteration)")
                }
            } else {
                expectCleanOutcome("header \(iteration)") { _ = try CheckpointHeader.decode(input, file: "header \(iteration)") }
            }
        }
        XCTAssertLessThan(peakResidentBytes() - peakBefore, 256 << 20, "no input made the decoders allocate hundreds of MB")
        XCTAssertGreaterThan(reasons.count, 15, "mutations reach many different checks: \(reasons.sorted())")
    }

    func testCheckpointDirectoryReaderSurvivesMutatedFiles() throws {
        let dir = temporaryDirectory("fuzz-ckpt")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(directory: dir, keepLast: 1, comm: SingleProcessCommunicator())
        let source = try store.save(sampleCheckpoint(step: 1))
        let files = try FileManager.default.contentsOfDirectory(atPath: source.path).sorted()
        let originals = try files.map { [UInt8](try Data(contentsOf: source.appendingPathComponent($0))) }
        var rejected = 0
        for iteration in 0..<300 {
            let victim = random(0..<files.count)
            var damaged = mutate(originals[victim])
            if files[victim] == CheckpointHeader.fileName && iteration % 2 == 0 { damaged = reseal(damaged) }
            try Data(damaged).write(to: source.appendingPathComponent(files[victim]))
            do {
                let checkpoint = try readCheckpoint(directory: source)
                // A mutation that survives must not have changed what the checksums cover.
                XCTAssertEqual(checkpoint.sections["weights"], sampleCheckpoint(step: 1).sections["weights"], "iteration \(iteration)")
            } catch let error as CheckpointError {
                rejected += 1
                XCTAssertTrue(error.description.contains(source.path), "\(error)")
            }
            try Data(originals[victim]).write(to: source.appendingPathComponent(files[victim]))
        }
        XCTAssertGreaterThan(rejected, 250, "almost every mutation is detected")
    }

    func testSafetensorsReaderSurvivesHostileBytes() throws {
        let peakBefore = peakResidentBytes()
        let dir = temporaryDirectory("fuzz-st")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("m.safetensors")
        try exportSafetensors(sampleCheckpoint(step: 3), to: url)
        let valid = [UInt8](try Data(contentsOf: url))
        let headerLength = Int(valid[0]) | Int(valid[1]) << 8
        let json = Array(valid[8..<(8 + headerLength)])
        let tokens = [
            "0", "-1", "1e30", "18446744073709551615", "9223372036854775807", "\"F32\"", "\"F64\"", "[]", "{}", "null", "true", "[[[[", "\"\\u0000\"",
        ]
        for iteration in 0..<3000 {
            var input: [UInt8]
            switch iteration % 3 {
            case 0:
                input = mutate(valid)
            case 1:
                // Keep the framing, mutate the JSON text with tokens a parser must survive.
                var text = json
                for _ in 0..<random(1..<4) {
                    let at = random(0..<text.count)
                    let end = min(text.count, at + random(0..<6))
                    text.replaceSubrange(at..<end, with: Array(tokens[random(0..<tokens.count)].utf8))
                }
                var writer = ByteWriter()
                writer.u64(UInt64(text.count))
                writer.raw(text)
                input = writer.bytes + valid[(8 + headerLength)...]
            default:
                input = (0..<random(0..<64)).map { _ in UInt8(random(0..<256)) }
            }
            expectCleanOutcome("st \(iteration)") { _ = try parseSafetensors(input, file: "st \(iteration)") }
        }
        XCTAssertLessThan(peakResidentBytes() - peakBefore, 256 << 20)
        XCTAssertGreaterThan(reasons.count, 10, "mutations reach many different checks: \(reasons.sorted())")
    }
}

/// Peak resident set size of this process so far (Linux reports ru_maxrss in KiB).
func peakResidentBytes() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return usage.ru_maxrss * 1024
}
