import CMPI
import Foundation

/// `MPI_COMM_WORLD`. Every MPI return code is checked; a failure prints the Swift call site and
/// aborts the whole job through `MPI_Abort`, so no rank is left waiting in a collective.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    private let world = suder_mpi_comm_world()
    private var finalized = false

    /// Largest element count passed to one MPI call: counts are C ints. Tests lower it to
    /// exercise the chunking without allocating gigabytes.
    public var chunkLimit = Int(Int32.max)

    /// Initialises MPI. Call once per process, before anything else touches MPI.
    public init() {
        var provided: Int32 = 0
        let initCode = MPI_Init_thread(nil, nil, suder_mpi_thread_funneled(), &provided)
        if initCode != MPI_SUCCESS {
            printError("fatal: MPI_Init_thread failed with code \(initCode)")
            exit(1)
        }
        // Errors come back as return codes so they can be reported with their Swift call site.
        let world = suder_mpi_comm_world()
        _ = MPI_Comm_set_errhandler(world, suder_mpi_errors_return())
        var r: Int32 = 0, s: Int32 = 0
        _ = MPI_Comm_rank(world, &r)
        _ = MPI_Comm_size(world, &s)
        rank = Int(r)
        size = Int(s)
    }

    /// True when this process was started by an MPI launcher (mpirun, srun): only then is it worth
    /// initialising MPI; a plain `suder doctor` on a laptop runs as one process.
    public static var launchedByMPI: Bool {
        let env = ProcessInfo.processInfo.environment
        return env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMIX_RANK"] != nil || env["PMI_RANK"] != nil
    }

    public var processorName: String {
        var buffer = [CChar](repeating: 0, count: Int(suder_mpi_max_processor_name()) + 1)
        var length: Int32 = 0
        check(MPI_Get_processor_name(&buffer, &length), "MPI_Get_processor_name", #fileID, #line)
        return String(cString: buffer)
    }

    public var libraryVersion: String {
        var buffer = [CChar](repeating: 0, count: Int(suder_mpi_max_library_version_string()) + 1)
        var length: Int32 = 0
        check(MPI_Get_library_version(&buffer, &length), "MPI_Get_library_version", #fileID, #line)
        return String(cString: buffer).split(separator: ",").first.map(String.init) ?? ""
    }

    public func barrier(file: StaticString, line: UInt) {
        check(MPI_Barrier(world), "MPI_Barrier", file, line)
    }

    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int, file: StaticString, line: UInt) {
        guard let base = bytes.baseAddress else { return }
        forEachChunk(count: bytes.count) { start, count in
            check(MPI_Bcast(base + start, Int32(count), suder_mpi_uint8(), Int32(root), world), "MPI_Bcast", file, line)
        }
    }

    public func allreduce<T: ReducibleScalar>(_ values: UnsafeMutableBufferPointer<T>, op: ReduceOp, file: StaticString, line: UInt) {
        guard let base = values.baseAddress else { return }
        let type: MPI_Datatype
        switch T.reducibleKind {
        case .float: type = suder_mpi_float()
        case .double: type = suder_mpi_double()
        case .int64: type = suder_mpi_int64()
        }
        let mpiOp: MPI_Op
        switch op {
        case .sum: mpiOp = suder_mpi_sum()
        case .max: mpiOp = suder_mpi_max()
        case .min: mpiOp = suder_mpi_min()
        }
        forEachChunk(count: values.count) { start, count in
            check(MPI_Allreduce(suder_mpi_in_place(), base + start, Int32(count), type, mpiOp, world), "MPI_Allreduce", file, line)
        }
    }

    public func gather(_ bytes: [UInt8], root: Int, file: StaticString, line: UInt) -> [[UInt8]]? {
        // Lengths first (one Int64 each), then the payloads point to point in chunks, so no
        // rank's buffer or the total is bound by MPI's int counts.
        var lengths = [Int](repeating: 0, count: size)
        lengths[rank] = bytes.count
        allreduce(&lengths, op: .sum, file: file, line: line)
        let tag: Int32 = 7001
        if rank != root {
            bytes.withUnsafeBytes { raw in
                forEachChunk(count: raw.count) { start, count in
                    check(MPI_Send(raw.baseAddress! + start, Int32(count), suder_mpi_uint8(), Int32(root), tag, world), "MPI_Send", file, line)
                }
            }
            return nil
        }
        var result: [[UInt8]] = []
        for source in 0..<size {
            if source == rank { result.append(bytes); continue }
            var payload = [UInt8](repeating: 0, count: lengths[source])
            payload.withUnsafeMutableBytes { raw in
                forEachChunk(count: raw.count) { start, count in
                    var status = MPI_Status()
                    check(MPI_Recv(raw.baseAddress! + start, Int32(count), suder_mpi_uint8(), Int32(source), tag, world, &status), "MPI_Recv", file, line)
                }
            }
            result.append(payload)
        }
        return result
    }

    public func abortJob(_ message: String, code: Int32, file: StaticString, line: UInt) -> Never {
        printError("fatal on rank \(rank) at \(file):\(line): \(message)")
        MPI_Abort(world, code == 0 ? 1 : code)
        exit(code == 0 ? 1 : code)
    }

    public func exitTogether(code: Int32) -> Never {
        finalize()
        exit(code)
    }

    /// Ends MPI cleanly; every rank must call it (normal completion).
    public func finalize() {
        guard !finalized else { return }
        finalized = true
        check(MPI_Barrier(world), "MPI_Barrier", #fileID, #line)
        _ = MPI_Finalize()
    }

    private func check(_ code: Int32, _ call: String, _ file: StaticString, _ line: UInt) {
        guard code != MPI_SUCCESS else { return }
        var buffer = [CChar](repeating: 0, count: 512)
        var length: Int32 = 0
        _ = MPI_Error_string(code, &buffer, &length)
        abortJob("\(call) failed: \(String(cString: buffer)) (code \(code))", code: 1, file: file, line: line)
    }

    private func forEachChunk(count: Int, _ body: (_ start: Int, _ count: Int) -> Void) {
        var start = 0
        while start < count {
            let n = min(chunkLimit, count - start)
            body(start, n)
            start += n
        }
    }
}
