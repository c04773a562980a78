import Foundation

/// Element types that collectives can reduce.
public protocol ReducibleScalar: Numeric, Comparable {
    static var reducibleKind: ReducibleKind { get }
}

public enum ReducibleKind { case float, double, int64 }

extension Float: ReducibleScalar { public static var reducibleKind: ReducibleKind { .float } }
extension Double: ReducibleScalar { public static var reducibleKind: ReducibleKind { .double } }
extension Int: ReducibleScalar { public static var reducibleKind: ReducibleKind { .int64 } }

public enum ReduceOp { case sum, max, min }

/// The process group a job runs in. `MPICommunicator` is the real one; `SingleProcessCommunicator`
/// lets unit tests and one-rank runs use the same code without `mpirun`.
///
/// Every collective must be called by all ranks in the same order. Errors inside a collective are
/// fatal for the whole job (see `abortJob`).
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// Name of the host this rank runs on.
    var processorName: String { get }
    /// The MPI library's own version string ("single process" without MPI).
    var libraryVersion: String { get }

    func barrier(file: StaticString, line: UInt)
    /// Copies `root`'s bytes into every rank's buffer; all buffers have the same size.
    func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int, file: StaticString, line: UInt)
    /// In-place elementwise reduction across ranks; every rank ends with the result.
    func allreduce<T: ReducibleScalar>(_ values: UnsafeMutableBufferPointer<T>, op: ReduceOp, file: StaticString, line: UInt)
    /// Every rank's bytes (any length, including empty) in rank order on `root`; nil elsewhere.
    func gather(_ bytes: [UInt8], root: Int, file: StaticString, line: UInt) -> [[UInt8]]?
    /// Ends every rank of the job with a non-zero status. Use when ranks may disagree (an I/O
    /// error on one rank); a single rank calling `exit` would leave the others in a collective.
    func abortJob(_ message: String, code: Int32, file: StaticString, line: UInt) -> Never
    /// Ends the job with `code` when every rank reached the same verdict (e.g. a config error
    /// that all ranks found): no abort banner, just the exit status.
    func exitTogether(code: Int32) -> Never
}

public extension Communicator {
    public var isRoot: Bool { rank == 0 }

    public func barrier(file: StaticString = #fileID, line: UInt = #line) {
        barrier(file: file, line: line)
    }

    public func allreduce<T: ReducibleScalar>(_ values: inout [T], op: ReduceOp = .sum, file: StaticString = #fileID, line: UInt = #line) {
        values.withUnsafeMutableBufferPointer { allreduce($0, op: op, file: file, line: line) }
    }

    public func allreduce<T: ReducibleScalar>(_ value: T, op: ReduceOp = .sum, file: StaticString = #fileID, line: UInt = #line) -> T {
        var values = [value]
        allreduce(&values, op: op, file: file, line: line)
        return values[0]
    }

    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int = 0, file: StaticString = #fileID, line: UInt = #line) {
        broadcast(bytes, root: root, file: file, line: line)
    }

    public func broadcast<T>(_ values: inout [T], root: Int = 0, file: StaticString = #fileID, line: UInt = #line) {
        values.withUnsafeMutableBytes { broadcast($0, root: root, file: file, line: line) }
    }

    /// Broadcasts a byte string whose length only `root` knows.
    public func broadcast(bytes: [UInt8], root: Int = 0, file: StaticString = #fileID, line: UInt = #line) -> [UInt8] {
        var count = [rank == root ? bytes.count : 0]
        broadcast(&count, root: root, file: file, line: line)
        var result = rank == root ? bytes : [UInt8](repeating: 0, count: count[0])
        broadcast(&result, root: root, file: file, line: line)
        return result
    }

    public func gather(_ bytes: [UInt8], root: Int = 0, file: StaticString = #fileID, line: UInt = #line) -> [[UInt8]]? {
        gather(bytes, root: root, file: file, line: line)
    }

    public func abortJob(_ message: String, code: Int32 = 1, file: StaticString = #fileID, line: UInt = #line) -> Never {
        abortJob(message, code: code, file: file, line: line)
    }

    /// True on every rank iff `condition` holds on every rank.
    public func allAgree(_ condition: Bool, file: StaticString = #fileID, line: UInt = #line) -> Bool {
        allreduce(condition ? 1 : 0, op: .min, file: file, line: line) == 1
    }
}
