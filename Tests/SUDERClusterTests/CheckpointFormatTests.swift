import CZstd
import XCTest

@testable import ClusterRuntime

final class CheckpointFormatTests: XCTestCase {
    /// zstd's frame checksum is the low 32 bits of XXH64 (seed 0) of the content, so every zstd
    /// frame is a test vector for our XXH64. Lengths cover every tail path (< 32, 8/4/1-byte tails).
    func testXXHash64MatchesZstdFrameChecksum() throws {
        XCTAssertEqual(xxhash64([]), 0xEF46_DB37_51D8_E999)
        var generator = SplitMix64(seed: 9)
        let codec = ZstdCodec(level: 1, threads: 0)
        for length in Array(0...80) + [1000, 4096, 65_537] {
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            let frame = try codec.compress(bytes, file: "test")
            let frameChecksum = frame.suffix(4).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            XCTAssertEqual(UInt32(truncatingIfNeeded: xxhash64(bytes)), frameChecksum, "length \(length)")
        }
    }

    func testByteGroupingRoundTripsIncludingAPartialTail() {
        var generator = SplitMix64(seed: 2)
        for length in [0, 1, 3, 4, 7, 64, 1001] {
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            let grouped = byteGrouped(bytes, elementSize: 4)
            XCTAssertEqual(byteUngrouped(grouped, elementSize: 4), bytes)
            if length >= 8 { XCTAssertEqual(grouped[1], bytes[4], "second element's first byte sits next to the first's") }
        }
    }

    func testZstdThreadsFallBackOrAreUsed() throws {
        let codec = ZstdCodec(level: 3, threads: 2)
        // Debian's libzstd is built multithreaded; a single-threaded one would report 0.
        XCTAssertTrue(codec.effectiveThreads == 2 || codec.effectiveThreads == 0)
        let bytes = [UInt8](repeating: 7, count: 1 << 20)
        let frame = try codec.compress(bytes, file: "test")
        XCTAssertEqual(try ZstdCodec.decompress(frame, expectedSize: bytes.count, file: "test"), bytes)
    }

    func testDecompressRejectsWrongDeclaredSize() throws {
        let frame = try ZstdCodec(level: 1, threads: 0).compress([1, 2, 3, 4], file: "test")
        XCTAssertThrowsError(try ZstdCodec.decompress(frame, expectedSize: 5, file: "f.zst")) { error in
            XCTAssertTrue("\(error)".hasPrefix("f.zst: "), "\(error)")
        }
        XCTAssertThrowsError(try ZstdCodec.decompress(frame + [0], expectedSize: 4, file: "f.zst"))
    }

    func testFiniteCheckFindsEverySpecialValue() {
        var generator = SplitMix64(seed: 5)
        var values = (0..<1037).map { _ in Float(generator.nextGaussian()) }
        let specials: [Float] = [.nan, .infinity, -.infinity, .signalingNaN, .greatestFiniteMagnitude, -.greatestFiniteMagnitude, .leastNonzeroMagnitude, 0]
        for special in specials {
            for position in [0, 500, 1036] {
                let saved = values[position]
                values[position] = special
                values.withUnsafeBufferPointer { buffer in
                    XCTAssertEqual(allFinite(buffer), special.isFinite, "\(special) at \(position)")
                    XCTAssertEqual(firstNonFiniteIndex(buffer), special.isFinite ? nil : position, "\(special) at \(position)")
                }
                values[position] = saved
            }
        }
        XCTAssertTrue(allFinite([]))
        XCTAssertThrowsError(try checkFinite([1, 2, .nan], what: "suder step 7 generation gradient")) { error in
            XCTAssertEqual("\(error)", "suder step 7 generation gradient: element 2 is nan; stopping before it reaches a checkpoint")
        }
    }

    func testHeaderRoundTripsAndRejectsTamperedLengths() throws {
        var header = sampleCheckpoint(step: 3).header
        header.sections = [SectionEntry(name: "weights", layout: .float32Grouped, uncompressedSize: 384, compressedSize: 300, checksum: 42)]
        let bytes = header.encoded()
        XCTAssertEqual(try CheckpointHeader.decode(bytes, file: "h"), header)

        // A section that claims more than zstd could expand its compressed bytes to.
        var greedy = header
        greedy.sections[0].uncompressedSize = 1 << 40
        greedy.sections[0].compressedSize = 10
        XCTAssertThrowsError(try CheckpointHeader.decode(greedy.encoded(), file: "h")) { error in
            XCTAssertTrue("\(error)".contains("more than zstd can expand"), "\(error)")
        }
        // A tensor outside the weights section.
        var outside = header
        outside.tensors[1].byteOffset = 380
        XCTAssertThrowsError(try CheckpointHeader.decode(outside.encoded(), file: "h")) { error in
            XCTAssertTrue("\(error)".contains("runs past"), "\(error)")
        }
        // A path in a section name.
        var sneaky = header
        sneaky.sections[0].name = "../weights"
        XCTAssertThrowsError(try CheckpointHeader.decode(sneaky.encoded(), file: "h"))
    }
}
