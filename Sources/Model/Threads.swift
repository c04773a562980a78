import CKernels
import COpenBLAS

// Threads within a rank: one count for the kernels' pool (CKernels' pool.c) and OpenBLAS.

/// Sets the threads per rank (the caller's share of the node's cores): OpenBLAS's count, which
/// is also the one the kernels' thread pool reads (`computeThreads`).
public func setComputeThreads(_ count: Int) {
    openblas_set_num_threads(Int32(max(1, count)))
}

/// Threads per rank: OpenBLAS's count (set by `setComputeThreads`, or by the runtime from
/// `runtime.threads`), read at every call, so the kernels, the sampler and OpenBLAS always agree.
public var computeThreads: Int { Int(openblas_get_num_threads()) }

/// Runs body(i) for every i < count, spread over `threads` threads of the kernels' pool (the
/// calling thread and up to threads - 1 sleeping workers; see `suder_parallel`). The items must be
/// independent: which thread runs which item varies from call to call.
func parallelFor(_ count: Int, threads: Int = computeThreads, _ body: (Int) -> Void) {
    withoutActuallyEscaping(body) { body in
        var context = body
        withUnsafeMutablePointer(to: &context) { context in
            _ = suder_parallel(
                Int32(threads), count, nil,
                { context, item in
                    context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(item)
                }, context)
        }
    }
}
