import Foundation

#if canImport(Glibc)
    import Glibc
#endif

// File-level reading and writing of one checkpoint directory. No MPI here: `CheckpointStore` runs
// these on rank 0 and tells the other ranks the outcome.

private func posixError(_ kind: CheckpointError.Kind, _ url: URL, _ what: String) -> CheckpointError {
    let code = errno
    return CheckpointError(kind, url.path, "\(what): \(String(cString: strerror(code))) (errno \(code))")
}

/// Creates `url` (which must not exist), writes all of `bytes` and fsyncs it.
public func writeFileDurably(_ url: URL, _ bytes: [UInt8]) throws {
    let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw posixError(.writeFailed, url, "cannot create") }
    var closed = false
    defer { if !closed { close(fd) } }
    try bytes.withUnsafeBytes { raw in
        var written = 0
        while written < raw.count {
            let n = write(fd, raw.baseAddress! + written, raw.count - written)
            if n < 0 {
                if errno == EINTR { continue }
                throw posixError(.writeFailed, url, "write failed after \(written) of \(raw.count) bytes")
            }
            written += n
        }
    }
    guard fsync(fd) == 0 else { throw posixError(.writeFailed, url, "fsync failed") }
    closed = true
    guard close(fd) == 0 else { throw posixError(.writeFailed, url, "close failed") }
}

/// fsync on a directory makes the names created or renamed inside it durable.
public func syncDirectory(_ url: URL) throws {
    let fd = open(url.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw posixError(.writeFailed, url, "cannot open directory to fsync") }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw posixError(.writeFailed, url, "fsync of directory failed") }
}

/// rename(2), then fsync of the parent so the new name survives a crash.
public func renameDurably(_ source: URL, to destination: URL) throws {
    guard rename(source.path, destination.path) == 0 else {
        throw posixError(.writeFailed, destination, "cannot rename \(source.lastPathComponent) to it")
    }
    try syncDirectory(destination.deletingLastPathComponent())
}

/// Replaces a small file atomically: write a temporary sibling, fsync, rename over, fsync parent.
public func replaceFileDurably(_ url: URL, _ bytes: [UInt8]) throws {
    let temporary = url.deletingLastPathComponent().appendingPathComponent(".tmp-\(url.lastPathComponent)-\(getpid())")
    unlink(temporary.path)
    do {
        try writeFileDurably(temporary, bytes)
        try renameDurably(temporary, to: url)
    } catch {
        unlink(temporary.path)
        throw error
    }
}

/// The whole file, after checking its size against `limit` (and, if given, `expectedSize`)
/// before allocating anything.
public func readWholeFile(_ url: URL, limit: Int, expectedSize: Int? = nil) throws -> [UInt8] {
    let fd = open(url.path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw posixError(.corrupt, url, "cannot open") }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0 else { throw posixError(.corrupt, url, "cannot stat") }
    guard (info.st_mode & S_IFMT) == S_IFREG else { throw CheckpointError(.corrupt, url.path, "not a regular file") }
    let size = Int(info.st_size)
    if let expectedSize, size != expectedSize {
        throw CheckpointError(.corrupt, url.path, "file is \(size) bytes, the header says \(expectedSize) (torn or truncated)")
    }
    guard size <= limit else { throw CheckpointError(.corrupt, url.path, "file is \(size) bytes, more than the \(limit) allowed") }
    var bytes = [UInt8](repeating: 0, count: size)
    try bytes.withUnsafeMutableBytes { raw in
        var done = 0
        while done < size {
            let n = read(fd, raw.baseAddress! + done, size - done)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw posixError(.corrupt, url, "read failed") }
            if n == 0 { throw CheckpointError(.corrupt, url.path, "file shrank while reading (\(done) of \(size) bytes)") }
            done += n
        }
    }
    return bytes
}

/// Encodes and writes `checkpoint` into the empty directory `directory`, fsyncing every file and
/// the directory. The header goes last, so a directory without one is visibly incomplete.
public func writeCheckpointFiles(_ checkpoint: Checkpoint, float32Sections: Set<String>, codec: ZstdCodec, to directory: URL) throws {
    var header = checkpoint.header
    header.sections = []
    for name in checkpoint.sections.keys.sorted() {
        let bytes = checkpoint.sections[name]!
        let fileURL = directory.appendingPathComponent(name + ".zst")
        let grouped = float32Sections.contains(name) && bytes.count % 4 == 0
        let compressed = try codec.compress(grouped ? byteGrouped(bytes, elementSize: 4) : bytes, file: fileURL.path)
        try writeFileDurably(fileURL, compressed)
        header.sections.append(
            SectionEntry(
                name: name, layout: grouped ? .float32Grouped : .raw,
                uncompressedSize: bytes.count, compressedSize: compressed.count, checksum: xxhash64(bytes)))
    }
    try writeFileDurably(directory.appendingPathComponent(CheckpointHeader.fileName), header.encoded())
    try syncDirectory(directory)
}

/// Reads and fully validates one checkpoint directory: header checksum, every section present
/// with the recorded size, zstd frame checksum, and the xxh64 of the uncompressed bytes.
public func readCheckpoint(directory: URL) throws -> Checkpoint {
    let headerURL = directory.appendingPathComponent(CheckpointHeader.fileName)
    let header = try CheckpointHeader.decode(readWholeFile(headerURL, limit: CheckpointHeader.maximumFileSize), file: headerURL.path)
    var sections: [String: [UInt8]] = [:]
    for entry in header.sections {
        let url = directory.appendingPathComponent(entry.fileName)
        let compressed = try readWholeFile(url, limit: entry.compressedSize, expectedSize: entry.compressedSize)
        var bytes = try ZstdCodec.decompress(compressed, expectedSize: entry.uncompressedSize, file: url.path)
        if entry.layout == .float32Grouped { bytes = byteUngrouped(bytes, elementSize: 4) }
        let checksum = xxhash64(bytes)
        guard checksum == entry.checksum else {
            throw CheckpointError(.corrupt, url.path, String(format: "content checksum mismatch: header %016llx, data %016llx", entry.checksum, checksum))
        }
        sections[entry.name] = bytes
    }
    return Checkpoint(header: header, sections: sections)
}
