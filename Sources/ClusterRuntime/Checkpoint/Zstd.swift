import CZstd

/// One-shot zstd frames with the frame checksum on. `threads` > 0 asks for zstd's worker threads;
/// a libzstd built without multithreading refuses the parameter and we compress on the calling
/// thread instead (`effectiveThreads` says which happened).
public struct ZstdCodec {
    public let level: Int32
    public let effectiveThreads: Int

    public init(level: Int, threads: Int) {
        let bounds = ZSTD_cParam_getBounds(ZSTD_c_compressionLevel)
        self.level = Int32(min(max(level, Int(bounds.lowerBound)), Int(bounds.upperBound)))
        // Probe once: setting nbWorkers fails on a single-threaded libzstd.
        var workers = 0
        if threads > 0, let probe = ZSTD_createCCtx() {
            if ZSTD_isError(ZSTD_CCtx_setParameter(probe, ZSTD_c_nbWorkers, Int32(threads))) == 0 { workers = threads }
            ZSTD_freeCCtx(probe)
        }
        effectiveThreads = workers
    }

    public func compress(_ input: [UInt8], file: String) throws -> [UInt8] {
        guard let context = ZSTD_createCCtx() else { throw CheckpointError(.writeFailed, file, "zstd could not allocate a context") }
        defer { ZSTD_freeCCtx(context) }
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level), file, .writeFailed)
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1), file, .writeFailed)
        if effectiveThreads > 0 {
            try check(ZSTD_CCtx_setParameter(context, ZSTD_c_nbWorkers, Int32(effectiveThreads)), file, .writeFailed)
        }
        let bound = ZSTD_compressBound(input.count)
        var output = [UInt8](repeating: 0, count: bound)
        let written = output.withUnsafeMutableBytes { out in
            input.withUnsafeBytes { inp in
                ZSTD_compress2(context, out.baseAddress, out.count, inp.baseAddress, inp.count)
            }
        }
        try check(written, file, .writeFailed)
        output.removeSubrange(written...)
        return output
    }

    /// Decompresses exactly one frame of exactly `expectedSize` bytes. The caller has checked
    /// `expectedSize` against `maximumExpansion` so hostile sizes never reach the allocator.
    public static func decompress(_ input: [UInt8], expectedSize: Int, file: String) throws -> [UInt8] {
        try input.withUnsafeBytes { inp in
            let frameSize = ZSTD_findFrameCompressedSize(inp.baseAddress, inp.count)
            if ZSTD_isError(frameSize) != 0 {
                throw CheckpointError(.corrupt, file, "not a zstd frame: \(String(cString: ZSTD_getErrorName(frameSize)))")
            }
            guard frameSize == inp.count else {
                throw CheckpointError(.corrupt, file, "zstd frame is \(frameSize) bytes but the file holds \(inp.count)")
            }
            let contentSize = ZSTD_getFrameContentSize(inp.baseAddress, inp.count)
            guard contentSize == UInt64(expectedSize) else {
                throw CheckpointError(.corrupt, file, "zstd frame declares \(Int64(bitPattern: contentSize)) bytes, header says \(expectedSize)")
            }
            guard let context = ZSTD_createDCtx() else { throw CheckpointError(.corrupt, file, "zstd could not allocate a context") }
            defer { ZSTD_freeDCtx(context) }
            var output = [UInt8](repeating: 0, count: expectedSize)
            let produced = output.withUnsafeMutableBytes { out in
                ZSTD_decompressDCtx(context, out.baseAddress, out.count, inp.baseAddress, inp.count)
            }
            try check(produced, file, .corrupt)
            guard produced == expectedSize else {
                throw CheckpointError(.corrupt, file, "zstd produced \(produced) bytes, expected \(expectedSize)")
            }
            return output
        }
    }

    /// zstd cannot expand a frame by more than this: an RLE block of 3 header bytes and 1 byte of
    /// content stands for at most 128 KiB. Used to reject declared sizes before allocating.
    public static let maximumExpansion = 131_072 / 4 + 1

    private static func check(_ code: Int, _ file: String, _ kind: CheckpointError.Kind) throws {
        if ZSTD_isError(code) != 0 {
            throw CheckpointError(kind, file, "zstd: \(String(cString: ZSTD_getErrorName(code)))")
        }
    }

    private func check(_ code: Int, _ file: String, _ kind: CheckpointError.Kind) throws {
        try Self.check(code, file, kind)
    }
}
