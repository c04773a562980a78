import XCTest

@testable import ClusterRuntime
@testable import SUDERCluster

final class CheckpointSafetensorsTests: XCTestCase {
    func testExportReadsBackWithNamesShapesAndValues() throws {
        let dir = temporaryDirectory("export")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(directory: dir, keepLast: 2, comm: SingleProcessCommunicator())
        let checkpoint = sampleCheckpoint(step: 7)
        try store.save(checkpoint)
        let out = dir.appendingPathComponent("model.safetensors")
        let exported = try exportSafetensors(checkpointDirectory: dir, to: out)
        XCTAssertEqual(exported.lastPathComponent, "step-000000000007")

        let file = try readSafetensors(out)
        let weights = try checkpoint.floats("weights")
        XCTAssertEqual(file.tensors.map(\.name), ["embedding", "head"])
        XCTAssertEqual(file.tensors.map(\.shape), [[8, 8], [32]])
        XCTAssertEqual(try file.floats("embedding"), Array(weights[0..<64]))
        XCTAssertEqual(try file.floats("head"), Array(weights[64..<96]))
        XCTAssertEqual(file.metadata["suder.step"], "7")
        XCTAssertEqual(file.metadata["suder.stage"], "pretrain")
        let raw = [UInt8](try Data(contentsOf: out))
        XCTAssertEqual((8 + Int(raw[0])) % 8, 0, "data section is 8-byte aligned")
    }

    /// An independent reader: Python's json + struct (numpy when available) must parse our file
    /// and see the same values.
    func testPythonParsesTheExport() throws {
        guard runTool("/usr/bin/env", ["python3", "-c", "pass"]) == 0 else { throw XCTSkip("python3 not available") }
        let dir = temporaryDirectory("python")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("model.safetensors")
        try exportSafetensors(sampleCheckpoint(step: 2), to: out)
        let weights = try sampleCheckpoint(step: 2).floats("weights")

        let script = """
            import json, struct, sys
            raw = open(sys.argv[1], 'rb').read()
            (n,) = struct.unpack('<Q', raw[:8])
            header = json.loads(raw[8:8 + n])
            data = raw[8 + n:]
            meta = header.pop('__metadata__')
            assert meta['suder.step'] == '2', meta
            out = []
            for name in sorted(header, key=lambda k: header[k]['data_offsets'][0]):
                t = header[name]
                assert t['dtype'] == 'F32'
                b, e = t['data_offsets']
                try:
                    import numpy as np
                    values = np.frombuffer(data[b:e], dtype='<f4').reshape(t['shape'])
                    total = float(values.astype(np.float64).sum())
                except ImportError:
                    count = (e - b) // 4
                    total = sum(struct.unpack('<%df' % count, data[b:e]))
                out.append('%s %s %.9g' % (name, 'x'.join(map(str, t['shape'])), total))
            print('\\n'.join(out))
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, out.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, output)
        let lines = output.split(separator: "\n").map { $0.split(separator: " ") }
        XCTAssertEqual(lines.map { String($0[0]) }, ["embedding", "head"])
        XCTAssertEqual(lines.map { String($0[1]) }, ["8x8", "32"])
        let sums = [weights[0..<64], weights[64..<96]].map { $0.reduce(0.0) { $0 + Double($1) } }
        for (line, expected) in zip(lines, sums) {
            XCTAssertEqual(Double(line[2])!, expected, accuracy: 1e-6)
        }
    }

    func testReaderRejectsMalformedFiles() throws {
        let dir = temporaryDirectory("badst")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        func file(_ json: String, data: Int) -> [UInt8] {
            var writer = ByteWriter()
            writer.u64(UInt64(json.utf8.count))
            writer.raw(Array(json.utf8))
            writer.raw([UInt8](repeating: 0, count: data))
            return writer.bytes
        }
        let cases: [(String, [UInt8], String)] = [
            ("short", [1, 2, 3], "header length needs 8 bytes"),
            ("huge header length", [255, 255, 255, 255, 255, 255, 255, 127, 0], "header length is"),
            ("not json", file("{nope", data: 0), "not valid JSON"),
            ("array", file("[1]", data: 0), "does not start with '{'"),
            ("bad dtype", file(#"{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#, data: 4), "unknown dtype"),
            ("size mismatch", file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, data: 4), "needs 8 bytes"),
            ("past end", file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: 4), "outside"),
            ("hole", file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: 8), "hole or overlap"),
            ("trailing data", file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: 8), "cover 4 bytes"),
            ("float dim", file(#"{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}"#, data: 4), "bad dimension"),
            ("bool dim", file(#"{"a":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}"#, data: 4), "bad dimension"),
            ("overflowing shape", file(#"{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, data: 8), "overflows"),
            ("metadata not strings", file(#"{"__metadata__":{"a":1}}"#, data: 0), "not a string"),
        ]
        for (what, bytes, expected) in cases {
            let url = dir.appendingPathComponent("\(what).safetensors")
            try Data(bytes).write(to: url)
            XCTAssertThrowsError(try readSafetensors(url), what) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(what): \(error)")
                XCTAssertTrue("\(error)".contains(url.lastPathComponent), "\(what): \(error)")
            }
        }
        // The valid sibling of the cases above reads.
        let good = dir.appendingPathComponent("good.safetensors")
        try Data(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: 4)).write(to: good)
        XCTAssertEqual(try readSafetensors(good).tensors.first?.shape, [1])
    }
}
