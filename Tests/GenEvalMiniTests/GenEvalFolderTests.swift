import XCTest

@testable import GenEvalMini
@testable import World

/// The GenEval sample-folder reader: a folder that lacks prompts or images must not score better
/// than the complete one, and hostile folders end in a clean error, never a crash or a hang.
final class GenEvalFolderTests: XCTestCase {
    private func temporaryFolder(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("suder-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    private func circleImage() -> RGBImage {
        renderScene(Scene(objects: [SceneObject(shape: .circle, color: .red, x: 8, y: 8, size: 12)]), canvasSize: 32)
    }

    /// Four single-object prompts, four images each: the circles are drawn right, the rest wrong
    /// (a circle where a square, triangle or cross was asked). Overall 0.25 in one category.
    private func halfWrongFolder() throws -> (folder: URL, metadata: [MetadataRecord]) {
        let folder = try temporaryFolder("geneval-folder")
        let metadata = [ShapeClass.circle, .square, .triangle, .cross].map { MetadataRecord.singleObject($0) }
        for (index, record) in metadata.enumerated() {
            try writeGenEvalSamples(record: record, images: Array(repeating: circleImage(), count: 4), index: index, outDir: folder)
        }
        return (folder, metadata)
    }

    func testACompleteFolderScoresEveryImage() throws {
        let (folder, metadata) = try halfWrongFolder()
        let summary = try scoreGenEvalFolder(images: folder, metadata: metadata)
        XCTAssertEqual(summary.imageCount, 16)
        XCTAssertEqual(summary.overall, 0.25, accuracy: 1e-12)
    }

    func testMissingFoldersAreAnErrorNamingThem() throws {
        let (folder, metadata) = try halfWrongFolder()
        for index in 1...3 { try FileManager.default.removeItem(at: folder.appendingPathComponent(String(format: "%05d", index))) }
        XCTAssertThrowsError(try scoreGenEvalFolder(images: folder, metadata: metadata)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("no folder 00001 for metadata line 2"), message)
            XCTAssertTrue(message.contains("no folder 00003 for metadata line 4"), message)
        }
        // Allowed explicitly: the rest is scored and the missing prompts are counted.
        let (summary, missing) = try scoreGenEvalFolder(images: folder, metadata: metadata, allowMissing: true)
        XCTAssertEqual(summary.imageCount, 4)
        XCTAssertEqual(missing.prompts, [1, 2, 3])
    }

    func testMissingImagesAreAnErrorNamingTheFolder() throws {
        let (folder, metadata) = try halfWrongFolder()
        for k in 1...3 { try FileManager.default.removeItem(at: folder.appendingPathComponent("00002/samples/000\(k).png")) }
        try FileManager.default.removeItem(at: folder.appendingPathComponent("00003/samples"))
        XCTAssertThrowsError(try scoreGenEvalFolder(images: folder, metadata: metadata)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("00002/samples has 1 images, other folders 4"), message)
            XCTAssertTrue(message.contains("00003/samples has 0 images"), message)
        }
        let (summary, missing) = try scoreGenEvalFolder(images: folder, metadata: metadata, allowMissing: true)
        XCTAssertEqual(summary.imageCount, 9)
        XCTAssertEqual(missing.prompts, [3])
        XCTAssertEqual(missing.images, 7)
    }

    func testAFIFOOrDirectoryAsAnImageIsNamed() throws {
        let (folder, metadata) = try halfWrongFolder()
        let sample = folder.appendingPathComponent("00000/samples/0000.png")
        try FileManager.default.removeItem(at: sample)
        XCTAssertEqual(mkfifo(sample.path, 0o644), 0)
        XCTAssertThrowsError(try scoreGenEvalFolder(images: folder, metadata: metadata)) { error in
            XCTAssertTrue("\(error)".contains("0000.png: is a FIFO, not a regular file"), "\(error)")
        }
        try FileManager.default.removeItem(at: sample)
        try FileManager.default.createDirectory(at: sample, withIntermediateDirectories: false)
        XCTAssertThrowsError(try readPNG(sample)) { XCTAssertTrue("\($0)".contains("is a directory"), "\($0)") }
        XCTAssertThrowsError(try readPNG(URL(fileURLWithPath: "/dev/zero"))) { XCTAssertTrue("\($0)".contains("character device"), "\($0)") }
    }

    func testAHugeMetadataLineIsRefusedBeforeParsing() throws {
        let line = "{\"tag\": \"single_object\", \"prompt\": \"" + String(repeating: "[", count: 8 << 20) + "\"}"
        let started = Date()
        XCTAssertThrowsError(try parseMetadataLines("\n" + line + "\n")) { error in
            XCTAssertTrue("\(error)".contains("metadata line 2: \(line.utf8.count) bytes, more than the 65536 allowed"), "\("\(error)".prefix(200))")
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 2)
    }

    /// Random folder trees built from a valid one: folders removed, renamed, duplicated with
    /// leading zeros, made files; metadata and PNG files truncated, emptied, swapped for FIFOs,
    /// directories or junk. Each must end in a summary or a `WorldError`, quickly.
    func testHostileFoldersEndInASummaryOrANamedError() throws {
        var seeded = SplitMix64RNG(seed: 20_261_129)
        func random(_ range: Range<Int>) -> Int { Int.random(in: range, using: &seeded) }
        let files = FileManager.default
        var outcomes: [String: Int] = [:]
        let started = Date()
        for iteration in 0..<80 {
            let (folder, metadata) = try halfWrongFolder()
            for _ in 0..<random(1..<4) {
                let index = String(format: "%05d", random(0..<4))
                let prompt = folder.appendingPathComponent(index)
                let sample = prompt.appendingPathComponent("samples/000\(random(0..<4)).png")
                let meta = prompt.appendingPathComponent("metadata.jsonl")
                switch random(0..<10) {
                case 0: try? files.removeItem(at: prompt)
                case 1: try? files.moveItem(at: prompt, to: folder.appendingPathComponent("0" + index))
                case 2: try? files.moveItem(at: prompt, to: folder.appendingPathComponent(String(random(4..<99_999)) + "9999999999999999999"))
                case 3: try? files.removeItem(at: meta); _ = mkfifo(meta.path, 0o644)
                case 4: try? Data("{\"tag\": \"counting\"}\n{}".utf8).write(to: meta)
                case 5: try? Data((0..<random(0..<64)).map { _ in UInt8(random(0..<256)) }).write(to: sample)
                case 6:
                    if let bytes = try? Data(contentsOf: sample) { try? bytes.prefix(random(0..<bytes.count)).write(to: sample) }
                case 7: try? files.removeItem(at: sample); try? files.createDirectory(at: sample, withIntermediateDirectories: true)
                case 8: try? files.removeItem(at: prompt); _ = files.createFile(atPath: prompt.path, contents: Data("x".utf8))
                default: try? files.removeItem(at: prompt.appendingPathComponent("samples"))
                }
            }
            let metadataGiven = iteration % 3 != 0
            let one = Date()
            do {
                let (summary, _) = try scoreGenEvalFolder(images: folder, metadata: metadataGiven ? metadata : nil, allowMissing: iteration % 2 == 0)
                XCTAssertLessThanOrEqual(summary.imageCount, 16)
                outcomes["scored", default: 0] += 1
            } catch let error as WorldError {
                XCTAssertFalse("\(error)".isEmpty)
                outcomes[String("\(error)".prefix(while: { $0 != " " })), default: 0] += 1
            } catch {
                XCTFail("iteration \(iteration): unexpected error type \(type(of: error)): \(error)")
            }
            XCTAssertLessThan(Date().timeIntervalSince(one), 2, "iteration \(iteration)")
        }
        XCTAssertGreaterThan(outcomes["scored"] ?? 0, 5, "\(outcomes)")
        XCTAssertGreaterThan(outcomes.count, 2, "\(outcomes)")
        XCTAssertLessThan(Date().timeIntervalSince(started), 60)
    }
}
