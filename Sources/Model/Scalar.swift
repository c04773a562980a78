import CKernels
import COpenBLAS
import Foundation

/// The floating-point types the layer kernels run in: Float for training and sampling, Double
/// for the finite-difference gradient checks. Float products run the kernel path in use
/// (`KernelPath.active`: our AVX-512 or AVX2 kernels in CKernels, or OpenBLAS); Double products go
/// to OpenBLAS (dgemm).
public protocol ModelScalar: BinaryFloatingPoint {
    /// C = alpha * op(A) * op(B) + beta * C, row-major, op = transpose when the flag is set.
    static func gemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Self,
        a: UnsafePointer<Self>, lda: Int, b: UnsafePointer<Self>, ldb: Int,
        beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int
    )
    /// out[i] = e^((x[i] - shift) * scale) for i < count (out may be x); returns the outputs' sum.
    static func exponentials(_ out: UnsafeMutablePointer<Self>, _ x: UnsafePointer<Self>, count: Int, shift: Self, scale: Self) -> Self
    static func logarithm(_ x: Self) -> Self
    /// sum_i a[i] b[i] c[i] for i < count (c[i] left out when c is nil).
    static func dot(_ a: UnsafePointer<Self>, _ b: UnsafePointer<Self>, _ c: UnsafePointer<Self>?, count: Int) -> Self
    /// The largest of x[0..<count].
    static func maximum(_ x: UnsafePointer<Self>, count: Int) -> Self
    /// ropeRotate's rotation of `rows` rows (see there), by the rotary table's cos and sin rows of `half`.
    static func rotate(
        _ x: UnsafeMutablePointer<Self>, rowStride: Int, rows: Int, positions: UnsafePointer<Int32>, heads: Int,
        cos: UnsafePointer<Self>, sin: UnsafePointer<Self>, half: Int, inverse: Bool)
    /// SwiGLU over `rows` rows: h[r][i] = silu(g) u, g = gu[r][i], u = gu[r][width + i].
    static func swiglu(_ h: UnsafeMutablePointer<Self>, gu: UnsafePointer<Self>, rows: Int, width: Int)
    /// Differentiates `swiglu`: dgu rows [d gate | d up] (overwritten).
    static func swigluBackward(_ dgu: UnsafeMutablePointer<Self>, dh: UnsafePointer<Self>, gu: UnsafePointer<Self>, rows: Int, width: Int)
}

extension Float: ModelScalar {
    @inline(__always)
    public static func gemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if suder_sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, Int32(computeThreads)) { return }
        cblas_sgemm(
            CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
            blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb),
            beta, c, blasint(ldc))
    }
    @inline(__always)
    public static func exponentials(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int, shift: Float, scale: Float) -> Float {
        suder_exponentials(out, x, count, shift, scale)
    }
    @inline(__always) public static func logarithm(_ x: Float) -> Float { Foundation.logf(x) }
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafePointer<Float>?, count: Int) -> Float {
        suder_dot(a, b, c, count)
    }
    @inline(__always) public static func maximum(_ x: UnsafePointer<Float>, count: Int) -> Float { suder_maximum(x, count) }
    @inline(__always)
    public static func rotate(
        _ x: UnsafeMutablePointer<Float>, rowStride: Int, rows: Int, positions: UnsafePointer<Int32>, heads: Int,
        cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, half: Int, inverse: Bool
    ) {
        suder_rope(x, rowStride, rows, positions, heads, cos, sin, half, inverse)
    }
    @inline(__always)
    public static func swiglu(_ h: UnsafeMutablePointer<Float>, gu: UnsafePointer<Float>, rows: Int, width: Int) {
        suder_swiglu_forward(h, gu, rows, width)
    }
    @inline(__always)
    public static func swigluBackward(
        _ dgu: UnsafeMutablePointer<Float>, dh: UnsafePointer<Float>, gu: UnsafePointer<Float>, rows: Int, width: Int
    ) {
        suder_swiglu_backward(dgu, dh, gu, rows, width)
    }
}

extension Double: ModelScalar {
    @inline(__always)
    public static func gemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double,
        a: UnsafePointer<Double>, lda: Int, b: UnsafePointer<Double>, ldb: Int,
        beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int
    ) {
        cblas_dgemm(
            CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
            blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb),
            beta, c, blasint(ldc))
    }
    public static func exponentials(_ out: UnsafeMutablePointer<Double>, _ x: UnsafePointer<Double>, count: Int, shift: Double, scale: Double) -> Double {
        var sum = 0.0
        for i in 0..<count {
            out[i] = Foundation.exp((x[i] - shift) * scale)
            sum += out[i]
        }
        return sum
    }
    @inline(__always) public static func logarithm(_ x: Double) -> Double { Foundation.log(x) }
    public static func dot(_ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ c: UnsafePointer<Double>?, count: Int) -> Double {
        var sum = 0.0
        for i in 0..<count { sum += a[i] * b[i] * (c?[i] ?? 1) }
        return sum
    }
    public static func maximum(_ x: UnsafePointer<Double>, count: Int) -> Double {
        var result = -Double.infinity
        for i in 0..<count where x[i] > result { result = x[i] }
        return result
    }
    public static func rotate(
        _ x: UnsafeMutablePointer<Double>, rowStride: Int, rows: Int, positions: UnsafePointer<Int32>, heads: Int,
        cos: UnsafePointer<Double>, sin: UnsafePointer<Double>, half: Int, inverse: Bool
    ) {
        for r in 0..<rows {
            let cosRow = cos + Int(positions[r]) * half, sinRow = sin + Int(positions[r]) * half
            for h in 0..<heads {
                let head = x + r * rowStride + h * 2 * half
                for i in 0..<half {
                    let c = cosRow[i], s = inverse ? -sinRow[i] : sinRow[i]
                    let x1 = head[i], x2 = head[i + half]
                    head[i] = x1 * c - x2 * s
                    head[i + half] = x2 * c + x1 * s
                }
            }
        }
    }
    public static func swiglu(_ h: UnsafeMutablePointer<Double>, gu: UnsafePointer<Double>, rows: Int, width: Int) {
        for r in 0..<rows {
            let g = gu + r * 2 * width, u = g + width
            for i in 0..<width { h[r * width + i] = g[i] * u[i] / (1 + Foundation.exp(-g[i])) }
        }
    }
    public static func swigluBackward(
        _ dgu: UnsafeMutablePointer<Double>, dh: UnsafePointer<Double>, gu: UnsafePointer<Double>, rows: Int, width: Int
    ) {
        for r in 0..<rows {
            let g = gu + r * 2 * width, u = g + width, dy = dh + r * width
            let dg = dgu + r * 2 * width, du = dg + width
            for i in 0..<width {
                let sig = 1 / (1 + Foundation.exp(-g[i]))
                dg[i] = dy[i] * u[i] * sig * (1 + g[i] * (1 - sig))
                du[i] = dy[i] * g[i] * sig
            }
        }
    }
}

/// 64-byte aligned, zero-filled buffer for kernels; freed by `deallocateAligned`.
/// Bytes handed out by `allocateAligned` so far (never decreases; buffers are allocated at
/// construction, never in hot loops): tests compare `MemoryEstimate` with it.
private(set) var alignedBytesAllocated = 0

func allocateAligned<T>(_ count: Int, of type: T.Type = T.self) -> UnsafeMutablePointer<T> {
    let bytes = max(1, count) * MemoryLayout<T>.stride
    alignedBytesAllocated += bytes
    let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
    raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
    return raw.bindMemory(to: T.self, capacity: max(1, count))
}

func deallocateAligned<T>(_ pointer: UnsafeMutablePointer<T>) {
    UnsafeMutableRawPointer(pointer).deallocate()
}

/// The OpenBLAS kernel family in use (e.g. "Haswell", "SkylakeX").
public var openBLASCoreName: String {
    String(cString: openblas_get_corename())
}

/// Which kernels run the Float products, the exponentials and the sampler's cached attention:
/// our AVX-512 or AVX2 kernels (CKernels), or OpenBLAS and libm. The best the CPU has is chosen
/// at load time; `SUDER_KERNELS` forces one (`select(environment:)`).
public enum KernelPath: String, CaseIterable, Sendable {
    case avx512, avx2, blas

    var cValue: SuderKernels {
        switch self {
        case .avx512: SUDER_KERNELS_AVX512
        case .avx2: SUDER_KERNELS_AVX2
        case .blas: SUDER_KERNELS_BLAS
        }
    }

    init(_ c: SuderKernels) {
        self = c == SUDER_KERNELS_AVX512 ? .avx512 : c == SUDER_KERNELS_AVX2 ? .avx2 : .blas
    }

    /// The path in use.
    public static var active: KernelPath { KernelPath(suder_kernels_active()) }
    /// The best path this CPU has.
    public static var best: KernelPath { KernelPath(suder_kernels_best()) }
    /// The paths this CPU can run, best first.
    public static var available: [KernelPath] { allCases.filter { $0.missingFeatures.isEmpty } }

    /// The CPU features this path needs that the CPU lacks ("" when it has them all).
    public var missingFeatures: String { String(cString: suder_kernels_missing(cValue)) }

    /// How tables name it.
    public var label: String {
        switch self {
        case .avx512: "AVX-512 (CKernels)"
        case .avx2: "AVX2 (CKernels)"
        case .blas: "OpenBLAS"
        }
    }

    /// Packed-path block sizes and the L2 size mc came from, e.g. "kc 256, mc 252 (L2 1024 KB)".
    public var blocking: String {
        var kc = 0, mc = 0, l2 = 0
        suder_kernels_blocking(cValue, &kc, &mc, &l2)
        return self == .blas ? "-" : "kc \(kc), mc \(mc) (L2 \(l2 >> 10) KB)"
    }

    /// Makes this path the active one; throws, naming what the CPU lacks, when it cannot run here.
    public func select() throws {
        guard suder_kernels_select(cValue) else {
            throw KernelPathError(description: "the \(rawValue) kernels need CPU features this CPU lacks: \(missingFeatures)")
        }
    }

    /// Selects the path `SUDER_KERNELS` names (avx512, avx2 or blas), or the best one when it is unset.
    @discardableResult
    public static func select(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> KernelPath {
        guard let requested = environment["SUDER_KERNELS"], !requested.isEmpty else {
            try best.select()
            return best
        }
        guard let path = KernelPath(rawValue: requested.lowercased()) else {
            throw KernelPathError(description: "SUDER_KERNELS=\(requested): expected one of avx512, avx2, blas")
        }
        do { try path.select() } catch { throw KernelPathError(description: "SUDER_KERNELS=\(requested): \(error)") }
        return path
    }

    /// One core's FMA peak in GFLOP/s with this path's vectors (the widest for blas), from a loop of
    /// independent FMAs: the fastest of `tries` runs of `seconds` each, since other processes on
    /// the core can only slow a run down. nil when the CPU lacks FMA.
    public func fmaPeakGFLOPs(tries: Int = 8, seconds: Double = 0.05) -> Double? {
        let peak = (0..<tries).map { _ in suder_fma_peak_gflops(cValue, seconds) }.max() ?? 0
        return peak > 0 ? peak : nil
    }
}

public struct KernelPathError: Error, CustomStringConvertible {
    public let description: String
}

/// The OpenBLAS kernel family this CPU should run (`suder_openblas_core`); nil for older CPUs,
/// where OpenBLAS's own choice stands.
public var openBLASCoreForThisCPU: String? {
    let core = String(cString: suder_openblas_core())
    return core.isEmpty ? nil : core
}

/// Whether OpenBLAS's `current` kernel family is weaker than the `wanted` one.
func openBLASCore(_ current: String, isWeakerThan wanted: String) -> Bool {
    let rank = ["Haswell": 1, "Zen": 1, "SkylakeX": 2, "Cooperlake": 2, "SapphireRapids": 2]
    return rank[current, default: 0] < rank[wanted, default: 0]
}

/// The core to restart with: the CPU's, when OpenBLAS chose a weaker one by itself (0.3.21 does not
/// know recent Intel models and falls back to Prescott, SSE3). A set OPENBLAS_CORETYPE is the
/// user's choice and stands; OpenBLAS reads an empty one as unset, and so do we.
public func openBLASCoreToRestartWith(
    current: String = openBLASCoreName, wanted: String? = openBLASCoreForThisCPU,
    environment: [String: String] = ProcessInfo.processInfo.environment
) -> String? {
    guard let wanted, environment["OPENBLAS_CORETYPE", default: ""].isEmpty, openBLASCore(current, isWeakerThan: wanted)
    else { return nil }
    return wanted
}

/// Set in the restarted process: the core OpenBLAS had chosen by itself, for `doctor` to report.
public let openBLASOwnCoreVariable = "SUDER_OPENBLAS_OWN_CORE"

/// OpenBLAS picks its kernels when the library loads, before any of our code runs, so the only way
/// to change them is to start again with OPENBLAS_CORETYPE set. Call first thing in `main`, before
/// MPI starts (the launcher's environment and the process id carry over). If exec fails, the
/// process goes on with OpenBLAS's choice and `doctor` advises.
public func restartWithOpenBLASCoreForThisCPU() {
    let own = openBLASCoreName
    guard let core = openBLASCoreToRestartWith(current: own) else { return }
    setenv(openBLASOwnCoreVariable, own, 1)
    setenv("OPENBLAS_CORETYPE", core, 1)
    execv("/proc/self/exe", CommandLine.unsafeArgv)
    unsetenv("OPENBLAS_CORETYPE")
    unsetenv(openBLASOwnCoreVariable)
}

/// How OpenBLAS's kernels were chosen, when it matters: the advice to launch with the CPU's core
/// when a set OPENBLAS_CORETYPE names a weaker one (or the restart failed), or what the restart
/// replaced. OpenBLAS still does the Double products and the Float products on the BLAS path.
public func openBLASCoreAdvice() -> String? {
    let environment = ProcessInfo.processInfo.environment
    guard let wanted = openBLASCoreForThisCPU else { return nil }
    let current = openBLASCoreName
    if let own = environment[openBLASOwnCoreVariable], current == environment["OPENBLAS_CORETYPE"] {
        return "OpenBLAS chose its \(own) kernels for this CPU by itself; suder restarted with OPENBLAS_CORETYPE=\(current)"
    }
    guard openBLASCore(current, isWeakerThan: wanted) else { return nil }
    let forced = environment["OPENBLAS_CORETYPE"].map { " (forced by OPENBLAS_CORETYPE=\($0))" } ?? ""
    return
        "OpenBLAS runs its \(current) kernels\(forced) on a CPU that runs \(wanted): launch with OPENBLAS_CORETYPE=\(wanted) for faster Double products and BLAS-path products"
}
