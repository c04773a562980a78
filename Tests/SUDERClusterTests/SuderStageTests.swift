import GenEvalMini
import Model
import World
import XCTest

@testable import ClusterRuntime
@testable import SUDERCluster

final class SuderStageTests: XCTestCase {
    func testPairSelectionTakesBestAndWorstAndDropsTies() {
        XCTAssertEqual(bestAndWorst([-3, -1, -2, -5])?.best, 1)
        XCTAssertEqual(bestAndWorst([-3, -1, -2, -5])?.worst, 3)
        XCTAssertNil(bestAndWorst([-2, -2, -2]), "a group whose rewards all tie gives no pair")
        XCTAssertNil(bestAndWorst([-1.0, -1.2, -1.1], minimumGap: 0.2), "a gap of 0.2 is not more than 0.2")
        XCTAssertEqual(bestAndWorst([-1.0, -1.3, -1.1], minimumGap: 0.2)?.worst, 1)
        let twoBest = bestAndWorst([0.5, 0.9, 0.9, 0.1])!
        XCTAssertEqual(twoBest.worst, 3)
        XCTAssertTrue([1, 2].contains(twoBest.best))
    }

    /// self and oracle pair the best and worst; the controls pair other samples of the same groups,
    /// drop the same tied groups, and draw only from the pairing seed.
    func testControlsPairOtherSamplesOfTheSameGroups() {
        let rewards = [-1.0, -0.2, -0.7, -1.5]
        XCTAssertEqual(pairGroup(rewards, source: .selfReward, minimumGap: 0, pairingSeed: 1)?.chosen, 1)
        XCTAssertEqual(pairGroup(rewards, source: .oracle, minimumGap: 0, pairingSeed: 9)?.rejected, 3)
        for source in [RewardSource.random, .shuffled] {
            var pairs = Set<[Int]>()
            for seed in 0..<200 as Range<UInt64> {
                let pair = pairGroup(rewards, source: source, minimumGap: 0, pairingSeed: seed)!
                XCTAssertNotEqual(pair.chosen, pair.rejected, "\(source)")
                let again = pairGroup(rewards, source: source, minimumGap: 0, pairingSeed: seed)!
                XCTAssertEqual([pair.chosen, pair.rejected], [again.chosen, again.rejected], "\(source): the seed alone decides")
                pairs.insert([pair.chosen, pair.rejected])
            }
            XCTAssertEqual(pairs.count, 12, "\(source): every ordered pair of 4 samples occurs over 200 seeds")
            XCTAssertNil(pairGroup([-2, -2, -2], source: source, minimumGap: 0, pairingSeed: 3), "\(source): ties give no pair")
            XCTAssertNil(pairGroup([-1.0, -1.2], source: source, minimumGap: 0.2, pairingSeed: 3), "\(source): the gap rule holds")
        }
        // shuffled: the chosen sample is where the permuted rewards peak, so with a group of two it
        // is the better sample about half the time.
        let better = (0..<400 as Range<UInt64>).filter { pairGroup([-1, -2], source: .shuffled, minimumGap: 0, pairingSeed: $0)!.chosen == 0 }.count
        XCTAssertTrue((150...250).contains(better), "shuffled chose the better of two \(better) times in 400")
    }

    func testWithinGroupRankingCountsRightAboveWrongWithHalfTies() {
        // Right samples 0.9 and 0.2; wrong samples 0.5 and 0.2: (0.9 > 0.5), (0.9 > 0.2), (0.2 < 0.5), (0.2 = 0.2).
        let group: [(reward: Double, oracle: Float)] = [(0.9, 1), (0.5, 0), (0.2, 1), (0.2, 0)]
        let (wins, pairs) = withinGroupRanking(group)
        XCTAssertEqual(pairs, 4)
        XCTAssertEqual(wins, 2.5)
        XCTAssertEqual(withinGroupRanking([(1, 1), (0, 1)]).pairs, 0, "a group the oracle cannot split has no pairs")
    }

    func testRoundItemsAreDistinctSeededAndRankFree() {
        let a = roundItems(total: 100, count: 30, seed: 7, round: 3, direction: .generation)
        XCTAssertEqual(a.count, 30)
        XCTAssertEqual(Set(a).count, 30)
        XCTAssertTrue(a.allSatisfy { (0..<100).contains($0) })
        XCTAssertEqual(a, roundItems(total: 100, count: 30, seed: 7, round: 3, direction: .generation))
        XCTAssertNotEqual(a, roundItems(total: 100, count: 30, seed: 7, round: 4, direction: .generation))
        XCTAssertNotEqual(a, roundItems(total: 100, count: 30, seed: 7, round: 3, direction: .understanding))
        // Shards of any rank count cover the round's items exactly once.
        for size in 1...4 {
            let covered = (0..<size).flatMap { shardIndices(count: a.count, rank: $0, size: size) }.sorted()
            XCTAssertEqual(covered, Array(0..<a.count))
        }
    }

    func testDirectionModes() {
        XCTAssertTrue(DirectionMode.joint.trains(.generation, round: 1) && DirectionMode.joint.trains(.understanding, round: 1))
        XCTAssertFalse(DirectionMode.generation.trains(.understanding, round: 1))
        XCTAssertTrue(DirectionMode.alternating.trains(.generation, round: 1))
        XCTAssertFalse(DirectionMode.alternating.trains(.generation, round: 2))
        XCTAssertTrue(DirectionMode.alternating.trains(.understanding, round: 2))
    }

    func testStreamSeedsDependOnEveryPart() {
        XCTAssertNotEqual(streamSeed(1, 2, 3), streamSeed(1, 3, 2))
        XCTAssertNotEqual(streamSeed(1, 2, 3), streamSeed(1, 2, 4))
        XCTAssertEqual(streamSeed(9, 8, 7), streamSeed(9, 8, 7))
    }

    /// The rewards are the model's own scores through the other direction's format: check them
    /// against a direct scoring call on sequences built by hand.
    func testRewardsEqualDirectScoringCalls() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("suder-rewards-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        try generateDataset(config: .smallTestWorld, outDir: directory) { _ in }
        let dataset = try DatasetReader(directory: directory)
        let vocabulary = dataset.vocabulary
        let model = Transformer(
            config: ModelConfig(vocabSize: vocabulary.size, dModel: 16, nLayers: 1, nHeads: 2, ffnHidden: 32, maxSeq: 112),
            seed: 3, batchCapacity: 4)
        let tasks = try UnifiedModelTasks(model: model, dataset: dataset)
        let prompt = try dataset.unpairedPrompts()[0], image = try dataset.unpairedImages()[0]

        // The prompt is scored as a prompt-style description: after the `<prompt>` marker.
        let generationReward = tasks.textGivenImage(texts: [prompt], images: [image], task: .prompt)[0]
        let direct = model.score(
            contexts: [[Vocabulary.bos, Vocabulary.boi] + image + [Vocabulary.eoi, Vocabulary.promptMarker]],
            targets: [prompt + [Vocabulary.eos]])[0]
        XCTAssertEqual(generationReward.count, Double(prompt.count + 1))
        XCTAssertEqual(generationReward.mean, direct.mean, accuracy: 1e-9)

        let understandingReward = tasks.imageGivenText(images: [image], texts: [prompt])[0]
        let directImage = model.score(contexts: [[Vocabulary.bos] + prompt + [Vocabulary.boi]], targets: [image])[0]
        XCTAssertEqual(understandingReward.count, Double(image.count), "|X_V| counts the image tokens only")
        XCTAssertEqual(understandingReward.mean, directImage.mean, accuracy: 1e-9)

        // Sampling is deterministic per seed and independent of the batch it runs in.
        let settings = ImageSampling(temperature: 1, topK: 0, guidanceWeight: 3)
        let alone = tasks.sampleImages(prompts: [prompt], seeds: [11], settings: settings)
        let batched = tasks.sampleImages(prompts: [prompt, prompt, prompt], seeds: [5, 11, 6], settings: settings)
        XCTAssertEqual(alone[0], batched[1])
        XCTAssertTrue(alone[0].allSatisfy { vocabulary.imageRange.contains($0) })
    }

    /// One SimPO step on a pair raises the chosen completion's log-probability relative to the
    /// rejected one's.
    func testSimPOStepMovesTowardTheChosenCompletion() {
        let model = Transformer(config: ModelConfig(vocabSize: 20, dModel: 16, nLayers: 1, nHeads: 2, ffnHidden: 32, maxSeq: 16), seed: 1, batchCapacity: 2)
        let optimizer = AdamW(parameterTable: model.parameterTable, parameterCount: model.parameterCount, weightDecay: 0)
        let context: [Int32] = [1, 5, 6], chosen: [Int32] = [7, 8, 9], rejected: [Int32] = [9, 8, 7]
        let batch = TokenBatch(sequences: [context + chosen, context + rejected], targetStarts: [3, 3])
        func margin() -> Double { let s = model.score(batch); return s[0].mean - s[1].mean }
        let before = margin()
        model.zeroGradients()
        let logps = model.forward(batch)
        let loss = simpoLoss(chosenLogProbs: [logps[0]], chosenLengths: [3], rejectedLogProbs: [logps[1]], rejectedLengths: [3])
        model.backward(sequenceCoefficients: [Float(loss.chosenGradients[0]), Float(loss.rejectedGradients[0])])
        optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: 1e-2)
        XCTAssertGreaterThan(margin(), before)
    }
}
