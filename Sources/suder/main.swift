import ArgumentParser
import ClusterRuntime
import Foundation
import Model
import SUDERCluster
import World

/// Options every stage takes: a config file, the run directory, and trailing key=value overrides.
struct StageArguments: ParsableArguments {
    @Option(help: "YAML config file (e.g. configs/demo.yaml).")
    var config: String?

    @Option(name: .customLong("run-dir"), help: "Directory for this run's outputs, checkpoints and logs.")
    var runDir: String

    @Argument(help: "Config overrides, e.g. model.d_model=128 suder.simpo_beta=2.5.")
    var overrides: [String] = []

    func validate() throws {
        guard !runDir.isEmpty else { throw ValidationError("--run-dir must name a directory; received an empty path") }
    }

    var options: StageOptions {
        StageOptions(
            configFile: config.map { URL(fileURLWithPath: $0) }, runDir: URL(fileURLWithPath: runDir, isDirectory: true),
            overrides: overrides)
    }
}

/// Starts the communicator, resolves the config (all ranks exit together on a bad one) and runs
/// `body`; never returns.
func runJob(_ arguments: StageArguments, _ body: (JobContext) throws -> Void) -> Never {
    let job = prepareJob(
        comm: makeCommunicator(), options: arguments.options, schema: configSchema,
        preflight: { comm in "\(try selectKernelPath(comm: comm)) kernels, " }, memoryNeeds: stageMemory)
    runReportingErrors(job) { try body(job) }
}

struct Suder: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suder",
        abstract: "SUDER on CPU clusters: self-improving unified multimodal models with dual self-rewards.",
        discussion: "Run under mpirun or srun for several ranks; every rank runs the same command.",
        subcommands: [
            Data.self, Pretrain.self, SelfImprove.self, Eval.self, Pipeline.self, Bench.self, Report.self,
            Export.self, Generate.self, Caption.self, Doctor.self,
        ])
}

extension Suder {
    struct Data: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Generate the world, learn the VQ codebook, write token shards.")
        @OptionGroup var stage: StageArguments
        func run() throws { runJob(stage) { try runStage(.data, job: $0) } }
    }

    struct Pretrain: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Supervised pretraining of the base unified model.")
        @OptionGroup var stage: StageArguments
        func run() throws { runJob(stage) { try runStage(.pretrain, job: $0) } }
    }

    struct SelfImprove: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "suder", abstract: "Self-improvement rounds with dual self-rewards: online SimPO, DPO or GRPO.",
            discussion: "Its config keys (set in the YAML file or as key=value overrides):\n\n" + configKeysHelp(prefix: "suder."))
        @OptionGroup var stage: StageArguments
        @Option(name: .customLong("init"), help: "Start from this checkpoint (a step-... directory or a stage directory); default: the run's pretrain stage.")
        var initial: String?

        func run() throws {
            runJob(stage) { job in
                job.suderInit = initial.map { URL(fileURLWithPath: $0, isDirectory: true) }
                try runStage(.suder, job: job)
            }
        }
    }

    struct Eval: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "GenEval-mini and understanding evaluation.",
            subcommands: [Run.self, GenEval.self], defaultSubcommand: Run.self)

        struct Run: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Evaluate the run's models (the eval stage).",
                discussion:
                    "dev (the default) is the split every decision is made on; its results go to <run-dir>/eval/. "
                    + "test is for frozen runs only: its results go to <run-dir>/eval/test/, and each evaluation is recorded "
                    + "in <run-dir>/eval/test-evaluations.jsonl, which `suder report` counts.")
            @OptionGroup var stage: StageArguments
            @Option(help: "Eval split: dev or test.")
            var split: String = EvalSplit.dev.rawValue

            func validate() throws {
                guard EvalSplit(rawValue: split) != nil else {
                    throw ValidationError("--split must be one of \(EvalSplit.allCases.map(\.rawValue).joined(separator: ", ")); received '\(split)'")
                }
            }

            func run() throws { runJob(stage) { try runEvalCommand(job: $0, split: EvalSplit(rawValue: split)!) } }
        }

        struct GenEval: ParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "geneval",
                abstract: "Score a folder of images laid out as GenEval's generator writes them.",
                discussion: "<images>/<index:05d>/metadata.jsonl and <images>/<index:05d>/samples/<k:04d>.png")
            @Option(help: "GenEval metadata file (one JSON object a line), e.g. <run-dir>/data/eval/dev/metadata.jsonl.")
            var metadata: String
            @Option(help: "Folder of samples in GenEval's layout.")
            var images: String
            @Option(help: "Write the summary JSON here; an earlier summary is replaced, any other file only with --force.")
            var summary: String?
            @Flag(
                name: .customLong("allow-missing"),
                help: "Score even if metadata lines lack folders or folders lack images, and report how many.")
            var allowMissing = false
            @Flag(help: "Replace --summary even if it is not an earlier summary (never a run's own files).")
            var force = false

            func run() throws {
                do {
                    try runGenEvalFolderCommand(
                        metadata: URL(fileURLWithPath: metadata), images: URL(fileURLWithPath: images, isDirectory: true),
                        summaryOut: summary.map { URL(fileURLWithPath: $0) }, allowMissing: allowMissing, force: force)
                } catch {
                    printError("error: \(error)")
                    throw ExitCode(2)
                }
            }
        }
    }

    struct Pipeline: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run data, pretrain, suder and eval in order, skipping finished stages.")
        @OptionGroup var stage: StageArguments
        @Option(help: "Last stage to run: data, pretrain, suder or eval.")
        var until: String = "eval"

        func validate() throws {
            guard StageName(rawValue: until) != nil else {
                throw ValidationError("--until must be one of \(StageName.allCases.map(\.rawValue).joined(separator: ", ")); received '\(until)'")
            }
        }

        func run() throws { runJob(stage) { try runPipeline(job: $0, until: StageName(rawValue: until)!) } }
    }

    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Benchmarks, side by side with the PyTorch reference where it is installed.",
            subcommands: [ModelCommand.self, AllreduceCommand.self])

        struct AllreduceCommand: ParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "allreduce",
                abstract: "Time of the gradient allreduce every training step pays, over the ranks it runs on.",
                discussion:
                    "Run under mpirun or srun with the ranks and hosts to measure, e.g. scripts/mpirun -np 2 suder bench allreduce --config configs/cluster.yaml. docs/SCALING.md builds its model from these times."
            )
            @Option(help: "YAML config whose model.* keys and data.codebook_size set the gradient buffer's size.")
            var config: String?
            @Option(help: "Timed allreduces (after one warm-up); medians of the slowest rank are reported.")
            var repeats: Int = 20
            @Flag(help: "Print one JSON object.")
            var json = false
            @Argument(help: "Config overrides, e.g. model.d_model=256.")
            var overrides: [String] = []

            func run() throws {
                let comm = makeCommunicator()
                do {
                    guard repeats > 0 else { throw ValidationError("--repeats must be at least 1, not \(repeats)") }
                    let model = try allreduceBenchModel(file: config.map { URL(fileURLWithPath: $0) }, overrides: overrides)
                    runAllreduceBench(comm: comm, config: model, repeats: repeats, json: json)
                } catch {
                    // Every rank reads the same arguments and file, so all reach this together.
                    if comm.isRoot { printError("error: \(error)") }
                    comm.exitTogether(code: 2)
                }
                comm.exitTogether(code: 0)
            }
        }

        struct ModelCommand: ParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "model",
                abstract: "Training, scoring, sampling and preference-step throughput of the transformer.",
                discussion:
                    "Without --config: d_model 192, 6 layers, 6 heads, vocabulary 1,100. Run from the repository root so tools/torch_reference.py is found.")
            @Option(help: "YAML config whose model.* keys set the architecture.")
            var config: String?
            @Option(help: "Threads for the kernels and OpenBLAS (and PyTorch's threads).")
            var threads: Int = 1
            @Option(help: "Kernel path: avx512, avx2 or blas (default: SUDER_KERNELS, else the best the CPU has); PyTorch is held to the same instruction set.")
            var kernels: String?
            @Option(help: "Timed repetitions per workload; medians are reported.")
            var repeats: Int = 5
            @Flag(help: "Print one JSON object.")
            var json = false
            @Flag(name: .customLong("no-torch"), help: "Do not run the PyTorch reference.")
            var noTorch = false
            @Argument(help: "Config overrides, e.g. model.d_model=256.")
            var overrides: [String] = []

            func run() throws {
                var options = ModelBenchOptions(threads: threads, repeats: repeats, json: json, compareWithPyTorch: !noTorch)
                do {
                    if let kernels { try options.setKernels(named: kernels) }
                    if config != nil || !overrides.isEmpty {
                        options.config = try benchModelConfig(
                            file: config.map { URL(fileURLWithPath: $0) }, overrides: overrides,
                            vocabularySize: options.config.vocabSize, sequenceLength: options.seqLen)
                    }
                    try runModelBench(options: options)
                } catch {
                    printError("error: \(error)")
                    throw ExitCode(2)
                }
            }
        }
    }

    struct Report: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Summarise a run directory's results.",
            discussion: "Give --run-dir once per run (e.g. one per seed): config differences, pretrain and SUDER metrics, "
                + "eval summaries side by side (dev, and test where evaluated, with how often), the spread of the deltas per "
                + "reward source and their mean over pretrained bases, the rounds' likelihood diagnostics in brief, and each "
                + "run's SUDER model against the first run's, paired over prompts (runs from the first run's base; put the "
                + "reference row first). Reads files only; no MPI.")
        @Option(name: .customLong("run-dir"), help: "A run directory; repeat for several runs.")
        var runDirs: [String] = []
        @Option(help: "Write the Markdown report here instead of standard output; an earlier report is replaced, any other file only with --force.")
        var out: String?
        @Option(help: "Also write a self-contained HTML report (charts and image grids) here; replaces like --out.")
        var html: String?
        @Flag(help: "Replace --out or --html even if it is not an earlier report (never a run's own files).")
        var force = false

        func validate() throws {
            guard !runDirs.isEmpty else { throw ValidationError("give at least one --run-dir") }
        }

        func run() throws {
            do {
                try runReportCommand(
                    runDirectories: runDirs.map { URL(fileURLWithPath: $0, isDirectory: true) }, out: out.map { URL(fileURLWithPath: $0) },
                    html: html.map { URL(fileURLWithPath: $0) }, force: force)
            } catch {
                printError("error: \(error)")
                throw ExitCode(2)
            }
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Export a checkpoint's weights as safetensors (tensor names as in tools/torch_reference.py).")
        @Option(
            help: "A checkpoint directory (step-...) or a stage directory (the step its DONE marker records; while it trains, its newest valid checkpoint).")
        var checkpoint: String
        @Option(help: "Output format; only safetensors.")
        var format: String = "safetensors"
        @Option(help: "Output file; never inside a checkpoint directory.")
        var out: String
        @Flag(help: "Replace --out if it exists.")
        var force = false

        func validate() throws {
            guard format == "safetensors" else { throw ValidationError("--format must be safetensors; received '\(format)'") }
        }

        func run() throws {
            do {
                let source = try exportSafetensors(
                    checkpointDirectory: URL(fileURLWithPath: checkpoint, isDirectory: true),
                    to: URL(fileURLWithPath: out), overwrite: force)
                print("wrote \(out) from \(source.path)")
            } catch {
                printError("error: \(error)")
                throw ExitCode(2)
            }
        }
    }

    struct Doctor: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check MPI, BLAS and zstd on every rank; run this first on a new cluster.",
            discussion: "Under mpirun -np N or srun it prints one row per rank and verifies collectives, sgemm and zstd.")
        @Option(help: "Threads per rank (kernels and OpenBLAS); 0 = SLURM_CPUS_PER_TASK, else the cores the rank is bound to.")
        var threads: Int = 0

        func validate() throws {
            guard threads >= 0 else { throw ValidationError("--threads must be 0 (automatic) or more; received \(threads)") }
        }

        func run() throws {
            let comm = makeCommunicator()
            comm.exitTogether(code: runDoctor(comm: comm, threads: threads) ? 0 : 1)
        }
    }
}

// Before anything else, so that every rank's OpenBLAS runs the CPU's kernels (the Double products, the blas path).
restartWithOpenBLASCoreForThisCPU()

// Argument errors are found identically on every rank before MPI starts: only rank 0 reports.
let launcherRank = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_RANK"] ?? ProcessInfo.processInfo.environment["PMIX_RANK"]
do {
    var command = try Suder.parseAsRoot()
    try command.run()
} catch {
    if launcherRank == nil || launcherRank == "0" { Suder.exit(withError: error) }
    exit(Suder.exitCode(for: error).rawValue)
}
