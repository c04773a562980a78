import COpenBLAS
import Foundation

/// What every stage command receives from the command line.
public struct StageOptions {
    public var configFile: URL?
    public var runDir: URL
    public var overrides: [String]

    public init(configFile: URL?, runDir: URL, overrides: [String]) {
        self.configFile = configFile
        self.runDir = runDir
        self.overrides = overrides
    }
}

/// An error every rank reached in the same way (bad config, or rank 0's verdict broadcast by
/// `rootDecides`): the job ends with `exitCode` on all ranks without an MPI abort.
public struct AllRanksError: Error, CustomStringConvertible {
    public let description: String
    public let exitCode: Int32
    public init(_ description: String, exitCode: Int32 = 2) {
        self.description = description
        self.exitCode = exitCode
    }
}

/// One running job: the process group, the resolved config and where results go.
public final class JobContext {
    public let comm: Communicator
    public let config: ResolvedConfig
    public let runDir: URL
    public let console: Console
    public let threads: Int
    /// The model the SUDER stage starts from (`suder suder --init`); nil = the run's pretrain stage.
    public var suderInit: URL?
    /// Whether this job wrote the run directory's first `config.yaml` (rank 0), so a command that
    /// fails before writing anything else can leave the directory unbound (`forgetFreshConfig`).
    var recordedFirstConfig = false

    public init(comm: Communicator, config: ResolvedConfig, runDir: URL) {
        self.comm = comm
        self.config = config
        self.runDir = runDir
        console = Console(
            rank: comm.rank, progressMode: config.string("runtime.progress"),
            progressInterval: config.double("runtime.progress_interval"))
        threads = resolveThreads(requested: config.int("runtime.threads"))
        // The model's kernels read their thread count back from OpenBLAS (Model's computeThreads).
        openblas_set_num_threads(Int32(threads))
    }

    public func stageDirectory(_ stage: String) -> URL {
        runDir.appendingPathComponent(stage, isDirectory: true)
    }

    /// Whether `stage` finished in this run directory (its DONE marker), as rank 0 sees it; the
    /// same answer on every rank. Collective.
    public func stageFinished(_ stage: String) throws -> Bool {
        let directory = stageDirectory(stage)
        return try comm.rootDecides { CheckpointStore.hasDoneMarker(directory) }
    }
}

/// The process group for this process: MPI under a launcher, a single process otherwise. Stops
/// when Slurm started several tasks that MPI does not join into one job (`srun` without an MPI
/// plugin): each would run alone as rank 0 and all would write one run directory.
public func makeCommunicator() -> Communicator {
    let comm: Communicator = MPICommunicator.launchedByMPI ? MPICommunicator() : SingleProcessCommunicator()
    if let problem = unjoinedSlurmTasksProblem(mpiSize: comm.size) {
        if ProcessInfo.processInfo.environment["SLURM_PROCID"] ?? "0" == "0" { printError("error: \(problem)") }
        comm.exitTogether(code: 2)
    }
    return comm
}

/// The error for a Slurm step of several tasks that MPI sees as one rank each; nil when fine.
/// mpirun's ranks are left alone: they inherit the step of mpirun's daemons, not their own.
func unjoinedSlurmTasksProblem(mpiSize: Int, environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
    guard mpiSize == 1, environment["OMPI_COMM_WORLD_SIZE"] == nil,
        let tasks = environment["SLURM_STEP_NUM_TASKS"].flatMap(Int.init), tasks > 1
    else { return nil }
    return "Slurm started \(tasks) tasks, but MPI sees each as a job of 1 rank, so every task would run alone as rank 0 "
        + "and all would write the same run directory; srun needs an MPI plugin: use `srun --mpi=pmix` "
        + "(see `srun --mpi=list`), or start the ranks with mpirun"
}

/// Resolves and checks the config on every rank from the file text rank 0 read (so all reach
/// the same verdict), runs the caller's `preflight` on every rank (its own checks before the run
/// directory is touched, e.g. which kernels run; it returns a note for the start-up line such as
/// "avx512 kernels, "), takes the run directory's lock (`RunLock`, held by rank 0 until the process
/// exits), prints the config on rank 0, prints what each stage needs in memory (`memoryNeeds`,
/// the job's estimate) and checks it fits, and only then records the config in the run directory.
/// A bad config or a model too large ends every rank with exit code 2 before any heavy work.
public func prepareJob(
    comm: Communicator, options: StageOptions, schema: ConfigSchema,
    preflight: (Communicator) throws -> String = { _ in "" },
    memoryNeeds: (ResolvedConfig) -> [StageMemory] = { _ in [] }
) -> JobContext {
    do {
        let file = try options.configFile.map { url in (url, try comm.rootDecides { try ResolvedConfig.readConfigFile(url) }) }
        let config = try ResolvedConfig.resolve(fileContents: file, overrides: options.overrides, schema: schema)
        try schema.checkConsistency(config)
        let preparedNote = try preflight(comm)
        let job = JobContext(comm: comm, config: config, runDir: options.runDir)
        let lockNote = try comm.rootDecides { () -> String in
            let (lock, note) = try RunLock.acquire(options.runDir)
            RunLock.holdUntilExit(lock)
            return note ?? ""
        }
        if !lockNote.isEmpty { job.console.warn(lockNote) }
        job.console.print(
            "suder: \(comm.size) rank(s), \(job.threads) thread(s) per rank, \(preparedNote)run directory \(options.runDir.path)")
        if let problem = threadsOutnumberCoresProblem(threads: job.threads, cores: boundCores()) { job.console.warn(problem) }
        job.console.print(config.table())
        try checkMemory(memoryNeeds(config), comm: comm, available: memoryAvailablePerRank(), print: job.console.print)
        try recordConfig(job, schema: schema)
        return job
    } catch {
        if comm.isRoot { printError("error: \(error)") }
        comm.exitTogether(code: 2)
    }
}

/// Saves the resolved config as `<run-dir>/config.yaml`. A run directory keeps one config for
/// its whole life: resuming or continuing it with different settings would mix two experiments.
/// Rank 0 compares and writes; every rank learns its verdict.
public func recordConfig(_ job: JobContext, schema: ConfigSchema) throws {
    let file = job.runDir.appendingPathComponent("config.yaml")
    try job.comm.rootDecides {
        if FileManager.default.fileExists(atPath: file.path) {
            // Configs recorded before a key was renamed still compare under the new name.
            let previous = try ResolvedConfig.resolve(file: file, overrides: [], schema: schema, acceptRenamedKeys: true)
            let changed = job.config.differences(from: previous, ignoring: schema.resultNeutralPrefixes)
            if !changed.isEmpty {
                let detail = changed.map { "\($0): \(previous.values[$0]?.description ?? "-") -> \(job.config.values[$0]?.description ?? "-")" }
                throw AllRanksError(
                    "the run directory \(job.runDir.path) was started with a different config ("
                        + detail.joined(separator: "; ") + "); use a new --run-dir or the original settings")
            }
        }
        do {
            job.recordedFirstConfig = !FileManager.default.fileExists(atPath: file.path)
            try FileManager.default.createDirectory(at: job.runDir, withIntermediateDirectories: true)
            try writeFileAtomically(Data(job.config.yaml().utf8), to: file)
        } catch {
            throw AllRanksError("cannot write \(file.path): \(error.localizedDescription)")
        }
    }
}

/// Removes the `config.yaml` this job recorded first when nothing else was written to the run
/// directory (a command refused by its own input checks, e.g. `pretrain` before `data`), so the
/// refused settings do not bind the directory. Rank 0 only.
func forgetFreshConfig(_ job: JobContext) {
    guard job.recordedFirstConfig,
        let entries = try? FileManager.default.contentsOfDirectory(atPath: job.runDir.path),
        entries.allSatisfy({ $0 == "config.yaml" || $0 == RunLock.fileName })
    else { return }
    try? FileManager.default.removeItem(at: job.runDir.appendingPathComponent("config.yaml"))
}

/// Writes `data` under a temporary name beside `url`, syncs it and renames it into place, so a
/// crash leaves either the old file or the new one.
public func writeFileAtomically(_ data: Data, to url: URL) throws {
    let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
    guard FileManager.default.createFile(atPath: temporary.path, contents: nil) else {
        throw AllRanksError("cannot create \(temporary.path)")
    }
    let handle = try FileHandle(forWritingTo: temporary)
    do {
        try handle.write(contentsOf: data)
        try handle.synchronize()
        try handle.close()
    } catch {
        try? handle.close()
        try? FileManager.default.removeItem(at: temporary)
        throw error
    }
    guard rename(temporary.path, url.path) == 0 else {
        let reason = String(cString: strerror(errno))
        try? FileManager.default.removeItem(at: temporary)
        throw AllRanksError("cannot rename \(temporary.path) to \(url.path): \(reason)")
    }
}

/// Threads per rank: the config's value, else Slurm's cpus-per-task, else the cores this
/// process may run on (one under mpirun's default core binding).
public func resolveThreads(requested: Int) -> Int {
    if requested > 0 { return requested }
    let environment = ProcessInfo.processInfo.environment
    if let slurm = environment["SLURM_CPUS_PER_TASK"], let n = Int(slurm), n > 0 { return n }
    let cores = boundCores().count
    // Unbound ranks (mpirun --oversubscribe, --bind-to none) share the node's cores.
    if cores == ProcessInfo.processInfo.activeProcessorCount,
        let local = environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init), local > 1
    {
        return max(1, cores / local)
    }
    return max(1, cores)
}

/// The warning for more threads per rank than the cores the rank may run on; nil when they fit.
/// mpirun binds each rank to one core by default, so `runtime.threads` 2 there gains nothing, and
/// the kernels' polling workers take turns with the rank's main thread on that one core.
func threadsOutnumberCoresProblem(threads: Int, cores: [Int]) -> String? {
    guard threads > cores.count else { return nil }
    return "\(threads) threads per rank, but this rank may run on \(cores.count) core(s) "
        + "(\(cores.map(String.init).joined(separator: ","))), so its threads share them and run no faster: "
        + "give each rank \(threads) cores (mpirun --map-by slot:PE=\(threads), or --bind-to none; "
        + "srun --cpus-per-task=\(threads)) or lower runtime.threads"
}

/// The CPU ids this process may run on, from the kernel's affinity list.
public func boundCores() -> [Int] {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") })
    else { return Array(0..<ProcessInfo.processInfo.activeProcessorCount) }
    var cores: [Int] = []
    for part in line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces).split(separator: ",") {
        let bounds = part.split(separator: "-").compactMap { Int($0) }
        if bounds.count == 2 { cores += Array(bounds[0]...bounds[1]) } else if bounds.count == 1 { cores.append(bounds[0]) }
    }
    return cores.isEmpty ? Array(0..<ProcessInfo.processInfo.activeProcessorCount) : cores
}

/// Runs `body` as the job's work: an `AllRanksError` ends all ranks with its code; any other error
/// may have hit one rank only, so it aborts the whole job.
public func runReportingErrors(_ job: JobContext, _ body: () throws -> Void) -> Never {
    do {
        try body()
    } catch let error as AllRanksError {
        if job.comm.isRoot {
            printError("error: \(error.description)")
            forgetFreshConfig(job)
        }
        job.comm.exitTogether(code: error.exitCode)
    } catch {
        job.comm.abortJob("\(error)", code: 1)
    }
    job.comm.exitTogether(code: 0)
}
