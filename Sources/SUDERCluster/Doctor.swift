import COpenBLAS
import CZstd
import ClusterRuntime
import Foundation
import Model

/// `suder doctor`: what each rank runs on, and whether MPI, BLAS and zstd give right answers.
/// Returns true only if every check passed on every rank.
public func runDoctor(comm: Communicator, threads requested: Int) -> Bool {
    let threads = resolveThreads(requested: requested)
    setComputeThreads(threads)
    let console = Console(rank: comm.rank)
    do {
        try selectKernelPath(comm: comm)
    } catch {
        if comm.isRoot { printError("error: \(error)") }
        return false
    }

    let cores = boundCores()
    let row = [
        String(comm.rank), comm.processorName, formatCoreList(cores), String(computeThreads),
        String(cString: openblas_get_corename()), KernelPath.active.rawValue, cpuModelName(),
        comm.libraryVersion, String(cString: ZSTD_versionString()),
    ]
    let rows = comm.gather(Array(row.joined(separator: "\t").utf8), root: 0)?
        .map { String(decoding: $0, as: UTF8.self).components(separatedBy: "\t") }
    if let rows {
        // One thread count per rank: the kernels' (products, sampler attention, token choice) and OpenBLAS's.
        console.print(
            formatTable(header: ["rank", "host", "cores", "kernel/BLAS threads", "OpenBLAS core", "kernels", "cpu", "mpi", "zstd"], rows: rows))
    }

    if comm.isRoot, let advice = openBLASCoreAdvice() { console.print("note: \(advice)") }

    var results = communicatorChecks(comm)
    let gemm = sgemmCheck()
    results.append(
        CheckResult(
            name: "the model's matmul (\(KernelPath.active.rawValue) kernels), 67x45x53, against a naive product",
            passed: comm.allAgree(gemm.passed), detail: gemm.detail))
    // The path is agreed by all ranks, so all make this collective call or none does.
    if KernelPath.active != .blas {
        let split = threadedGemmCheck(threads: threads)
        results.append(
            CheckResult(
                name: "the model's matmul on each rank's threads, 301x277x53, bitwise against 1 thread",
                passed: comm.allAgree(split.passed), detail: split.detail))
    }
    let zstd = zstdRoundTripCheck()
    results.append(CheckResult(name: "zstd round trip with frame checksum", passed: comm.allAgree(zstd.passed), detail: zstd.detail))

    console.print("")
    console.print(
        formatTable(
            header: ["check (all ranks)", "result", "detail"],
            rows: results.map { [$0.name, $0.passed ? "ok" : "FAILED", $0.detail] }))
    let failed = results.filter { !$0.passed }.count
    console.print(
        failed == 0
            ? "doctor: all \(results.count) checks passed on \(comm.size) rank(s)"
            : "doctor: \(failed) of \(results.count) checks FAILED")
    return failed == 0
}

/// Selects the kernel path SUDER_KERNELS names (the best the CPU has when unset) on every rank. A
/// path some rank's CPU lacks is an error on every rank, before any work: that rank names what
/// its CPU lacks, and the caller reports the agreed error. Returns the path's name.
@discardableResult
public func selectKernelPath(comm: Communicator) throws -> String {
    var failure: String?
    do { try KernelPath.select() } catch { failure = "\(error)" }
    if let failure, !comm.isRoot { printError("error: rank \(comm.rank) on \(comm.processorName): \(failure)") }
    guard comm.allAgree(failure == nil) else {
        throw AllRanksError(failure ?? "SUDER_KERNELS names a kernel path some ranks' CPUs lack (their errors above)")
    }
    return KernelPath.active.rawValue
}

/// The CPU's model name from /proc/cpuinfo ("?" when it cannot be read).
public func cpuModelName() -> String {
    guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
        let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("model name") }),
        let name = line.split(separator: ":", maxSplits: 1).last
    else { return "?" }
    return name.trimmingCharacters(in: .whitespaces)
}

/// Compares the Float product of the kernel path in use against a triple loop on an odd-sized
/// product (odd sizes hit edge kernels).
func sgemmCheck() -> (passed: Bool, detail: String) {
    let m = 67, k = 45, n = 53
    var rng = SystemRandomNumberGenerator()
    let a = (0..<m * k).map { _ in Float.random(in: -1...1, using: &rng) }
    let b = (0..<k * n).map { _ in Float.random(in: -1...1, using: &rng) }
    var c = [Float](repeating: 0, count: m * n)
    Float.gemm(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: b, ldb: n, beta: 0, c: &c, ldc: n)
    var worst: Double = 0
    for i in 0..<m {
        for j in 0..<n {
            var reference: Double = 0
            for p in 0..<k { reference += Double(a[i * k + p]) * Double(b[p * n + j]) }
            worst = max(worst, abs(reference - Double(c[i * n + j])))
        }
    }
    // Sums of 45 products of magnitude <= 1 in float32: rounding stays far below 1e-4.
    return (worst < 1e-4, String(format: "max abs error %.2e", worst))
}

/// The kernels' Float product on `threads` threads against the same product on one, bit for bit,
/// on a product large enough to be split: results must not depend on the thread count.
func threadedGemmCheck(threads: Int) -> (passed: Bool, detail: String) {
    let m = 301, k = 53, n = 277
    var rng = Xoshiro256RNG(seed: 7)
    let a = (0..<m * k).map { _ in Float(rng.nextGaussian()) }, b = (0..<k * n).map { _ in Float(rng.nextGaussian()) }
    func product(threads: Int) -> [Float] {
        setComputeThreads(threads)
        var c = [Float](repeating: 0, count: m * n)
        Float.gemm(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: b, ldb: n, beta: 0, c: &c, ldc: n)
        return c
    }
    let one = product(threads: 1), split = product(threads: threads)
    let differing = zip(one, split).filter { $0.bitPattern != $1.bitPattern }.count
    return (differing == 0, "\(threads) thread(s): \(differing) of \(m * n) elements differ")
}

/// Compresses 1 MiB of float data with the frame checksum on and checks the bytes come back.
func zstdRoundTripCheck() -> (passed: Bool, detail: String) {
    let floats = (0..<262_144).map { Float(sin(Double($0) * 0.001)) }
    let input = floats.withUnsafeBytes { Array($0) }
    guard let context = ZSTD_createCCtx() else { return (false, "ZSTD_createCCtx failed") }
    defer { ZSTD_freeCCtx(context) }
    ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, 3)
    ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1)
    var compressed = [UInt8](repeating: 0, count: ZSTD_compressBound(input.count))
    let size = ZSTD_compress2(context, &compressed, compressed.count, input, input.count)
    if ZSTD_isError(size) != 0 { return (false, String(cString: ZSTD_getErrorName(size))) }
    var output = [UInt8](repeating: 0, count: input.count)
    let restored = ZSTD_decompress(&output, output.count, compressed, size)
    if ZSTD_isError(restored) != 0 { return (false, String(cString: ZSTD_getErrorName(restored))) }
    let ratio = Double(input.count) / Double(size)
    return (restored == input.count && output == input, String(format: "1 MiB, ratio %.2f", ratio))
}

func formatCoreList(_ cores: [Int]) -> String {
    guard let first = cores.first, let last = cores.last else { return "?" }
    return cores == Array(first...last) && cores.count > 1 ? "\(first)-\(last)" : cores.map(String.init).joined(separator: ",")
}

/// Left-aligned columns separated by two spaces.
public func formatTable(header: [String], rows: [[String]]) -> String {
    let all = [header] + rows
    let widths = header.indices.map { column in all.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0 }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
            .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
    }
    return ([line(header), widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")] + rows.map(line))
        .joined(separator: "\n")
}
