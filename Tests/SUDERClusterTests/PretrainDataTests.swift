import GenEvalMini
import World
import XCTest

@testable import ClusterRuntime
@testable import SUDERCluster

/// How pretraining draws the prompt task: clean pairs or imperfect renders, by
/// `pretrain.imperfect_prompts`, and a clear error for a dataset without imperfect renders.
final class PretrainDataTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("pretrain-data-\(UUID().uuidString)")
        try generateDataset(config: .smallTestWorld, outDir: directory) { _ in }
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    func data(_ overrides: [String]) throws -> PretrainData {
        try PretrainData(
            dataset: try DatasetReader(directory: directory),
            settings: PretrainSettings(try ResolvedConfig.resolve(file: nil, overrides: overrides)))
    }

    /// Kinds of the first 400 items of step 0, and the prompt-task sequences among them.
    func draw(_ data: PretrainData) throws -> (kinds: [PretrainKind: Int], promptTask: [TokenSequence]) {
        var kinds: [PretrainKind: Int] = [:], promptTask: [TokenSequence] = []
        for item in 0..<400 {
            let (kind, sequence) = try data.example(step: 0, item: item)
            kinds[kind, default: 0] += 1
            if sequence.tokens.contains(Vocabulary.promptMarker) { promptTask.append(sequence) }
        }
        return (kinds, promptTask)
    }

    func testImperfectShareChoosesWherePromptTaskImagesComeFrom() throws {
        let dataset = try DatasetReader(directory: directory)
        let imperfectImages = Set(try dataset.trainImperfect().map(\.image))
        let cleanImages = Set(try dataset.trainPairs().map(\.image))
        func image(_ sequence: TokenSequence) -> [Int32] { Array(sequence.tokens[2..<66]) }

        let all = try draw(data(["pretrain.imperfect_prompts=1"]))
        XCTAssertNil(all.kinds[.captionPromptStyle])
        XCTAssertGreaterThan(all.kinds[.promptImperfect] ?? 0, 20)
        XCTAssertTrue(all.promptTask.allSatisfy { imperfectImages.contains(image($0)) })

        let none = try draw(data(["pretrain.imperfect_prompts=0"]))
        XCTAssertNil(none.kinds[.promptImperfect])
        XCTAssertTrue(none.promptTask.allSatisfy { cleanImages.contains(image($0)) })

        let half = try draw(data(["pretrain.imperfect_prompts=0.5"]))
        let (imperfect, clean) = (half.kinds[.promptImperfect] ?? 0, half.kinds[.captionPromptStyle] ?? 0)
        XCTAssertGreaterThan(imperfect, 15); XCTAssertGreaterThan(clean, 15)
        XCTAssertEqual(imperfect + clean, half.promptTask.count)
    }

    func testDatasetWithoutImperfectRendersNamesTheFix() throws {
        try FileManager.default.removeItem(at: directory.appendingPathComponent(DatasetFile.trainImperfect))
        XCTAssertThrowsError(try data([])) {
            XCTAssertTrue("\($0)".contains("written before imperfect renders; run the data stage again"), "\($0)")
            XCTAssertTrue("\($0)".contains("pretrain.imperfect_prompts=0"), "\($0)")
        }
        XCTAssertEqual(try draw(data(["pretrain.imperfect_prompts=0"])).kinds[.promptImperfect], nil)
    }
}
