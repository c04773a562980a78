import ArgumentParser
import Foundation
import SUDERCluster

/// Options every stage takes: a config file, the run directory, and trailing key=value overrides.
struct StageArguments: ParsableArguments {
    @Option(help: "YAML config file (e.g. configs/demo.yaml).")
    var config: String?

    @Option(name: .customLong("run-dir"), help: "Directory for this run's outputs, checkpoints and logs.")
    var runDir: String

    @Argument(help: "Config overrides, e.g. model.d_model=128 suder.beta=2.5.")
    var overrides: [String] = []

    var options: StageOptions {
        StageOptions(configFile: config.map { URL(fileURLWithPath: $0) }, runDir: URL(fileURLWithPath: runDir, isDirectory: true),
                     overrides: overrides)
    }
}

/// Starts the communicator, resolves the config (all ranks exit together on a bad one) and runs
/// `body`; never returns.
func runJob(_ arguments: StageArguments, _ body: (JobContext) throws -> Void) -> Never {
    let job = prepareJob(comm: makeCommunicator(), options: arguments.options)
    runReportingErrors(job) { try body(job) }
}

struct Suder: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suder",
        abstract: "SUDER on CPU clusters: self-improving unified multimodal models with dual self-rewards.",
        discussion: "Run under mpirun or srun for several ranks; every rank runs the same command.",
        subcommands: [Data.self, Pretrain.self, SelfImprove.self, Eval.self, Pipeline.self, Bench.self, Report.self,
                      Export.self, Doctor.self])
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
        static let configuration = CommandConfiguration(commandName: "suder", abstract: "Self-improvement rounds with dual self-rewards and online SimPO.")
        @OptionGroup var stage: StageArguments
        func run() throws { runJob(stage) { try runStage(.suder, job: $0) } }
    }

    struct Eval: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "GenEval-mini and understanding evaluation of the run's model.")
        @OptionGroup var stage: StageArguments
        func run() throws { runJob(stage) { try runStage(.eval, job: $0) } }
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
        static let configuration = CommandConfiguration(abstract: "Benchmarks against the reference implementation.")
        func run() throws {
            printError("error: suder bench is not implemented yet")
            throw ExitCode(3)
        }
    }

    struct Report: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Summarise a run directory's results.")
        func run() throws {
            printError("error: suder report is not implemented yet")
            throw ExitCode(3)
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Export a checkpoint's weights (safetensors).")
        func run() throws {
            printError("error: suder export is not implemented yet")
            throw ExitCode(3)
        }
    }

    struct Doctor: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check MPI, BLAS and zstd on every rank; run this first on a new cluster.",
            discussion: "Under mpirun -np N or srun it prints one row per rank and verifies collectives, sgemm and zstd.")
        @Option(help: "BLAS threads per rank; 0 = SLURM_CPUS_PER_TASK, else the cores the rank is bound to.")
        var threads: Int = 0

        func run() throws {
            let comm = makeCommunicator()
            comm.exitTogether(code: runDoctor(comm: comm, threads: threads) ? 0 : 1)
        }
    }
}

// Argument errors are found identically on every rank before MPI starts: only rank 0 reports.
let launcherRank = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_RANK"] ?? ProcessInfo.processInfo.environment["PMIX_RANK"]
do {
    var command = try Suder.parseAsRoot()
    try command.run()
} catch {
    if launcherRank == nil || launcherRank == "0" { Suder.exit(withError: error) }
    exit(Suder.exitCode(for: error).rawValue)
}
