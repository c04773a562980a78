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

    /// A trainer of a tiny model in a temporary run directory (removed by the caller), at a large
    /// learning rate without clipping, so that one step moves the model visibly.
    func tinyTrainer(_ overrides: [String]) throws -> (PreferenceTrainer, Transformer, URL) {
        let run = FileManager.default.temporaryDirectory.appendingPathComponent("suder-trainer-\(UUID().uuidString)")
        let config = try ResolvedConfig.resolve(
            file: nil, overrides: ["suder.lr=0.01", "suder.grad_clip=0", "runtime.progress=off"] + overrides)
        let settings = SuderSettings(config)
        let job = JobContext(comm: SingleProcessCommunicator(), config: config, runDir: run)
        // The session records the data's identity: stand-in vocabulary and codebook files.
        let data = job.stageDirectory(StageName.data.rawValue)
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        for name in [DatasetFile.vocabulary, DatasetFile.codebook] { try Data(name.utf8).write(to: data.appendingPathComponent(name)) }
        let modelConfig = ModelConfig(vocabSize: 20, dModel: 16, nLayers: 1, nHeads: 2, ffnHidden: 32, maxSeq: 16)
        let model = Transformer(config: modelConfig, seed: 1, batchCapacity: 2)
        let optimizer = AdamW(parameterTable: model.parameterTable, parameterCount: model.parameterCount, weightDecay: 0)
        let session = try TrainingSession(job: job, stage: .suder, model: model, optimizer: optimizer) {}
        let reference = settings.needsReference ? Transformer(config: modelConfig, seed: 1, batchCapacity: 2) : nil
        return (PreferenceTrainer(session: session, settings: settings, reference: reference), model, run)
    }

    /// A checkpoint copied or renamed into a stage directory by hand is refused before any
    /// training: another stage's, one whose directory names another step, one past the run's end.
    func testResumeRefusesACheckpointTheStageDidNotWriteForThisRun() throws {
        let run = FileManager.default.temporaryDirectory.appendingPathComponent("suder-resume-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: run) }
        let config = try ResolvedConfig.resolve(file: nil, overrides: ["suder.rounds=2", "pretrain.steps=100", "runtime.progress=off"])
        let job = JobContext(comm: SingleProcessCommunicator(), config: config, runDir: run)
        let data = job.stageDirectory(StageName.data.rawValue)
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        for name in [DatasetFile.vocabulary, DatasetFile.codebook] { try Data(name.utf8).write(to: data.appendingPathComponent(name)) }
        let model = Transformer(config: ModelConfig(vocabSize: 20, dModel: 16, nLayers: 1, nHeads: 2, ffnHidden: 32, maxSeq: 16), seed: 1, batchCapacity: 2)
        let optimizer = AdamW(parameterTable: model.parameterTable, parameterCount: model.parameterCount, weightDecay: 0)
        /// Resumes `stage` from the one checkpoint in its directory, written by `writer` at `step`
        /// and named after `name`; the error message, or nil when it resumed.
        func resume(_ stage: StageName, from writer: StageName, step: Int, named name: Int? = nil) throws -> String? {
            let directory = job.stageDirectory(stage.rawValue)
            try? FileManager.default.removeItem(at: directory)
            let checkpoint = makeCheckpoint(stage: writer, step: step, job: job, dataIdentity: try dataIdentity(job), model: model, optimizer: optimizer)
            let saved = try CheckpointStore(directory: directory, comm: job.comm).save(checkpoint)
            if let name {
                try FileManager.default.moveItem(at: saved, to: directory.appendingPathComponent(CheckpointStore.directoryName(step: name)))
            }
            do {
                let session = try TrainingSession(job: job, stage: stage, model: model, optimizer: optimizer) {}
                XCTAssertEqual(session.step, step)
                return nil
            } catch let error as AllRanksError {
                return error.description
            }
        }
        XCTAssertNil(try resume(.suder, from: .suder, step: 2), "its own checkpoint at the last round")
        XCTAssertNil(try resume(.pretrain, from: .pretrain, step: 100), "its own checkpoint at the last step")
        let refused: [(StageName, StageName, Int, Int?, String)] = [
            (.suder, .pretrain, 1, nil, "written by the pretrain stage, not suder"),
            (.pretrain, .suder, 2, nil, "written by the suder stage, not pretrain"),
            (.suder, .suder, 2, 1, "holds step 2, not the step its name says"),
            (.suder, .suder, 3, nil, "past the last step of this run (suder.rounds = 2)"),
            (.pretrain, .pretrain, 101, nil, "past the last step of this run (pretrain.steps = 100)"),
        ]
        for (stage, writer, step, name, expected) in refused {
            let what = "\(writer) step \(step) in \(stage)/ named \(name ?? step)"
            guard let message = try resume(stage, from: writer, step: step, named: name) else {
                XCTFail("\(what) resumed")
                continue
            }
            XCTAssertTrue(message.contains(expected) && message.contains("cannot resume from checkpoint"), "\(what): \(message)")
        }
    }

    /// The chosen-NLL term alone (SimPO with beta 0 has no gradient) raises the chosen
    /// completion's likelihood, and without it nothing moves.
    func testChosenNLLRaisesTheChosenCompletion() throws {
        let pair = PreferencePair(direction: .understanding, context: [1, 5, 6], chosen: [7, 8, 9], rejected: [9, 8, 7])
        let batch = TokenBatch(sequences: [pair.context + pair.chosen, pair.context + pair.rejected], targetStarts: [3, 3])
        var moved: [Double] = []
        for weight in [0.0, 1.0] {
            let (trainer, model, run) = try tinyTrainer(["suder.objective=simpo", "suder.simpo_beta=0", "suder.gamma=0", "suder.chosen_nll=\(weight)"])
            defer { try? FileManager.default.removeItem(at: run) }
            let before = model.score(batch)[0].mean
            var sums = MetricSums(), times = RoundTimes()
            trainer.beginRound()
            try trainer.step(.pairs([pair]), globalCounts: [0, 1], scales: [:], sums: &sums, times: &times)
            moved.append(model.score(batch)[0].mean - before)
            XCTAssertEqual(try XCTUnwrap(sums.mean(.loss, .understanding)), log(2) - weight * before, accuracy: 1e-5)
        }
        XCTAssertEqual(moved[0], 0, "SimPO with beta 0 and no NLL term has no gradient")
        XCTAssertGreaterThan(moved[1], 0.01, "the NLL term raises the chosen completion's mean log-prob")
    }

    /// One GRPO step of the trainer on a hand-made group of three samples: the sample with the
    /// highest reward becomes more likely, the lowest less, and the KL and clip metrics are logged.
    /// Two more steps in the round reuse the first step's log-probs, so their ratios move off 1.
    func testGRPOStepRaisesTheBetterSampleAndLowersTheWorse() throws {
        let (trainer, model, run) = try tinyTrainer(["suder.objective=grpo", "suder.grpo_kl=0.1"])
        defer { try? FileManager.default.removeItem(at: run) }

        let context: [Int32] = [1, 5, 6], completions: [[Int32]] = [[7, 8, 9], [9, 8, 7, 10], [11, 12]]
        let advantages = try XCTUnwrap(groupAdvantages([2, -1, 0.5]))
        let group = SampleGroup(direction: .understanding, context: context, completions: completions, advantages: advantages)
        let batch = TokenBatch(sequences: completions.map { context + $0 }, targetStarts: [3, 3, 3])
        func meanLogps() -> [Double] { model.score(batch).map(\.mean) }
        let before = meanLogps()
        var sums = MetricSums(), times = RoundTimes()
        trainer.beginRound()
        try trainer.step(.groups([group]), globalCounts: [0, 3], scales: [:], sums: &sums, times: &times)
        let after = meanLogps()
        XCTAssertGreaterThan(after[0], before[0], "the best sample (advantage \(advantages[0])) gains likelihood")
        XCTAssertLessThan(after[1], before[1], "the worst sample (advantage \(advantages[1])) loses likelihood")
        // At the first step the model is the reference and its own old policy: KL 0, nothing clipped,
        // and each loss is -A, whose mean over a group is 0.
        XCTAssertEqual(try XCTUnwrap(sums.mean(.kl, .understanding)), 0, accuracy: 1e-9)
        XCTAssertEqual(sums.mean(.clipRatio, .understanding), 0)
        XCTAssertEqual(try XCTUnwrap(sums.mean(.loss, .understanding)), 0, accuracy: 1e-9)
        XCTAssertEqual(sums.mean(.chosenLogp, .understanding) ?? .nan, before[0], accuracy: 1e-6, "the one positive-advantage sample")
        XCTAssertNil(sums.mean(.loss, .generation))
        var later = MetricSums()
        for _ in 0..<2 { try trainer.step(.groups([group]), globalCounts: [0, 3], scales: [:], sums: &later, times: &times) }
        XCTAssertGreaterThan(try XCTUnwrap(later.mean(.kl, .understanding)), 0, "the policy has moved away from the reference")
        XCTAssertGreaterThan(meanLogps()[0], after[0])
    }

    /// The guard counts rounds in a row whose logps/chosen fell, scales the next round's loss once
    /// the count reaches `rounds`, resets on a rise, and survives the checkpoint's encoding.
    func testLikelihoodGuardScalesAfterConsecutiveFalls() throws {
        var guarded = LikelihoodGuard(rounds: 2, factor: 0.25)
        var record = MetricsRecord()
        func observe(_ chosen: Double) {
            var sums = MetricSums()
            sums.add(.chosenLogp, .generation, chosen)
            guarded.observe(sums, scales: guarded.scales, record: &record)
        }
        observe(-1.0)
        observe(-1.2)
        XCTAssertEqual(guarded.scales[.generation], 1, "one fall is not two in a row")
        observe(-1.5)
        XCTAssertEqual(guarded.scales[.generation], 0.25)
        XCTAssertEqual(guarded.scales[.understanding], 1, "a direction without measurements is never scaled")
        var restored = LikelihoodGuard(rounds: 2, factor: 0.25)
        try restored.restore(guarded.encoded)
        XCTAssertEqual(restored.scales[.generation], 0.25)
        XCTAssertEqual(restored.lastChosenLogp[.generation], -1.5)
        observe(-1.4)
        XCTAssertEqual(guarded.scales[.generation], 1, "a rise resets the count")
        XCTAssertFalse(guarded.stopAfterRound)

        var stopping = LikelihoodGuard(rounds: 1, factor: 0)
        for chosen in [-1.0, -1.1] {
            var sums = MetricSums()
            sums.add(.chosenLogp, .understanding, chosen)
            stopping.observe(sums, scales: stopping.scales, record: &record)
        }
        XCTAssertTrue(stopping.stopAfterRound)
        XCTAssertTrue(record.fields.contains { $0 == ("understanding/guard/stopped", "1") })
        XCTAssertEqual(LikelihoodGuard(rounds: 0, factor: 0).scales[.generation], 1, "rounds 0 turns the guard off")
    }

    /// `suder suder --help` lists every objective and the keys each one reads.
    func testSuderHelpListsEveryObjectiveAndItsKeys() throws {
        let help = configKeysHelp(prefix: "suder.")
        let objectiveLine = try XCTUnwrap(help.split(separator: "\n").first { $0.hasPrefix("suder.objective ") })
        for objective in PreferenceObjective.allCases { XCTAssertTrue(objectiveLine.contains("\(objective.rawValue) = "), "\(objective)") }
        for key in ["simpo_beta", "gamma", "dpo_beta", "chosen_nll", "grpo_kl", "grpo_clip", "guard_rounds", "guard_factor", "cfg_weight"] {
            XCTAssertTrue(help.contains("\nsuder.\(key) ("), key)
        }
        XCTAssertFalse(help.contains("suder.beta "), "renamed keys are not listed")
        XCTAssertFalse(help.contains("model."))
    }
}
