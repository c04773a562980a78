import XCTest

@testable import World

/// Binary formats, PNG, the VQ codebook and hostile files.
final class FileFormatTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("world-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func sampleShard() throws -> URL {
        var writer = TokenShardWriter(kind: "train_pairs", fieldCount: 2, vocabularySize: 50)
        writer.append([5, 6, 7], [40, 41, 42, 43])
        writer.append([8], [44, 45, 46, 47])
        writer.append([], [49, 49, 49, 49])
        let url = directory.appendingPathComponent("shard.bin")
        try writer.write(to: url)
        return url
    }

    func expectMalformed(_ body: () throws -> Void, containing text: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            XCTAssertTrue("\(error)".contains(text), "\(error) should mention '\(text)'", file: file, line: line)
        }
    }

    func testShardRoundTrip() throws {
        let shard = try readTokenShard(try sampleShard(), kind: "train_pairs", fieldCount: 2, vocabularySize: 50)
        XCTAssertEqual(shard.recordCount, 3)
        XCTAssertEqual(Array(shard.field(0, 0)), [5, 6, 7])
        XCTAssertEqual(Array(shard.field(1, 1)), [44, 45, 46, 47])
        XCTAssertEqual(Array(shard.field(2, 0)), [])
    }

    func testShardRejectsTruncationWrongMagicAndHostileHeaders() throws {
        let url = try sampleShard()
        let bytes = try Data(contentsOf: url)
        let bad = directory.appendingPathComponent("bad.bin")

        try bytes.prefix(bytes.count - 3).write(to: bad)
        expectMalformed({ _ = try readTokenShard(bad) }, containing: "truncated?")
        try bytes.prefix(20).write(to: bad)
        expectMalformed({ _ = try readTokenShard(bad) }, containing: "shorter than the 56-byte header")

        var wrongMagic = bytes; wrongMagic[0] = UInt8(ascii: "X")
        try wrongMagic.write(to: bad)
        expectMalformed({ _ = try readTokenShard(bad) }, containing: "wrong magic")

        // A record count near 2^64 must be refused before anything is allocated.
        var hostile = bytes
        for i in 16..<24 { hostile[i] = 0xFF }
        try hostile.write(to: bad)
        expectMalformed({ _ = try readTokenShard(bad) }, containing: "header claims")

        // Offsets out of order.
        var disordered = bytes
        disordered[56 + 8] = 9  // offset 1 = 9 > offset 2 = 7
        try disordered.write(to: bad)
        expectMalformed({ _ = try readTokenShard(bad) }, containing: "out of order")

        // A token outside the declared vocabulary.
        var outside = bytes
        outside[outside.count - 4] = 60
        try outside.write(to: bad)
        expectMalformed({ _ = try readTokenShard(bad) }, containing: "outside the vocabulary")

        expectMalformed({ _ = try readTokenShard(url, kind: "train_probes") }, containing: "kind 'train_pairs', expected 'train_probes'")
        expectMalformed({ _ = try readTokenShard(url, vocabularySize: 51) }, containing: "vocabulary size 50, expected 51")
        XCTAssertThrowsError(try readTokenShard(directory.appendingPathComponent("absent.bin"))) { error in
            XCTAssertEqual(error as? WorldError, .missingFile(path: directory.appendingPathComponent("absent.bin").path))
        }
    }

    func testABadMetadataLineNamesTheFileAndTheLine() throws {
        let url = directory.appendingPathComponent("metadata.jsonl")
        let good = #"{"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}"#
        try Data("\(good)\ngarbage\n".utf8).write(to: url)
        XCTAssertThrowsError(try readMetadataFile(url)) { error in
            XCTAssertEqual("\(error)", "malformed file \(url.path): metadata line 2: not a JSON object")
        }
    }

    func testPNGRoundTripAndCorruption() throws {
        var generator = SplitMix64RNG(seed: 1)
        var image = RGBImage(width: 7, height: 5, fill: (0, 0, 0))
        for i in image.pixels.indices { image.pixels[i] = UInt8.random(in: 0...255, using: &generator) }
        let url = directory.appendingPathComponent("image.png")
        try writePNG(image, to: url)
        XCTAssertEqual(try readPNG(url), image)

        var bytes = encodePNG(image)
        bytes[bytes.count - 20] ^= 0xFF  // inside IDAT: CRC no longer matches
        XCTAssertThrowsError(try decodePNG(bytes)) { XCTAssertTrue("\($0)".contains("CRC mismatch"), "\($0)") }
        XCTAssertThrowsError(try decodePNG(Array(encodePNG(image).prefix(40)))) { XCTAssertTrue("\($0)".contains("PNG"), "\($0)") }
        XCTAssertThrowsError(try decodePNG([1, 2, 3])) { XCTAssertTrue("\($0)".contains("bad signature")) }

        // A header claiming 100000 x 100000 pixels is refused before anything is inflated.
        var huge = Array(encodePNG(image).prefix(8))
        huge += chunk("IHDR", [0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0, 8, 2, 0, 0, 0]) + chunk("IEND", [])
        XCTAssertThrowsError(try decodePNG(huge)) { XCTAssertTrue("\($0)".contains("size 100000x100000"), "\($0)") }
    }

    func testHostileCodebookHeaderIsRefused() throws {
        let url = directory.appendingPathComponent("codebook.bin")
        try writeCodebook(VQCodebook(patchSize: 2, codeCount: 2, vectors: [Float](repeating: 0.5, count: 24)), to: url)
        var bytes = try Data(contentsOf: url)
        for i in 12..<16 { bytes[i] = 0xFF }  // 4 billion codes
        try bytes.write(to: url)
        expectMalformed({ _ = try readCodebook(from: url) }, containing: "code count 4294967295 outside")
    }

    func testPNGDecodesEveryRowFilter() throws {
        // Hand-filtered 3x5 RGB rows, one per filter type, against the unfiltered pixels.
        let width = 3, height = 5, stride = 9
        var generator = SplitMix64RNG(seed: 2)
        let pixels = (0..<(width * height * 3)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        var raw: [UInt8] = []
        for row in 0..<height {
            let filter = UInt8(row)
            raw.append(filter)
            for i in 0..<stride {
                let x = pixels[row * stride + i]
                let left = i >= 3 ? pixels[row * stride + i - 3] : 0
                let up = row > 0 ? pixels[(row - 1) * stride + i] : 0
                let upLeft = (row > 0 && i >= 3) ? pixels[(row - 1) * stride + i - 3] : 0
                let predictor: UInt8
                switch filter {
                case 0: predictor = 0
                case 1: predictor = left
                case 2: predictor = up
                case 3: predictor = UInt8((Int(left) + Int(up)) / 2)
                default:
                    let p = Int(left) + Int(up) - Int(upLeft)
                    let pa = abs(p - Int(left)), pb = abs(p - Int(up)), pc = abs(p - Int(upLeft))
                    predictor = (pa <= pb && pa <= pc) ? left : (pb <= pc ? up : upLeft)
                }
                raw.append(x &- predictor)
            }
        }
        // Swap the encoder's IDAT for this one by re-encoding with the same header.
        let reference = encodePNG(RGBImage(width: width, height: height, pixels: pixels))
        let idat = zlibCompress(raw)
        var png = Array(reference.prefix(8 + 25))  // signature + IHDR chunk
        png += chunk("IDAT", idat) + chunk("IEND", [])
        XCTAssertEqual(try decodePNG(png).pixels, pixels)
    }

    func testCodebookFileAndNearestSearchAgree() throws {
        var generator = SplitMix64RNG(seed: 4)
        let scenes = WorldConfig().sceneGenerator
        let images = (0..<200).map { i in
            renderScene(scenes.scene(for: promptSpace(Category.allCases[i % 6]).randomElement(using: &generator)!, using: &generator), canvasSize: 32)
        }
        let codebook = learnCodebook(images: images, settings: KMeansSettings(maximumCodes: 300, patchSize: 4, iterations: 3, maximumPatches: 1000))
        XCTAssertLessThanOrEqual(codebook.codeCount, 300)
        XCTAssertEqual((codebook.codeCount - 1) % 8, 0)
        let url = directory.appendingPathComponent("codebook.bin")
        try writeCodebook(codebook, to: url)
        XCTAssertEqual(try readCodebook(from: url), codebook)

        // The fast search picks a code at the same distance as the reference search.
        let search = NearestCodeSearch(codebook)
        var values = [Float](repeating: 0, count: codebook.dimension)
        for image in images.prefix(20) {
            for patch in 0..<64 {
                values.withUnsafeMutableBufferPointer { codebook.patch(of: image, patchX: patch % 8, patchY: patch / 8, into: $0.baseAddress!) }
                let fast = values.withUnsafeBufferPointer { search.nearest($0.baseAddress!) }
                let reference = values.withUnsafeBufferPointer { codebook.nearestCodeReference($0.baseAddress!) }
                func distance(_ code: Int) -> Float {
                    (0..<codebook.dimension).reduce(0) { $0 + pow(codebook.vectors[code * codebook.dimension + $1] - values[$1], 2) }
                }
                XCTAssertEqual(distance(fast), distance(reference), accuracy: 1e-5)
            }
        }

        // Object interiors and background decode exactly: the flat codes are pinned.
        let encoder = VQEncoder(codebook: codebook)
        let flat = RGBImage(width: 32, height: 32, fill: ObjectColor.purple.rgb)
        XCTAssertEqual(codebook.decode(codes: encoder.encode(flat)), flat)

        var bytes = try Data(contentsOf: url)
        try bytes.prefix(bytes.count - 4).write(to: url)
        expectMalformed({ _ = try readCodebook(from: url) }, containing: "bytes, expected")
        bytes.replaceSubrange(0..<8, with: Array("SUDERTOK".utf8))
        try bytes.write(to: url)
        expectMalformed({ _ = try readCodebook(from: url) }, containing: "wrong magic")
    }

    func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
        func bigEndian(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
        let typed = Array(type.utf8) + body
        return bigEndian(UInt32(body.count)) + typed + bigEndian(crc32Of(typed))
    }
}
