import Foundation

/// A job of one rank: collectives are identities. Used by unit tests and runs without `mpirun`.
public final class SingleProcessCommunicator: Communicator {
    public init() {}

    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var processorName: String { ProcessInfo.processInfo.hostName }
    public var libraryVersion: String { "single process (no MPI)" }

    public func barrier(file: StaticString, line: UInt) {}
    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int, file: StaticString, line: UInt) {
        precondition(root == 0, "broadcast root \(root) in a one-rank job")
    }
    public func allreduce<T: ReducibleScalar>(_ values: UnsafeMutableBufferPointer<T>, op: ReduceOp, file: StaticString, line: UInt) {}
    public func gather(_ bytes: [UInt8], root: Int, file: StaticString, line: UInt) -> [[UInt8]]? { [bytes] }

    public func abortJob(_ message: String, code: Int32, file: StaticString, line: UInt) -> Never {
        printError("fatal at \(file):\(line): \(message)")
        exit(code == 0 ? 1 : code)
    }

    public func exitTogether(code: Int32) -> Never { exit(code) }
}

/// Writes one line to standard error, unbuffered, so it survives an abort that follows it.
public func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
