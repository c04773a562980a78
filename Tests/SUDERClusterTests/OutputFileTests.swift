import Foundation
import XCTest

@testable import ClusterRuntime
@testable import SUDERCluster
@testable import World

/// The files `suder report` and `suder eval geneval` write: a rerun replaces its own earlier file
/// and nothing else, never a run's own files, and a destination that cannot be written is refused
/// before any run is read or any image scored.
final class OutputFileTests: XCTestCase {
    var directory: URL!
    var run: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("suder-outputs-\(UUID().uuidString)")
        run = directory.appendingPathComponent("run")
        try FileManager.default.createDirectory(at: run.appendingPathComponent("pretrain/step-000000000100"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: run.appendingPathComponent("eval"), withIntermediateDirectories: true)
        try Data("model.d_model: 16\n".utf8).write(to: run.appendingPathComponent("config.yaml"))
        try Data("step-000000000100\n".utf8).write(to: run.appendingPathComponent("pretrain/latest"))
        try Data("{\"split\": \"dev\"}\n".utf8).write(to: run.appendingPathComponent("eval/summary.json"))
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// Every file under `url` and its bytes: what a refused command must leave as it was.
    func snapshot(_ url: URL) throws -> [String: Data] {
        var files: [String: Data] = [:]
        for case let path as String in FileManager.default.enumerator(atPath: url.path) ?? FileManager.DirectoryEnumerator() {
            let file = url.appendingPathComponent(path)
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: file.path, isDirectory: &isDirectory), !isDirectory.boolValue {
                files[path] = try Data(contentsOf: file)
            }
        }
        return files
    }

    func text(_ url: URL) throws -> String { try String(contentsOf: url, encoding: .utf8) }

    func testReportNeverWritesARunsOwnFilesNotEvenWithForce() throws {
        let before = try snapshot(run)
        for path in ["config.yaml", "eval/summary.json", "pretrain/latest", "eval/report.md", "LOCK"] {
            let target = run.appendingPathComponent(path)
            for force in [false, true] {
                XCTAssertThrowsError(try runReportCommand(runDirectories: [run], out: target, force: force)) { error in
                    XCTAssertTrue("\(error)".hasPrefix("--out \(target.path) is "), "\(error)")
                    XCTAssertTrue("\(error)".hasSuffix("; write it elsewhere"), "\(error)")
                }
                XCTAssertThrowsError(try runReportCommand(runDirectories: [run], out: nil, html: target, force: force)) { error in
                    XCTAssertTrue("\(error)".hasPrefix("--html \(target.path) is "), "\(error)")
                }
            }
        }
        XCTAssertThrowsError(try runReportCommand(runDirectories: [run], out: run.appendingPathComponent("config.yaml"), force: true)) { error in
            XCTAssertEqual(
                "\(error)",
                "--out \(run.path)/config.yaml is config.yaml of the run directory \(run.path), which only its stages write; write it elsewhere")
        }
        XCTAssertEqual(try snapshot(run), before)
        // A report beside the stage folders is the run directory's user's to write.
        try runReportCommand(runDirectories: [run], out: run.appendingPathComponent("report.md"))
        XCTAssertEqual(try text(run.appendingPathComponent("report.md")), try makeReport(runDirectories: [run]))
    }

    func testReportReplacesItsEarlierReportButAnyOtherFileOnlyWithForce() throws {
        let out = directory.appendingPathComponent("report.md")
        let html = directory.appendingPathComponent("report.html")
        try Data((markdownReportKind.signature + "an earlier report\n").utf8).write(to: out)
        try Data((htmlReportKind.signature + "an earlier report\n").utf8).write(to: html)
        try runReportCommand(runDirectories: [run], out: out, html: html)
        XCTAssertEqual(try text(out), try makeReport(runDirectories: [run]))
        XCTAssertEqual(try text(html), try makeHTMLReport(runDirectories: [run]))

        let notes = directory.appendingPathComponent("notes.md")
        try Data("my notes\n".utf8).write(to: notes)
        XCTAssertThrowsError(try runReportCommand(runDirectories: [run], out: notes)) { error in
            XCTAssertEqual(
                "\(error)",
                "--out \(notes.path) exists and is not an earlier Markdown report (those begin with \"# SUDER report\\n\"); give --force to replace it")
        }
        XCTAssertThrowsError(try runReportCommand(runDirectories: [run], out: nil, html: notes)) { error in
            XCTAssertTrue("\(error)".hasPrefix("--html \(notes.path) exists and is not an earlier HTML report"), "\(error)")
        }
        XCTAssertEqual(try text(notes), "my notes\n")
        try runReportCommand(runDirectories: [run], out: notes, force: true)
        XCTAssertEqual(try text(notes), try makeReport(runDirectories: [run]))

        XCTAssertThrowsError(try runReportCommand(runDirectories: [run], out: directory, force: true)) { error in
            XCTAssertEqual("\(error)", "--out \(directory.path) is a directory; give a file name")
        }
        XCTAssertThrowsError(try runReportCommand(runDirectories: [run], out: out, html: out)) { error in
            XCTAssertEqual("\(error)", "--out and --html name the same file \(out.path)")
        }
    }

    /// The runs named do not exist, so only a check that comes before reading them can answer.
    func testUnwritableReportDestinationsAreRefusedBeforeAnyRunIsRead() throws {
        let missingRun = directory.appendingPathComponent("no-run")
        let file = directory.appendingPathComponent("file")
        try Data("x".utf8).write(to: file)
        let missingDirectory = directory.appendingPathComponent("missing")
        for (target, problem) in [
            (missingDirectory.appendingPathComponent("r.md"), "the directory \(missingDirectory.path) does not exist"),
            (file.appendingPathComponent("r.md"), "\(file.path) is a file, not a directory"),
        ] {
            XCTAssertThrowsError(try runReportCommand(runDirectories: [missingRun], out: target)) { error in
                XCTAssertEqual("\(error)", "--out \(target.path): \(problem)")
            }
            XCTAssertThrowsError(try runReportCommand(runDirectories: [missingRun], out: nil, html: target, force: true)) { error in
                XCTAssertEqual("\(error)", "--html \(target.path): \(problem)")
            }
        }
        // A bad --out stops the command before a good --html is written.
        let html = directory.appendingPathComponent("r.html")
        XCTAssertThrowsError(try runReportCommand(runDirectories: [run], out: file.appendingPathComponent("r.md"), html: html))
        XCTAssertFalse(FileManager.default.fileExists(atPath: html.path))
    }

    /// One prompt with two images in GenEval's layout, and its metadata file.
    func sampleFolder() throws -> (metadata: URL, images: URL) {
        let images = directory.appendingPathComponent("samples")
        let record = MetadataRecord.singleObject(.circle)
        let circle = renderScene(Scene(objects: [SceneObject(shape: .circle, color: .red, x: 8, y: 8, size: 12)]), canvasSize: 32)
        try writeGenEvalSamples(record: record, images: [circle, circle], index: 0, outDir: images)
        let metadata = directory.appendingPathComponent("metadata.jsonl")
        try writeMetadataFile([record], to: metadata)
        return (metadata, images)
    }

    func testGenEvalSummaryReplacesOnlyAnEarlierSummaryAndIsCheckedBeforeScoring() throws {
        let (metadata, images) = try sampleFolder()
        let summary = directory.appendingPathComponent("summary.json")
        try runGenEvalFolderCommand(metadata: metadata, images: images, summaryOut: summary)
        try runGenEvalFolderCommand(metadata: metadata, images: images, summaryOut: summary)
        XCTAssertTrue(try text(summary).hasPrefix(GenEvalSummary.jsonStart))

        let before = try snapshot(run)
        for path in ["config.yaml", "eval/summary.json"] {
            let target = run.appendingPathComponent(path)
            XCTAssertThrowsError(try runGenEvalFolderCommand(metadata: metadata, images: images, summaryOut: target, force: true)) { error in
                XCTAssertTrue("\(error)".hasPrefix("--summary \(target.path) is "), "\(error)")
                XCTAssertTrue("\(error)".hasSuffix("which only its stages write; write it elsewhere"), "\(error)")
            }
        }
        XCTAssertEqual(try snapshot(run), before)
        let notes = directory.appendingPathComponent("notes.json")
        try Data("{}\n".utf8).write(to: notes)
        XCTAssertThrowsError(try runGenEvalFolderCommand(metadata: metadata, images: images, summaryOut: notes)) { error in
            XCTAssertTrue("\(error)".hasPrefix("--summary \(notes.path) exists and is not an earlier GenEval summary"), "\(error)")
        }
        XCTAssertEqual(try text(notes), "{}\n")
        try runGenEvalFolderCommand(metadata: metadata, images: images, summaryOut: notes, force: true)
        XCTAssertEqual(try text(notes), try text(summary))

        // The metadata file does not exist: only a check before reading and scoring can answer.
        let unwritable = directory.appendingPathComponent("missing/summary.json")
        XCTAssertThrowsError(
            try runGenEvalFolderCommand(metadata: directory.appendingPathComponent("none.jsonl"), images: images, summaryOut: unwritable)
        ) { error in
            XCTAssertEqual("\(error)", "--summary \(unwritable.path): the directory \(unwritable.deletingLastPathComponent().path) does not exist")
        }
    }
}
