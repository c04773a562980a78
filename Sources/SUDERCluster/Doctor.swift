import COpenBLAS
import CZstd
import ClusterRuntime
import Foundation
import Model

/// `suder doctor`: what each rank runs on, and whether MPI, BLAS and zstd give right answers.
/// Returns true only if every check passed on every rank.
public func runDoctor(comm: Communicator, threads requested: Int) -> Bool {
    let threads = resolveThreads(requested: requested)
    openblas_set_num_threads(Int32(threads))
    let console = Console(rank: comm.rank)

    let cores = boundCores()
    let row = [
        String(comm.rank), comm.processorName, formatCoreList(cores), String(openblas_get_num_threads()),
        String(cString: openblas_get_corename()), avx512KernelsActive ? "AVX-512" : "OpenBLAS",
        comm.libraryVersion, String(cString: ZSTD_versionString()),
    ]
    let rows = comm.gather(Array(row.joined(separator: "\t").utf8), root: 0)?
        .map { String(decoding: $0, as: UTF8.self).components(separatedBy: "\t") }
    if let rows {
        console.print(formatTable(header: ["rank", "host", "cores", "blas threads", "core type", "matmul kernels", "mpi", "zstd"], rows: rows))
    }

    var results = communicatorChecks(comm)
    let gemm = sgemmCheck()
    results.append(CheckResult(name: "the model's matmul, 67x45x53, against a naive product", passed: comm.allAgree(gemm.passed), detail: gemm.detail))
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

/// Compares OpenBLAS against a triple loop on an odd-sized product (odd sizes hit edge kernels).
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
