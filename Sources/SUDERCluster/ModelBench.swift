import ClusterRuntime
import Foundation
import Model
import World

/// What `suder bench model` measures. Defaults are the issue's bench config: d_model 192,
/// 6 layers, 6 heads, sequence 96, batch 32, vocabulary 1,100; sampling 16 sequences with a
/// 16-token prompt and 64 new tokens.
public struct ModelBenchOptions {
    public var config: ModelConfig
    public var batch: Int
    public var seqLen: Int
    public var sampleBatch: Int
    public var promptLength: Int
    public var newTokens: Int
    public var threads: Int
    /// The kernel path to run (nil: SUDER_KERNELS, else the best the CPU has); PyTorch is held to
    /// the same instruction set.
    public var kernels: KernelPath?
    /// Timed repetitions per workload (after one warm-up); medians are reported.
    public var repeats: Int
    public var json: Bool
    /// Run tools/torch_reference.py bench side by side when `python3 -c "import torch"` works.
    public var compareWithPyTorch: Bool
    public var python: String
    public var referenceScript: String

    public init(
        config: ModelConfig = ModelConfig(vocabSize: 1100, dModel: 192, nLayers: 6, nHeads: 6, ffnHidden: 512, maxSeq: 96),
        batch: Int = 32, seqLen: Int = 96, sampleBatch: Int = 16, promptLength: Int = 16, newTokens: Int = 64,
        threads: Int = 1, kernels: KernelPath? = nil, repeats: Int = 5, json: Bool = false, compareWithPyTorch: Bool = true,
        python: String = "python3", referenceScript: String = "tools/torch_reference.py"
    ) {
        self.config = config
        self.batch = batch
        self.seqLen = seqLen
        self.sampleBatch = sampleBatch
        self.promptLength = promptLength
        self.newTokens = newTokens
        self.threads = threads
        self.kernels = kernels
        self.repeats = repeats
        self.json = json
        self.compareWithPyTorch = compareWithPyTorch
        self.python = python
        self.referenceScript = referenceScript
    }
}

extension ModelBenchOptions {
    /// Sets `kernels` from its name on the command line.
    public mutating func setKernels(named name: String) throws {
        guard let path = KernelPath(rawValue: name) else {
            throw BenchError(description: "--kernels \(name): expected one of avx512, avx2, blas")
        }
        kernels = path
    }
}

/// Medians of one framework's timed repeats.
public struct ModelBenchNumbers: Codable {
    public var framework: String
    public var threads: Int
    public var train_tokens_per_s: Double
    public var score_tokens_per_s: Double
    public var sample_tokens_per_s: Double
    public var preference_pairs_per_s: Double
    public var train_step_s: Double
    public var score_s: Double
    public var sample_s: Double
    public var preference_step_s: Double
    /// Achieved FLOP rate of the training step (FLOPs.trainingStep / median time).
    public var train_gflops: Double?
    /// Peak resident set of the process (getrusage maxrss).
    public var peak_rss_mb: Double?
    /// PyTorch only: sampling with one shared generator instead of one per sequence.
    public var sample_shared_rng_tokens_per_s: Double?
    /// suder only: the OpenBLAS kernel family in use.
    public var blas_core: String?
    /// suder only: the kernel path (avx512, avx2, blas).
    public var kernels: String?
    /// suder only: one core's FMA peak with the path's vectors (the widest for blas), measured.
    public var fma_peak_gflops: Double?
    /// PyTorch only: the instruction set ATen dispatches to (torch.backends.cpu.get_cpu_capability).
    public var cpu_capability: String?
}

public struct ModelBenchReport: Codable {
    public var config: ModelConfig
    public var batch, seqLen, sampleBatch, promptLength, newTokens: Int
    public var suder: ModelBenchNumbers
    public var torch: ModelBenchNumbers?
    /// Why PyTorch was not compared, when it was not.
    public var torchNote: String?
    /// Per workload (train, score, preference, sample): our speed over PyTorch's in each pair of
    /// alternated repeats.
    public var ratios: [String: PairRatios]?
    /// Per workload: every timed repeat's seconds on each side, in the order they ran.
    public var times: [String: PairedTimes]?
}

public struct PairRatios: Codable {
    public var median, min, max: Double
    public var pairs: Int
}

/// Runs the model benchmark and prints a table (or one JSON object with `json`).
/// Workloads, identical in tools/torch_reference.py:
///   train       B x T tokens, weight 1 on every prediction: forward, backward, clip, AdamW step.
///   score       B x T tokens, weights on the second half: forward only.
///   preference  B/2 SimPO pairs of T tokens (completion = last 2/3): forward, loss, backward,
///               clip, AdamW step.
///   sample      sampleBatch prompts of promptLength tokens, newTokens new tokens each, full
///               vocabulary, temperature 1, KV cache.
@discardableResult
public func runModelBench(options o: ModelBenchOptions) throws -> ModelBenchReport {
    var config = o.config
    config.maxSeq = max(config.maxSeq, o.seqLen, o.promptLength + o.newTokens)
    try config.validate()
    if let kernels = o.kernels { try kernels.select() } else { try KernelPath.select() }
    setComputeThreads(o.threads)
    let B = o.batch, T = o.seqLen

    // Everything is allocated here, before the timed loops.
    let model = Transformer(config: config, seed: 0, batchCapacity: B)
    let optimizer = AdamW(parameterTable: model.parameterTable, parameterCount: model.parameterCount)
    var rng = Xoshiro256RNG(seed: 1)
    var trainBatch = TokenBatch(batchSize: B, seqLen: T)
    for i in trainBatch.tokens.indices { trainBatch.tokens[i] = Int32.random(in: 0..<Int32(config.vocabSize), using: &rng) }
    var scoreBatch = trainBatch, preferenceBatch = trainBatch
    for b in 0..<B {
        trainBatch.lengths[b] = T; scoreBatch.lengths[b] = T; preferenceBatch.lengths[b] = T
        for t in 0..<T {
            trainBatch.weights[b * T + t] = t >= 1 ? 1 : 0
            scoreBatch.weights[b * T + t] = t >= T / 2 ? 1 : 0
            preferenceBatch.weights[b * T + t] = t >= T / 3 ? 1 : 0
        }
    }
    let trainCoefficients = [Float](repeating: -1 / Float(B * (T - 1)), count: B)
    let completionLength = Double(T - T / 3)
    var preferenceCoefficients = [Float](repeating: 0, count: B)

    func trainStep() {
        model.zeroGradients()
        model.forward(trainBatch)
        model.backward(sequenceCoefficients: trainCoefficients)
        clipGradients(model.gradients, maxNorm: 1)
        optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: 1e-4)
    }
    func scoreStep() {
        _ = model.forward(scoreBatch)
    }
    func preferenceStep() {
        model.zeroGradients()
        let logps = model.forward(preferenceBatch)
        let pairs = B / 2
        let chosen = (0..<pairs).map { logps[2 * $0] }, rejected = (0..<pairs).map { logps[2 * $0 + 1] }
        let lengths = [Double](repeating: completionLength, count: pairs)
        let loss = simpoLoss(chosenLogProbs: chosen, chosenLengths: lengths, rejectedLogProbs: rejected, rejectedLengths: lengths)
        for i in 0..<pairs {
            preferenceCoefficients[2 * i] = Float(loss.chosenGradients[i] / Double(pairs))
            preferenceCoefficients[2 * i + 1] = Float(loss.rejectedGradients[i] / Double(pairs))
        }
        model.backward(sequenceCoefficients: preferenceCoefficients)
        clipGradients(model.gradients, maxNorm: 1)
        optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: 1e-4)
    }
    let sampler = Sampler(model: model)
    let prompts = (0..<o.sampleBatch).map { _ in (0..<o.promptLength).map { _ in Int32.random(in: 0..<Int32(config.vocabSize), using: &rng) } }
    let seeds = (0..<o.sampleBatch).map { UInt64($0) }
    func sampleStep() {
        _ = sampler.sample(prompts: prompts, maxNewTokens: o.newTokens, allowedRange: 0..<Int32(config.vocabSize), seeds: seeds)
    }

    // PyTorch builds the same workloads in its own process; each repeat runs one side, then the
    // other, so a spell of load from elsewhere on the machine slows both sides of a pair alike.
    var torch: PyTorchBenchServer?
    var torchNote: String? = o.compareWithPyTorch ? nil : "comparison disabled"
    if o.compareWithPyTorch {
        do { torch = try PyTorchBenchServer(o, config: config) } catch { torchNote = "\(error)" }
    }
    var pairs: [String: PairedTimes] = [:]
    func measure(_ workload: String, _ body: () -> Void) {
        var timed = PairedTimes()
        let theirs = {
            guard let server = torch else { return }
            do { timed.theirs.append(try server.seconds(of: workload)) } catch {
                torchNote = "\(error)"
                torch = nil
            }
        }
        body()  // warm-up: first-touch page faults, thread start
        theirs()
        timed.theirs.removeAll()
        for pair in 0..<max(1, o.repeats) {
            if pair % 2 == 1 { theirs() }
            timed.ours.append(secondsOf(body))
            if pair % 2 == 0 { theirs() }
        }
        pairs[workload] = timed
    }
    let trainFLOPs = FLOPs.trainingStep(config, batch: B, seqLen: T, headRows: trainBatch.weightedCounts.reduce(0, +))
    let workloads: [(String, () -> Void)] = [
        ("train", trainStep), ("score", scoreStep), ("preference", preferenceStep), ("sample", sampleStep),
    ]
    for (name, body) in workloads { measure(name, body) }
    func rates(_ framework: String, _ median: (PairedTimes) -> Double) -> ModelBenchNumbers {
        let train = median(pairs["train"]!), score = median(pairs["score"]!)
        let preference = median(pairs["preference"]!), sample = median(pairs["sample"]!)
        return ModelBenchNumbers(
            framework: framework, threads: o.threads,
            train_tokens_per_s: Double(B * T) / train, score_tokens_per_s: Double(B * T) / score,
            sample_tokens_per_s: Double(o.sampleBatch * o.newTokens) / sample,
            preference_pairs_per_s: Double(B / 2) / preference,
            train_step_s: train, score_s: score, sample_s: sample, preference_step_s: preference,
            train_gflops: trainFLOPs / train / 1e9)
    }
    var suder = rates("suder (Swift + OpenBLAS)") { median($0.ours) }
    suder.peak_rss_mb = peakResidentMegabytes()
    suder.blas_core = openBLASCoreName
    suder.kernels = KernelPath.active.rawValue
    suder.fma_peak_gflops = KernelPath.active.fmaPeakGFLOPs()

    var report = ModelBenchReport(
        config: config, batch: B, seqLen: T, sampleBatch: o.sampleBatch,
        promptLength: o.promptLength, newTokens: o.newTokens, suder: suder)
    if let server = torch {
        do {
            let sharedRNG = try (0..<max(1, o.repeats)).map { _ in try server.seconds(of: "sample_shared_rng") }
            let info = try server.finish()
            var theirs = rates(info.framework) { median($0.theirs) }
            theirs.peak_rss_mb = info.peak_rss_mb
            theirs.cpu_capability = info.cpu_capability
            theirs.sample_shared_rng_tokens_per_s = Double(o.sampleBatch * o.newTokens) / median(sharedRNG)
            report.torch = theirs
            report.ratios = pairs.compactMapValues(\.ratios)
        } catch {
            torchNote = "\(error)"
        }
    }
    report.torchNote = torchNote
    report.times = pairs
    if o.json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    } else {
        printBenchTable(report)
    }
    return report
}

private func secondsOf(_ body: () -> Void) -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

/// One workload's timed repeats on both sides, in the order they ran (ours[i] beside theirs[i]).
public struct PairedTimes: Codable {
    public var ours: [Double] = []
    public var theirs: [Double] = []

    /// Our speed over PyTorch's in each pair (their time over ours), summarised; nil without PyTorch's.
    var ratios: PairRatios? {
        guard !theirs.isEmpty, theirs.count == ours.count else { return nil }
        let each = zip(ours, theirs).map { $1 / $0 }
        return PairRatios(median: median(each), min: each.min()!, max: each.max()!, pairs: each.count)
    }
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func peakResidentMegabytes() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024  // Linux reports kilobytes
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
}

private func runProcess(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws
    -> (status: Int32, output: String, error: String)
{
    let process = Process()
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [executable] + arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let output = out.fileHandleForReading.readDataToEndOfFile()
    let error = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: error, as: UTF8.self))
}

/// `tools/torch_reference.py bench` in its own process: it builds the bench's workloads on the
/// same architecture, then runs one when asked and answers with its seconds.
private final class PyTorchBenchServer {
    private let process = Process()
    private let requests = Pipe(), answers = Pipe()
    private let errorLog: URL
    private var pending = Data()

    init(_ o: ModelBenchOptions, config: ModelConfig) throws {
        guard (try? runProcess(o.python, ["-c", "import torch"]).status) == 0 else {
            throw BenchError(description: "PyTorch not importable by \(o.python); no side-by-side comparison")
        }
        guard FileManager.default.fileExists(atPath: o.referenceScript) else {
            throw BenchError(description: "\(o.referenceScript) not found (run from the repository root)")
        }
        signal(SIGPIPE, SIG_IGN)  // a server that died shows as a failed write, not our death
        errorLog = FileManager.default.temporaryDirectory.appendingPathComponent("suder-bench-torch-\(UUID().uuidString).log")
        guard FileManager.default.createFile(atPath: errorLog.path, contents: nil) else {
            throw BenchError(description: "cannot create \(errorLog.path) for PyTorch's messages")
        }
        process.environment = ProcessInfo.processInfo.environment.merging(pyTorchInstructionSet(KernelPath.active)) { $1 }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            o.python, o.referenceScript, "bench", "--threads", "\(o.threads)", "--vocab", "\(config.vocabSize)",
            "--d-model", "\(config.dModel)", "--layers", "\(config.nLayers)", "--heads", "\(config.nHeads)",
            "--ffn", "\(config.ffnHidden)", "--seq", "\(o.seqLen)", "--batch", "\(o.batch)",
            "--sample-batch", "\(o.sampleBatch)", "--prompt", "\(o.promptLength)", "--new-tokens", "\(o.newTokens)",
        ]
        process.standardInput = requests
        process.standardOutput = answers
        process.standardError = try FileHandle(forWritingTo: errorLog)
        try process.run()
        guard try readLine() == "ready" else { throw failure("did not start") }
    }

    deinit {
        if process.isRunning { process.terminate() }
        try? FileManager.default.removeItem(at: errorLog)
    }

    /// Runs `workload` once on PyTorch's side.
    func seconds(of workload: String) throws -> Double {
        guard let seconds = Double(try ask(workload)) else { throw failure("gave no time for \(workload)") }
        return seconds
    }

    /// Its framework, instruction set and peak resident set; the server then exits.
    func finish() throws -> (framework: String, peak_rss_mb: Double, cpu_capability: String) {
        struct Info: Decodable { var framework: String, peak_rss_mb: Double, cpu_capability: String }
        guard let info = try? JSONDecoder().decode(Info.self, from: Data(try ask("info").utf8)) else {
            throw failure("gave no info")
        }
        try requests.fileHandleForWriting.close()
        process.waitUntilExit()
        return (info.framework, info.peak_rss_mb, info.cpu_capability)
    }

    private func ask(_ request: String) throws -> String {
        do { try requests.fileHandleForWriting.write(contentsOf: Data((request + "\n").utf8)) } catch {
            throw failure("stopped before \(request)")
        }
        guard let answer = try readLine() else { throw failure("stopped during \(request)") }
        return answer
    }

    /// The next line of the server's output, nil at its end.
    private func readLine() throws -> String? {
        while true {
            if let end = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[pending.startIndex..<end], as: UTF8.self)
                pending = Data(pending[(end + 1)...])
                return line
            }
            let chunk = answers.fileHandleForReading.availableData
            if chunk.isEmpty { return nil }
            pending.append(chunk)
        }
    }

    private func failure(_ what: String) -> BenchError {
        let log = (try? String(contentsOf: errorLog, encoding: .utf8)) ?? ""
        return BenchError(description: "tools/torch_reference.py bench \(what): \(log.suffix(500))")
    }
}

/// Environment that holds PyTorch to the instruction set of our kernel path: ATen's kernels, oneDNN
/// and MKL each have their own limit. The BLAS path leaves PyTorch at its default.
func pyTorchInstructionSet(_ path: KernelPath) -> [String: String] {
    switch path {
    case .avx512: ["ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_ENABLE_INSTRUCTIONS": "AVX512"]
    case .avx2: ["ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"]
    case .blas: [:]
    }
}

private func printBenchTable(_ r: ModelBenchReport) {
    let c = r.config
    print(
        "model bench: V \(c.vocabSize), C \(c.dModel), L \(c.nLayers), NH \(c.nHeads), H \(c.ffnHidden); "
            + "train/score B \(r.batch) x T \(r.seqLen); sample \(r.sampleBatch) x (\(r.promptLength) + \(r.newTokens)); "
            + "threads \(r.suder.threads); medians")
    func cell(_ x: Double?) -> String { x.map { String(format: "%12.1f", $0) } ?? String(repeating: " ", count: 11) + "-" }
    func ratio(_ workload: String) -> String {
        r.ratios?[workload].map { String(format: "%7.2fx  (%.2f-%.2f)", $0.median, $0.min, $0.max) } ?? "       -"
    }
    print("metric                          suder       torch    ratio: median of alternated pairs (range)")
    let s = r.suder, t = r.torch
    print("train tokens/s           \(cell(s.train_tokens_per_s)) \(cell(t?.train_tokens_per_s)) \(ratio("train"))")
    print("train GFLOP/s            \(cell(s.train_gflops)) \(cell(t?.train_gflops)) \(ratio("train"))")
    if let peak = s.fma_peak_gflops, let achieved = s.train_gflops {
        func share(_ x: Double?) -> String { x.map { String(format: "%11.0f%%", 100 * $0 / peak) } ?? String(repeating: " ", count: 11) + "-" }
        let bits = s.kernels == "avx2" || KernelPath.available.first != .avx512 ? 256 : 512
        print(
            "train / FMA peak         \(share(achieved)) \(share(t?.train_gflops))    "
                + "(peak \(String(format: "%.1f", peak)) GFLOP/s: one core, \(bits)-bit FMA loop, fastest of 8 runs)")
    }
    print("score tokens/s           \(cell(s.score_tokens_per_s)) \(cell(t?.score_tokens_per_s)) \(ratio("score"))")
    print("sample new tokens/s      \(cell(s.sample_tokens_per_s)) \(cell(t?.sample_tokens_per_s)) \(ratio("sample"))")
    print(
        "preference pairs/s       \(cell(s.preference_pairs_per_s)) \(cell(t?.preference_pairs_per_s)) \(ratio("preference"))"
    )
    print("peak RSS MB              \(cell(s.peak_rss_mb)) \(cell(t?.peak_rss_mb))")
    if let shared = t?.sample_shared_rng_tokens_per_s {
        print("(torch sampling with one shared RNG instead of one per sequence: \(String(format: "%.1f", shared)) tokens/s)")
    }
    let path = KernelPath(rawValue: s.kernels ?? "") ?? .blas
    print(
        "kernels: \(path.label) on \(s.threads) thread(s), blocking \(path.blocking); OpenBLAS core: \(s.blas_core ?? "?"); "
            + "cpu: \(cpuModelName())")
    if let t {
        let limits = pyTorchInstructionSet(path).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        print("torch: ATen capability \(t.cpu_capability ?? "?")" + (limits.isEmpty ? " (default)" : ", run with " + limits.joined(separator: " ")))
    }
    if path == .blas, let advice = openBLASCoreAdvice() { print("note: \(advice)") }
    if let note = r.torchNote { print("note: \(note)") }
}

/// The bench architecture from a config file's `model.*` keys (vocabulary and sequence length stay
/// the bench's: no dataset is involved).
public func benchModelConfig(file: URL?, overrides: [String], vocabularySize: Int, sequenceLength: Int) throws -> ModelConfig {
    let config = try ResolvedConfig.resolve(file: file, overrides: overrides)
    try checkConsistency(config)
    var model = ModelSettings(config).modelConfig(
        vocabulary: Vocabulary(codebookSize: vocabularySize - Vocabulary.specialNames.count - Vocabulary.worldWords.count))
    model.maxSeq = max(model.maxSeq, sequenceLength)
    return model
}
