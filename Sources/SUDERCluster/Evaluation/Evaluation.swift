import ClusterRuntime
import Foundation
import GenEvalMini
import Model
import World

/// GenEval-mini of a model: per record, `imagesPerPrompt` images sampled with seeds derived from
/// (seed, record, k), scored by the exact detector. Collective; ranks split the records.
struct GenEvalRun {
    var summary = GenEvalSummary()
    /// Correct images per record (0...imagesPerPrompt), in record order: for bootstrap intervals.
    var correctPerRecord: [Int] = []
    /// Image tokens per record and sample, kept on rank 0 when asked (for PNG folders).
    var images: [[[Int32]]] = []
}

func runGenEval(
    records: [MetadataRecord], tasks: UnifiedModelTasks, imagesPerPrompt: Int, settings: ImageSampling,
    seed: UInt64, comm: Communicator, keepImages: Bool = false, progress: ProgressReporter? = nil
) throws -> GenEvalRun? {
    let mine = shardIndices(count: records.count, rank: comm.rank, size: comm.size)
    var prompts: [[Int32]] = [], seeds: [UInt64] = []
    for i in mine {
        let prompt = try tasks.vocabulary.encode(records[i].prompt)
        for k in 0..<imagesPerPrompt {
            prompts.append(prompt)
            seeds.append(streamSeed(seed, StreamPurpose.evalImage, UInt64(i), UInt64(k)))
        }
    }
    // Sample in slices so progress moves; each slice is whole records.
    var images: [[Int32]] = []
    let slice = UnifiedModelTasks.samplingChunk
    for start in stride(from: 0, to: prompts.count, by: slice) {
        let end = min(start + slice, prompts.count)
        images += tasks.sampleImages(prompts: Array(prompts[start..<end]), seeds: Array(seeds[start..<end]), settings: settings)
        progress?.advance(by: (end - start) * comm.size / imagesPerPrompt)
    }
    // Each rank scores its own images; rank 0 gathers (record, verdicts, tokens).
    var packed = ByteWriter()
    for (n, i) in mine.enumerated() {
        packed.u32(UInt32(i))
        for k in 0..<imagesPerPrompt {
            let tokens = images[n * imagesPerPrompt + k]
            let correct = (try? tasks.oracle.decodeImage(tokens: tokens)).map { evaluateGenEval(image: $0, record: records[i]).correct } ?? false
            packed.u8(correct ? 1 : 0)
            if keepImages { for t in tokens { packed.u32(UInt32(bitPattern: t)) } }
        }
    }
    guard let gathered = comm.gather(packed.bytes, root: 0) else { return nil }
    var run = GenEvalRun()
    run.correctPerRecord = Array(repeating: 0, count: records.count)
    run.images = keepImages ? Array(repeating: [], count: records.count) : []
    for bytes in gathered {
        var reader = ByteReader(bytes, file: "gathered GenEval results")
        while reader.remaining > 0 {
            let i = Int(try reader.u32("record"))
            for _ in 0..<imagesPerPrompt {
                let correct = try reader.u8("verdict") == 1
                run.summary.add(category: records[i].tag, correct: correct)
                run.correctPerRecord[i] += correct ? 1 : 0
                if keepImages {
                    run.images[i].append(try (0..<tasks.imageTokenCount).map { _ in Int32(bitPattern: try reader.u32("token")) })
                }
            }
        }
    }
    return run
}

/// Caption accuracy and POPE-mini on held-out images. Collective; rank 0 gets the numbers.
struct UnderstandingRun {
    var captionAccuracy: Double
    var captionCount: Int
    var pope: [PopeSplit: PopeMetrics]
}

func runUnderstandingEval(
    images: [EvalImage], probes: [PopeSplit: [ProbeExample]], tasks: UnifiedModelTasks,
    comm: Communicator
) throws -> UnderstandingRun? {
    var sums = MetricSums()
    let mine = shardIndices(count: images.count, rank: comm.rank, size: comm.size)
    // Greedy captions: the model's best description, no sampling noise in the metric.
    let captions = tasks.sampleCaptions(images: mine.map { images[$0].image }, seeds: mine.map { UInt64($0) }, temperature: 0, topK: 0)
    let correct = zip(mine, captions).filter { captionIsCorrect(tokens: $1, scene: images[$0].scene, vocabulary: tasks.vocabulary) }.count
    sums.add("caption_correct", Double(correct), count: Double(mine.count))

    var answers: [PopeSplit: [UInt8]] = [:]
    for split in PopeSplit.allCases {
        let list = probes[split] ?? []
        let mineProbes = shardIndices(count: list.count, rank: comm.rank, size: comm.size)
        let scores = try tasks.probeAnswerLogProbabilities(images: mineProbes.map { list[$0].image }, questions: mineProbes.map { list[$0].question })
        var packed = ByteWriter()
        for (n, i) in mineProbes.enumerated() {
            packed.u32(UInt32(i))
            packed.u8(scores[n].yes > scores[n].no ? 1 : 0)
        }
        if let gathered = comm.gather(packed.bytes, root: 0) {
            var predicted = [UInt8](repeating: 0, count: list.count)
            for bytes in gathered {
                var reader = ByteReader(bytes, file: "gathered POPE answers")
                while reader.remaining > 0 {
                    let i = Int(try reader.u32("probe"))
                    predicted[i] = try reader.u8("answer")
                }
            }
            answers[split] = predicted
        }
    }
    sums.allreduce(comm)
    guard comm.isRoot else { return nil }
    var pope: [PopeSplit: PopeMetrics] = [:]
    for split in PopeSplit.allCases {
        let list = probes[split] ?? []
        pope[split] = PopeMetrics(truth: list.map(\.answer), predicted: (answers[split] ?? []).map { $0 == 1 })
    }
    return UnderstandingRun(captionAccuracy: sums.mean("caption_correct") ?? 0, captionCount: images.count, pope: pope)
}
