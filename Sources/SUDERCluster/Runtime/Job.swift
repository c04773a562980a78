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

/// An error every rank reached in the same way (bad config, missing input checked on all ranks):
/// the job ends with `exitCode` on all ranks without an MPI abort.
public struct AgreedError: Error, CustomStringConvertible {
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

    public init(comm: Communicator, config: ResolvedConfig, runDir: URL) {
        self.comm = comm
        self.config = config
        self.runDir = runDir
        console = Console(
            rank: comm.rank, progressMode: config.string("runtime.progress"),
            progressInterval: config.double("runtime.progress_interval"))
        threads = resolveThreads(requested: config.int("runtime.threads"))
        openblas_set_num_threads(Int32(threads))
    }

    public func stageDirectory(_ stage: String) -> URL {
        runDir.appendingPathComponent(stage, isDirectory: true)
    }

    public func isFinished(_ stage: String) -> Bool {
        FileManager.default.fileExists(atPath: stageDirectory(stage).appendingPathComponent("DONE").path)
    }
}

/// The process group for this process: MPI under a launcher, a single process otherwise.
public func makeCommunicator() -> Communicator {
    MPICommunicator.launchedByMPI ? MPICommunicator() : SingleProcessCommunicator()
}

/// Resolves and checks the config on every rank (each reads the same file, so all reach the same
/// verdict), prints it on rank 0 and records it in the run directory. A bad config ends every
/// rank with exit code 2 before any heavy work.
public func prepareJob(comm: Communicator, options: StageOptions) -> JobContext {
    do {
        let config = try ResolvedConfig.resolve(file: options.configFile, overrides: options.overrides)
        try checkConsistency(config)
        let job = JobContext(comm: comm, config: config, runDir: options.runDir)
        try recordConfig(job)
        job.console.print("suder: \(comm.size) rank(s), \(job.threads) BLAS thread(s) per rank, run directory \(options.runDir.path)")
        job.console.print(config.table())
        return job
    } catch {
        if comm.isRoot { printError("error: \(error)") }
        comm.exitTogether(code: 2)
    }
}

/// Saves the resolved config as `<run-dir>/config.yaml`. A run directory keeps one config for
/// its whole life: resuming or continuing it with different settings would mix two experiments.
func recordConfig(_ job: JobContext) throws {
    let file = job.runDir.appendingPathComponent("config.yaml")
    // Settings that change how a run is carried out or logged, never its results.
    let ignorable = ["runtime.", "checkpoint.keep_last", "suder.log_samples"]
    if FileManager.default.fileExists(atPath: file.path) {
        let previous = try ResolvedConfig.resolve(file: file, overrides: [])
        let changed = job.config.differences(from: previous, ignoring: ignorable)
        if !changed.isEmpty {
            let detail = changed.map { "\($0): \(previous.values[$0]?.description ?? "-") -> \(job.config.values[$0]?.description ?? "-")" }
            throw AgreedError(
                "the run directory \(job.runDir.path) was started with a different config ("
                    + detail.joined(separator: "; ") + "); use a new --run-dir or the original settings")
        }
    }
    // Only rank 0 writes; the others wait so nobody reads a half-written file.
    var failure = ""
    if job.comm.isRoot {
        do {
            try FileManager.default.createDirectory(at: job.runDir, withIntermediateDirectories: true)
            try writeFileAtomically(Data(job.config.yaml().utf8), to: file)
        } catch {
            failure = "cannot write \(file.path): \(error.localizedDescription)"
        }
    }
    let message = String(decoding: job.comm.broadcast(bytes: Array(failure.utf8)), as: UTF8.self)
    if !message.isEmpty { throw AgreedError(message) }
}

/// Writes `data` under a temporary name beside `url`, syncs it and renames it into place, so a
/// crash leaves either the old file or the new one.
public func writeFileAtomically(_ data: Data, to url: URL) throws {
    let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
    guard FileManager.default.createFile(atPath: temporary.path, contents: nil) else {
        throw AgreedError("cannot create \(temporary.path)")
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
        throw AgreedError("cannot rename \(temporary.path) to \(url.path): \(reason)")
    }
}

/// BLAS threads per rank: the config's value, else Slurm's cpus-per-task, else the cores this
/// process may run on (one under mpirun's default core binding).
func resolveThreads(requested: Int) -> Int {
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

/// The CPU ids this process may run on, from the kernel's affinity list.
func boundCores() -> [Int] {
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

/// Runs `body` as the job's work: an `AgreedError` ends all ranks with its code; any other error
/// may have hit one rank only, so it aborts the whole job.
public func runReportingErrors(_ job: JobContext, _ body: () throws -> Void) -> Never {
    do {
        try body()
    } catch let error as AgreedError {
        if job.comm.isRoot { printError("error: \(error.description)") }
        job.comm.exitTogether(code: error.exitCode)
    } catch {
        job.comm.abortJob("\(error)", code: 1)
    }
    job.comm.exitTogether(code: 0)
}
