import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A checkpoint restored on every rank.
public struct LoadedCheckpoint {
    public let checkpoint: Checkpoint
    /// The checkpoint directory it came from.
    public let directory: URL
    /// Newer checkpoints that were invalid (moved aside on resume, skipped by a reader), one
    /// message each.
    public let notes: [String]
}

/// The checkpoints of one stage, in one directory:
///
///   <directory>/step-000000001200/   a checkpoint (see CheckpointFormat.swift)
///   <directory>/latest               name of the newest complete checkpoint, for people and tools
///   <directory>/DONE                 the stage finished
///   <directory>/corrupt/             invalid checkpoints moved aside on resume, never deleted
///
/// Only the stage that owns the directory changes it (saves, resume); readers of its model
/// (`loadForConsumer`) change nothing in it.
///
/// Every method is collective: call it on all ranks in the same order. Only rank 0 touches the
/// disk and broadcasts the outcome, so every rank returns the same result or throws the same error
/// and no rank is left in a collective. The run directory must still be on a filesystem that
/// every node mounts at the same path: every rank reads the stages' data set.
public final class CheckpointStore {
    public static let latestFileName = "latest"
    public static let doneFileName = "DONE"
    public static let asideDirectoryName = "corrupt"
    /// Sections stored as float32 and byte-grouped before compression (see RELIABILITY.md for
    /// what that gains).
    public static let defaultFloat32Sections: Set<String> = ["weights", "adam_m", "adam_v"]

    public let directory: URL
    public let keepLast: Int
    public let comm: Communicator
    public var float32Sections = CheckpointStore.defaultFloat32Sections
    private let codec: ZstdCodec

    /// zstd worker threads actually used (0 when libzstd is single-threaded or 0 were asked for).
    public var compressionThreads: Int { codec.effectiveThreads }

    /// `compressionLevel` 1 is the default: on byte-grouped weights it compresses as well as 3 or 9
    /// and fastest (RELIABILITY.md). `threads` > 0 uses zstd worker threads when libzstd has them.
    public init(directory: URL, keepLast: Int = 3, compressionLevel: Int = 1, threads: Int = 0, comm: Communicator) {
        precondition(keepLast >= 1, "keepLast must be at least 1")
        self.directory = directory
        self.keepLast = keepLast
        self.comm = comm
        self.codec = ZstdCodec(level: compressionLevel, threads: threads)
    }

    /// A store with the `checkpoint.*` settings of a job's config.
    public convenience init(directory: URL, config: ResolvedConfig, comm: Communicator) {
        self.init(
            directory: directory, keepLast: config.int("checkpoint.keep_last"), compressionLevel: config.int("checkpoint.zstd_level"),
            threads: config.int("checkpoint.zstd_threads"), comm: comm)
    }

    public static func directoryName(step: Int) -> String { String(format: "step-%012d", step) }

    // MARK: - Save

    /// Writes `checkpoint` (rank 0's copy; other ranks may pass theirs or an empty one) as
    /// checkpoint `step-<step>`, then points `latest` at it and deletes all but the newest `keepLast`. Refuses non-finite weights
    /// on any rank. On failure every rank throws the same `.writeFailed`/`.invalidInput` error and
    /// all earlier checkpoints are untouched.
    @discardableResult
    public func save(_ checkpoint: Checkpoint) throws -> URL {
        // Each rank checks its own weights: they should be identical, and a NaN anywhere must stop
        // everyone before it is written.
        let localFinite =
            checkpoint.sections["weights"].map { bytes in
                bytes.withUnsafeBytes { raw in
                    allFinite(UnsafeBufferPointer(start: raw.baseAddress?.assumingMemoryBound(to: Float.self), count: raw.count / 4))
                }
            } ?? true
        let everyRankFinite = comm.allAgree(localFinite)
        let target = directory.appendingPathComponent(Self.directoryName(step: checkpoint.header.step))
        guard everyRankFinite else {
            throw CheckpointError(
                .invalidInput, target.path,
                "weights hold NaN or infinity on \(localFinite ? "another rank" : "rank \(comm.rank)"); not writing a poisoned checkpoint")
        }
        try comm.rootDecides {
            do {
                try writeOnRoot(checkpoint, to: target)
            } catch let error as CheckpointError {
                throw error
            } catch {
                throw CheckpointError(.writeFailed, target.path, "\(error)")
            }
        }
        return target
    }

    private func writeOnRoot(_ checkpoint: Checkpoint, to target: URL) throws {
        let fileManager = FileManager.default
        do {
            try fileManager.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw CheckpointError(.writeFailed, directory.path, "cannot create the checkpoint directory: \(error.localizedDescription)")
        }
        for name in checkpoint.sections.keys { try validateSectionName(name, file: target.path) }
        let weights = checkpoint.sections["weights"] ?? []
        if !checkpoint.header.tensors.isEmpty {
            guard checkpoint.sections["weights"] != nil else {
                throw CheckpointError(.invalidInput, target.path, "a tensor table needs a weights section")
            }
            try checkpoint.header.validateTensorTable(weightsSize: weights.count, file: target.path, kind: .invalidInput)
        }
        guard weights.count % 4 == 0 else {
            throw CheckpointError(.invalidInput, target.path, "weights section is \(weights.count) bytes, not whole float32 values")
        }
        cleanUpInterruptedSaves()
        let existing = try checkpointDirectories()
        if let newer = existing.first(where: { $0.step > checkpoint.header.step }) {
            throw CheckpointError(
                .invalidInput, target.path,
                "an existing checkpoint (\(newer.url.lastPathComponent)) is newer; a resume would pick it. Resume from it or use another directory")
        }

        var full = checkpoint
        full.header.rankCount = comm.size

        let temporary = directory.appendingPathComponent(".tmp-\(target.lastPathComponent)-\(getpid())")
        guard mkdir(temporary.path, 0o755) == 0 else {
            throw CheckpointError(.writeFailed, temporary.path, "cannot create: \(String(cString: strerror(errno)))")
        }
        do {
            try writeCheckpointFiles(full, float32Sections: float32Sections, codec: codec, to: temporary)
            // Saving the same step twice (a stop right after a resume): move the old one out of
            // the way, put it back if the rename fails.
            let replaced = directory.appendingPathComponent(".replaced-\(target.lastPathComponent)-\(getpid())")
            let hadOld = fileManager.fileExists(atPath: target.path)
            if hadOld { try renameDurably(target, to: replaced) }
            do {
                try renameDurably(temporary, to: target)
            } catch {
                if hadOld { try? renameDurably(replaced, to: target) }
                throw error
            }
            if hadOld { try? fileManager.removeItem(at: replaced) }
        } catch {
            try? fileManager.removeItem(at: temporary)
            throw error
        }
        try replaceFileDurably(directory.appendingPathComponent(Self.latestFileName), Array((target.lastPathComponent + "\n").utf8))
        for old in ((try? checkpointDirectories()) ?? []).dropFirst(keepLast) where old.url.lastPathComponent != target.lastPathComponent {
            try? fileManager.removeItem(at: old.url)
        }
    }

    /// Leftovers of a save that was killed part way (one job per stage directory, so nothing else
    /// is writing): `.tmp-*` were never renamed into place and hold nothing of value; a
    /// `.replaced-step-N-*` whose `step-N` is missing was the old `step-N` and goes back.
    private func cleanUpInterruptedSaves() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        for name in names where name.hasPrefix(".tmp-") || name.hasPrefix(".replaced-") {
            let url = directory.appendingPathComponent(name)
            let original = directory.appendingPathComponent(String(name.dropFirst(".replaced-".count).prefix(17)))
            if name.hasPrefix(".replaced-") && !FileManager.default.fileExists(atPath: original.path) {
                try? renameDurably(url, to: original)
            } else {
                try? FileManager.default.removeItem(at: url)
            }
        }
    }

    private func checkpointDirectories() throws -> [(step: Int, url: URL)] {
        try listCheckpointDirectories(in: directory)
    }

    // MARK: - Load

    /// The newest valid checkpoint, restored on every rank; nil when the directory holds none (a
    /// fresh start). Invalid newer checkpoints are reported and moved aside into `corrupt/`, and
    /// the previous one is used. Throws `.noValidCheckpoint` when checkpoints exist (or were moved
    /// aside before) but none is valid: a run must never silently start over.
    public func loadNewestValid() throws -> LoadedCheckpoint? {
        try broadcastFromRoot(loadOnRoot)
    }

    /// The checkpoint a reader of this stage's model uses (`readForConsumer`), restored on every
    /// rank; nil when the directory holds none.
    public func loadForConsumer() throws -> LoadedCheckpoint? {
        try broadcastFromRoot { try Self.readForConsumer(in: directory) }
    }

    /// Runs `read` on rank 0 and gives every rank its checkpoint, its nil or its error.
    private func broadcastFromRoot(_ read: () throws -> (url: URL, checkpoint: Checkpoint, notes: [String])?) throws -> LoadedCheckpoint? {
        let message = try comm.rootDecides { () throws -> [UInt8] in
            var writer = ByteWriter()
            do {
                guard let loaded = try read() else { return [] }
                writer.string(loaded.url.lastPathComponent)
                writer.u32(UInt32(loaded.notes.count))
                for note in loaded.notes { writer.string(note) }
                encodeCheckpoint(loaded.checkpoint, into: &writer)
            } catch let error as CheckpointError {
                throw error
            } catch {
                throw CheckpointError(.corrupt, directory.path, "\(error)")
            }
            return writer.bytes
        }
        guard !message.isEmpty else { return nil }
        var reader = ByteReader(message, file: "checkpoint broadcast from rank 0")
        let name = try reader.string("directory")
        var notes: [String] = []
        for _ in 0..<(try reader.count("notes", minimumItemBytes: 4)) { notes.append(try reader.string("note")) }
        let checkpoint = try decodeCheckpoint(&reader)
        return LoadedCheckpoint(checkpoint: checkpoint, directory: directory.appendingPathComponent(name), notes: notes)
    }

    /// One checkpoint directory (holding header.bin), read by rank 0 and sent to every rank.
    public func load(checkpoint checkpointDirectory: URL) throws -> Checkpoint {
        let message = try comm.rootDecides { () throws -> [UInt8] in
            var writer = ByteWriter()
            encodeCheckpoint(try readCheckpoint(directory: checkpointDirectory), into: &writer)
            return writer.bytes
        }
        var reader = ByteReader(message, file: "checkpoint broadcast from rank 0")
        return try decodeCheckpoint(&reader)
    }

    private func loadOnRoot() throws -> (url: URL, checkpoint: Checkpoint, notes: [String])? {
        cleanUpInterruptedSaves()
        let candidates = try checkpointDirectories()
        let aside = directory.appendingPathComponent(Self.asideDirectoryName)
        let previouslyAside = (try? FileManager.default.contentsOfDirectory(atPath: aside.path)) ?? []
        if candidates.isEmpty && previouslyAside.isEmpty { return nil }

        var notes: [String] = []
        for candidate in candidates {
            do {
                return (candidate.url, try readCheckpoint(directory: candidate.url), notes)
            } catch {
                let note = "invalid checkpoint \(error); \(moveAside(candidate.url, into: aside))"
                printError("checkpoint: " + note)
                notes.append(note)
            }
        }
        let history = previouslyAside.isEmpty ? "" : " Earlier invalid checkpoints are in \(aside.path): \(previouslyAside.sorted().joined(separator: ", "))."
        throw CheckpointError(
            .noValidCheckpoint, directory.path,
            "checkpoints exist but none is valid; refusing to start fresh.\(notes.isEmpty ? "" : " " + notes.joined(separator: " "))\(history) Delete the directory to start over."
        )
    }

    /// Renames an invalid checkpoint into `corrupt/` (never deletes it), so the next resume skips
    /// it and a person can still inspect it. Returns what happened, for the report.
    private func moveAside(_ url: URL, into aside: URL) -> String {
        let destination = aside.appendingPathComponent("\(url.lastPathComponent).\(Int(Date().timeIntervalSince1970))")
        do {
            try FileManager.default.createDirectory(at: aside, withIntermediateDirectories: true)
            try renameDurably(url, to: destination)
            return "moved aside to \(destination.path)"
        } catch {
            return "could not move it aside (\(error)); it stays in place"
        }
    }

    /// The checkpoint a reader of a stage's model uses (eval, the SUDER stage's starting model,
    /// generate, export), read by this process alone. It changes nothing in the directory: the
    /// stage that owns it may be running, and its results are not the reader's to move. A finished
    /// stage gives exactly the step its DONE marker records; if that checkpoint is invalid the
    /// stage's model is lost and an error says so (an earlier checkpoint is a different model). An
    /// unfinished stage gives its newest valid checkpoint, the invalid newer ones named in `notes`.
    /// nil when the directory holds no checkpoint.
    public static func readForConsumer(in directory: URL) throws -> (url: URL, checkpoint: Checkpoint, notes: [String])? {
        if let step = try doneStep(in: directory) {
            let url = directory.appendingPathComponent(directoryName(step: step))
            let checkpoint: Checkpoint
            do {
                checkpoint = try readCheckpoint(directory: url)
            } catch {
                throw CheckpointError(
                    .corrupt, url.path,
                    "the stage's final model is damaged or missing: \(doneFileName) says the stage finished at step \(step), and this "
                        + "checkpoint cannot be read (\(error)). An earlier checkpoint is a different model and is not used in its place. "
                        + "Restore \(url.lastPathComponent) from a copy, or delete \(directory.appendingPathComponent(doneFileName).path) and run "
                        + "the stage again: it moves the damaged checkpoint aside and trains on from its newest valid one")
            }
            guard checkpoint.header.step == step else {
                throw CheckpointError(
                    .corrupt, url.path,
                    "holds step \(checkpoint.header.step), but the stage finished at step \(step) (\(doneFileName)): the stage's final model is not here")
            }
            return (url, checkpoint, [])
        }
        var notes: [String] = []
        for candidate in try listCheckpointDirectories(in: directory) {
            do {
                return (candidate.url, try readCheckpoint(directory: candidate.url), notes)
            } catch {
                notes.append("skipped invalid checkpoint \(error)")
            }
        }
        guard notes.isEmpty else {
            throw CheckpointError(.noValidCheckpoint, directory.path, "no valid checkpoint: \(notes.joined(separator: "; "))")
        }
        return nil
    }

    // MARK: - DONE marker

    private static let doneText = "finished at step "

    /// Records that the stage finished (collective; rank 0 writes the marker atomically).
    public func markDone(step: Int) throws {
        try comm.rootDecides { try Self.writeDoneMarker(in: directory, step: step) }
    }

    /// Writes the DONE marker of `directory` from this process alone (rank 0 inside a decision of
    /// its own, e.g. a stage that builds its directory elsewhere and renames it into place).
    public static func writeDoneMarker(in directory: URL, step: Int) throws {
        let url = directory.appendingPathComponent(doneFileName)
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try replaceFileDurably(url, Array("\(doneText)\(step)\n".utf8))
        } catch let error as CheckpointError {
            throw error
        } catch {
            throw CheckpointError(.writeFailed, url.path, "\(error)")
        }
    }

    /// Whether `directory` holds a DONE marker, as this process sees it. Not collective: jobs ask
    /// `JobContext.stageFinished`, which asks rank 0; offline tools (report) ask directly.
    public static func hasDoneMarker(_ directory: URL) -> Bool {
        FileManager.default.fileExists(atPath: directory.appendingPathComponent(doneFileName).path)
    }

    /// The step `directory`'s DONE marker records, as this process reads it; nil without a marker.
    public static func doneStep(in directory: URL) throws -> Int? {
        let url = directory.appendingPathComponent(doneFileName)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        let text = String(decoding: try readWholeFile(url, limit: 4096), as: UTF8.self)
        guard text.hasPrefix(doneText), let step = Int(text.dropFirst(doneText.count).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw CheckpointError(.corrupt, url.path, "does not say '\(doneText)N'; it holds: \(text.prefix(80))")
        }
        return step
    }

    // MARK: - Wire encoding for broadcasts

    private func encodeCheckpoint(_ checkpoint: Checkpoint, into writer: inout ByteWriter) {
        let header = checkpoint.header.encoded()
        writer.int(header.count)
        writer.raw(header)
        writer.u32(UInt32(checkpoint.sections.count))
        for name in checkpoint.sections.keys.sorted() {
            writer.string(name)
            writer.int(checkpoint.sections[name]!.count)
            writer.raw(checkpoint.sections[name]!)
        }
    }

    private func decodeCheckpoint(_ reader: inout ByteReader) throws -> Checkpoint {
        let headerLength = try reader.int("header length", limit: reader.remaining)
        let header = try CheckpointHeader.decode(Array(try reader.take(headerLength, "header")), file: reader.file)
        var sections: [String: [UInt8]] = [:]
        for _ in 0..<(try reader.count("section count", minimumItemBytes: 12)) {
            let name = try reader.string("section name")
            let length = try reader.int("section \(name) length", limit: reader.remaining)
            sections[name] = Array(try reader.take(length, "section \(name)"))
        }
        return Checkpoint(header: header, sections: sections)
    }
}

/// The checkpoint directories (`step-<12 digits>`) of a stage directory, newest first.
public func listCheckpointDirectories(in directory: URL) throws -> [(step: Int, url: URL)] {
    guard FileManager.default.fileExists(atPath: directory.path) else { return [] }
    let names: [String]
    do {
        names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
    } catch {
        throw CheckpointError(.writeFailed, directory.path, "cannot list: \(error.localizedDescription)")
    }
    return names.compactMap { name -> (Int, URL)? in
        guard isCheckpointDirectoryName(name), let step = Int(name.dropFirst(5)) else { return nil }
        return (step, directory.appendingPathComponent(name))
    }.sorted { $0.0 > $1.0 }
}

/// `step-<12 digits>`, the name of one checkpoint in a stage directory.
public func isCheckpointDirectoryName(_ name: String) -> Bool {
    name.hasPrefix("step-") && name.count == 17 && name.dropFirst(5).allSatisfy { $0.isASCII && $0.isNumber }
}
