import Foundation

/// An answer rank 0 can send to the others (see `Communicator.rootDecides`).
public protocol RootAnswer {
    func encode(into writer: inout ByteWriter)
    static func decode(from reader: inout ByteReader) throws -> Self
}

extension Bool: RootAnswer {
    public func encode(into writer: inout ByteWriter) { writer.u8(self ? 1 : 0) }
    public static func decode(from reader: inout ByteReader) throws -> Bool { try reader.u8("answer") == 1 }
}

extension String: RootAnswer {
    public func encode(into writer: inout ByteWriter) { writer.string(self) }
    public static func decode(from reader: inout ByteReader) throws -> String { try reader.string("answer") }
}

extension Array: RootAnswer where Element == UInt8 {
    public func encode(into writer: inout ByteWriter) {
        writer.int(count)
        writer.raw(self)
    }

    public static func decode(from reader: inout ByteReader) throws -> [UInt8] {
        Array(try reader.take(try reader.int("answer length", limit: reader.remaining), "answer"))
    }
}

public extension Communicator {
    /// Rank 0 decides, every rank learns the answer. Only rank 0 runs `decide` (file-system checks
    /// and writes: other ranks may see a shared file system's stale cache, or none of it), then
    /// broadcasts its answer or its error, so every rank returns the same value or throws the same
    /// error and all take the same path. Collective: call it on every rank in the same order.
    ///
    /// A `CheckpointError` or `AllRanksError` arrives as itself; any other error as an
    /// `AllRanksError` with exit code 1.
    func rootDecides<Answer: RootAnswer>(
        file: StaticString = #fileID, line: UInt = #line,
        _ decide: () throws -> Answer
    ) throws -> Answer {
        var message: [UInt8] = []
        if isRoot {
            var writer = ByteWriter()
            do {
                let answer = try decide()
                writer.u8(RootOutcome.answer.rawValue)
                answer.encode(into: &writer)
            } catch let error as CheckpointError {
                writer.u8(RootOutcome.checkpointError.rawValue)
                writer.u8(UInt8(CheckpointError.Kind.allCases.firstIndex(of: error.kind)!))
                writer.string(error.file)
                writer.string(error.problem)
            } catch let error as AllRanksError {
                writer.u8(RootOutcome.allRanksError.rawValue)
                writer.u32(UInt32(bitPattern: error.exitCode))
                writer.string(error.description)
            } catch {
                writer.u8(RootOutcome.allRanksError.rawValue)
                writer.u32(1)
                writer.string("\(error)")
            }
            message = writer.bytes
        }
        message = broadcast(bytes: message, root: 0, file: file, line: line)
        var reader = ByteReader(message, file: "rank 0's answer")
        switch RootOutcome(rawValue: try reader.u8("outcome")) {
        case .answer:
            return try Answer.decode(from: &reader)
        case .checkpointError:
            let kind = Int(try reader.u8("kind"))
            guard kind < CheckpointError.Kind.allCases.count else { throw reader.fail("unknown error kind \(kind)") }
            throw CheckpointError(CheckpointError.Kind.allCases[kind], try reader.string("file"), try reader.string("problem"))
        case .allRanksError:
            let code = Int32(bitPattern: try reader.u32("exit code"))
            throw AllRanksError(try reader.string("message"), exitCode: code)
        case nil:
            throw reader.fail("unknown outcome")
        }
    }

    /// `rootDecides` for an action without an answer: rank 0 acts (writes a file), every rank
    /// learns whether it worked.
    func rootDecides(file: StaticString = #fileID, line: UInt = #line, _ act: () throws -> Void) throws {
        _ = try rootDecides(file: file, line: line) { () throws -> Bool in
            try act()
            return true
        }
    }
}

private enum RootOutcome: UInt8 {
    case answer, checkpointError, allRanksError
}
