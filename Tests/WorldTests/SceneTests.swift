import GenEvalMini
import XCTest

@testable import World

/// Scenes, the renderer, the detector, captions and probes.
final class SceneTests: XCTestCase {
    let config = WorldConfig()

    /// A few scenes of every prompt in every category.
    func sampleScenes(perPrompt: Int = 2, seed: UInt64 = 11) -> [(MetadataRecord, Scene)] {
        var generator = SplitMix64RNG(seed: seed)
        let scenes = config.sceneGenerator
        return Category.allCases.flatMap { category in
            promptSpace(category).prefix(60).flatMap { record in
                (0..<perPrompt).map { _ in (record, scenes.scene(for: record, using: &generator)) }
            }
        }
    }

    func testGeneratedScenesSatisfyTheirRecordsAndKeepObjectsApart() {
        for (record, scene) in sampleScenes() {
            XCTAssertEqual(scene.objects.count, record.include.map(\.count).reduce(0, +))
            for object in scene.objects {
                XCTAssertTrue(object.x >= 1 && object.y >= 1 && object.x + object.size <= 31 && object.y + object.size <= 31)
                XCTAssertTrue((object.x - 1) % config.positionStep == 0 && (object.y - 1) % config.positionStep == 0)
            }
            for (i, a) in scene.objects.enumerated() {
                for b in scene.objects[(i + 1)...] {
                    let gapX = max(b.x - (a.x + a.size), a.x - (b.x + b.size))
                    let gapY = max(b.y - (a.y + a.size), a.y - (b.y + b.size))
                    XCTAssertTrue(gapX >= 4 || gapY >= 4, "objects closer than a patch")
                }
            }
        }
    }

    func testDetectorIsExactOnCleanRenders() {
        for (record, scene) in sampleScenes() {
            let image = renderScene(scene, canvasSize: 32)
            let detections = detectObjects(in: image)
            XCTAssertEqual(detections.count, scene.objects.count, record.prompt)
            for object in scene.objects {
                XCTAssertTrue(
                    detections.contains { $0.shape == object.shape && $0.color == object.color && $0.box == object.box && $0.confidence == 1 },
                    "\(object) not found in \(detections)")
            }
            let verdict = evaluateGenEval(image: image, record: record)
            XCTAssertTrue(verdict.correct, "\(record.prompt): \(verdict.reason)")
        }
    }

    func testDetectorIgnoresSpecksAndFindsNothingOnBackground() {
        var image = RGBImage(width: 32, height: 32, fill: backgroundRGB)
        XCTAssertEqual(detectObjects(in: image).count, 0)
        for offset in [3 * (5 * 32 + 5), 3 * (5 * 32 + 6)] { image.pixels[offset] = 255 }  // a 2-pixel red speck
        XCTAssertEqual(detectObjects(in: image).count, 0)
    }

    func testCanonicalCaptionsAreCorrectAndParse() throws {
        for (_, scene) in sampleScenes(perPrompt: 1) {
            let caption = canonicalCaption(scene)
            XCTAssertTrue(captionIsCorrect(caption, scene: scene), caption)
            XCTAssertNoThrow(try parseCaption(caption))
        }
    }

    func testCaptionCorrectnessRejectsWrongColourCountAndRelation() {
        let red = SceneObject(shape: .circle, color: .red, x: 2, y: 12, size: 8)
        let blue = SceneObject(shape: .square, color: .blue, x: 20, y: 12, size: 8)
        let scene = Scene(objects: [red, blue])
        XCTAssertEqual(canonicalCaption(scene), "a photo of a red circle left of a blue square")
        XCTAssertTrue(captionIsCorrect("a photo of a blue square right of a red circle", scene: scene))
        XCTAssertFalse(captionIsCorrect("a photo of a red circle right of a blue square", scene: scene))
        XCTAssertFalse(captionIsCorrect("a photo of a red circle and a blue square", scene: scene), "omits a relation that holds")
        XCTAssertFalse(captionIsCorrect("a photo of a blue circle left of a red square", scene: scene))
        XCTAssertFalse(captionIsCorrect("a photo of a red circle", scene: scene))
        XCTAssertFalse(captionIsCorrect("a photo of a red circle left of", scene: scene))

        let three = Scene(objects: [
            SceneObject(shape: .cross, color: .green, x: 1, y: 1, size: 7),
            SceneObject(shape: .cross, color: .white, x: 20, y: 1, size: 7),
            SceneObject(shape: .cross, color: .green, x: 10, y: 20, size: 7),
        ])
        XCTAssertEqual(canonicalCaption(three), "a photo of three crosses : green , green and white")
        XCTAssertTrue(captionIsCorrect("a photo of three crosses : white , green and green", scene: three))
        XCTAssertFalse(captionIsCorrect("a photo of two crosses : green and white", scene: three))
        XCTAssertFalse(captionIsCorrect("a photo of three crosses : green and white", scene: three), "count and colours disagree")
        XCTAssertThrowsError(try parseCaption("a photo of three crosses : green , green and white yes"))
    }

    func testProbesAnswerTruthfullyAndAdversarialNegativesShareAnAttribute() {
        var generator = SplitMix64RNG(seed: 5)
        for (_, scene) in sampleScenes(perPrompt: 1) {
            let present = Set(scene.objects.map { "\($0.color) \($0.shape)" })
            for split in PopeSplit.allCases {
                let probes = makeProbes(scene: scene, split: split, yesCount: 2, popularity: [:], generator: &generator)
                XCTAssertEqual(probes.filter(\.answer).count, 2)
                XCTAssertEqual(probes.filter { !$0.answer }.count, 2)
                for probe in probes { XCTAssertEqual(present.contains("\(probe.color) \(probe.shape)"), probe.answer) }
                if split == .adversarial {
                    for probe in probes where !probe.answer {
                        XCTAssertTrue(scene.objects.contains { $0.color == probe.color || $0.shape == probe.shape })
                    }
                }
            }
        }
    }

    func testPopeMetrics() {
        // truth:     Y Y Y N N
        // predicted: Y Y N Y N  -> tp 2, fn 1, fp 1, tn 1
        let metrics = PopeMetrics(truth: [true, true, true, false, false], predicted: [true, true, false, true, false])
        XCTAssertEqual(metrics.accuracy, 0.6, accuracy: 1e-12)
        XCTAssertEqual(metrics.precision, 2.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(metrics.recall, 2.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(metrics.f1, 2.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(metrics.yesRatio, 0.6, accuracy: 1e-12)
    }

    func testScenesAreDeterministicBySeed() {
        let a = sampleScenes(perPrompt: 1, seed: 9).map(\.1)
        let b = sampleScenes(perPrompt: 1, seed: 9).map(\.1)
        let c = sampleScenes(perPrompt: 1, seed: 10).map(\.1)
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a, c)
    }
}

extension SceneTests {
    func testTouchingObjectsOfDifferentColoursStayApart() {
        // Objects a model might draw touching: a red square beside a blue square, no gap.
        let scene = Scene(objects: [
            SceneObject(shape: .square, color: .red, x: 4, y: 4, size: 8),
            SceneObject(shape: .square, color: .blue, x: 12, y: 4, size: 8),
        ])
        let detections = detectObjects(in: renderScene(scene, canvasSize: 32))
        XCTAssertEqual(detections.map(\.color).sorted { $0.rawValue < $1.rawValue }, [.blue, .red])
        XCTAssertTrue(detections.allSatisfy { $0.shape == .square && $0.confidence == 1 })
        XCTAssertTrue(evaluateGenEval(image: renderScene(scene, canvasSize: 32), record: .counting(.square, 2)).correct)
    }

    func testPixelsOffThePaletteAreNotObjects() {
        // A brown blob (GenEval colour we do not draw) is far from every background->colour ray.
        var image = RGBImage(width: 32, height: 32, fill: backgroundRGB)
        for y in 8..<16 { for x in 8..<16 { let o = 3 * (y * 32 + x); image.pixels[o] = 120; image.pixels[o + 1] = 120; image.pixels[o + 2] = 120 } }
        XCTAssertEqual(detectObjects(in: image).count, 0, "grey is on no colour's ray")
    }
}
