import CKernels
import COpenBLAS
import Foundation

/// The floating-point types the layer kernels run in: Float for training and sampling, Double
/// for the finite-difference gradient checks. Float products run our AVX-512 kernels where the CPU
/// has AVX-512 (CKernels), else OpenBLAS; Double products go to OpenBLAS (dgemm).
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
}

extension Float: ModelScalar {
    @inline(__always)
    public static func gemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if suder_sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, openblas_get_num_threads()) { return }
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
}

/// Sets the OpenBLAS thread count (the caller's share of the node's cores).
public func setComputeThreads(_ count: Int) {
    openblas_set_num_threads(Int32(max(1, count)))
}

/// 64-byte aligned, zero-filled buffer for kernels; freed by `deallocateAligned`.
func allocateAligned<T>(_ count: Int, of type: T.Type = T.self) -> UnsafeMutablePointer<T> {
    let bytes = max(1, count) * MemoryLayout<T>.stride
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

/// Whether Float products, exponentials and the sampler's attention run our AVX-512 kernels (CKernels).
public var avx512KernelsActive: Bool { suder_kernels_available() }

/// Debian's OpenBLAS 0.3.21 does not recognise AMD Zen 4 / 5 and runs its AVX2 ("Haswell") kernels
/// on a CPU that has AVX-512; its SkylakeX kernels are ~2x faster there. The core is chosen when
/// the library loads, so the fix is the environment of the launch: OPENBLAS_CORETYPE=SkylakeX.
/// On such a CPU our own kernels take the Float products, so the core matters only for what
/// OpenBLAS still does: large Float products with several BLAS threads, and Double products.
/// Returns that advice when it applies.
public func openBLASCoreAdvice() -> String? {
    guard openBLASCoreName == "Haswell",
        let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
        let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
    else { return nil }
    let flags = Set(flagsLine.split(separator: " ").map(String.init))
    let needed = ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]
    guard needed.allSatisfy(flags.contains) else { return nil }
    return
        "OpenBLAS runs its Haswell (AVX2) kernels on this AVX-512 CPU; with several BLAS threads, large matmuls are OpenBLAS's: launch with OPENBLAS_CORETYPE=SkylakeX for ~2x faster ones"
}
