import XCTest

@testable import World

final class TokenizerTests: XCTestCase {
    let vocabulary = Vocabulary(codebookSize: 100)

    func testTextRoundTripAndUnknownWord() throws {
        let text = "is there an orange cross ?"
        let ids = try vocabulary.encode("Is there an orange cross?")
        XCTAssertEqual(try vocabulary.decode(ids), text)
        XCTAssertTrue(ids.allSatisfy(vocabulary.textRange.contains))
        XCTAssertThrowsError(try vocabulary.encode("a photo of a dog")) { error in
            XCTAssertEqual(error as? WorldError, .unknownWord("dog"))
            XCTAssertEqual("\(error)", "unknown word 'dog': not in the world's vocabulary")
        }
        XCTAssertThrowsError(try vocabulary.decode([Vocabulary.boi]))
    }

    func testRangesAreDisjointAndCoverTheVocabulary() {
        XCTAssertEqual(vocabulary.textRange.lowerBound, 7)
        XCTAssertEqual(vocabulary.imageRange.lowerBound, vocabulary.textRange.upperBound)
        XCTAssertEqual(vocabulary.size, 7 + Vocabulary.worldWords.count + 100)
        XCTAssertEqual(Set(Vocabulary.worldWords).count, Vocabulary.worldWords.count)
    }

    func testSequenceFormatsAndTargets() throws {
        let prompt = try vocabulary.encode("a photo of two circles")
        let image = vocabulary.imageTokens(codes: (0..<64).map { Int32($0 % 100) })
        let generation = vocabulary.generationSequence(prompt: prompt, image: image)
        XCTAssertEqual(generation.tokens.first, Vocabulary.bos)
        XCTAssertEqual(generation.tokens[prompt.count + 1], Vocabulary.boi)
        XCTAssertEqual(Array(generation.tokens[generation.targetRange]), image + [Vocabulary.eoi])
        XCTAssertEqual(Array(generation.tokens[..<generation.targetRange.lowerBound]), vocabulary.generationPrefix(prompt: prompt))

        let caption = try vocabulary.encode("a photo of a red circle")
        let understanding = vocabulary.understandingSequence(image: image, task: .caption, text: caption)
        XCTAssertEqual(Array(understanding.tokens[..<understanding.targetRange.lowerBound]), vocabulary.understandingPrefix(image: image, task: .caption))
        XCTAssertEqual(understanding.tokens[image.count + 3], Vocabulary.captionMarker)
        XCTAssertEqual(Array(understanding.tokens[understanding.targetRange]), caption + [Vocabulary.eos])
        let described = vocabulary.understandingSequence(image: image, task: .prompt, text: prompt)
        XCTAssertEqual(Array(described.tokens[..<described.targetRange.lowerBound]), vocabulary.probePrefix(image: image) + [Vocabulary.promptMarker])
        XCTAssertEqual(Array(described.tokens[described.targetRange]), prompt + [Vocabulary.eos])

        let probe = try vocabulary.probeSequence(image: image, question: try vocabulary.encode("is there a red circle ?"), answer: false)
        XCTAssertEqual(Array(probe.tokens[probe.targetRange]), [try vocabulary.id(of: "no"), Vocabulary.eos])
        XCTAssertEqual(vocabulary.nullGenerationPrefix(), [Vocabulary.bos, Vocabulary.boi])
        XCTAssertEqual(vocabulary.nullGenerationPrefix(promptLength: 2), [Vocabulary.bos, Vocabulary.pad, Vocabulary.pad, Vocabulary.boi])
        XCTAssertEqual(try vocabulary.imageCodes(tokens: image), (0..<64).map { Int32($0 % 100) })
        XCTAssertThrowsError(try vocabulary.imageCodes(tokens: prompt))
    }

    func testEveryPromptAndCaptionFitsTheBudgets() throws {
        for category in Category.allCases {
            for record in promptSpace(category) {
                XCTAssertLessThanOrEqual(try vocabulary.encode(record.prompt).count, maxPromptTokens, record.prompt)
            }
        }
        var generator = SplitMix64RNG(seed: 3)
        let scenes = WorldConfig().sceneGenerator
        for category in Category.allCases {
            for record in promptSpace(category).prefix(40) {
                let caption = canonicalCaption(scenes.scene(for: record, using: &generator))
                // Understanding sequences: BOS BOI 64 EOI <caption> caption EOS must fit in 100 tokens.
                XCTAssertLessThanOrEqual(try vocabulary.encode(caption).count, maxCaptionTokens, caption)
                XCTAssertLessThanOrEqual(try vocabulary.encode(caption).count + 69, 100)
            }
        }
    }
}
