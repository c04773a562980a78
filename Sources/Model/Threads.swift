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
/// calling thread and up to threads - 1 workers; see `suder_parallel`). The items must be
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

/// Multiply-adds of a product that take about as long as one element of the training step's
/// per-row loops (norms, SwiGLU, RoPE, softmax, AdamW): ~0.6 ns an element against ~0.02 ns a
/// multiply-add on one core. Those loops give `parallelRanges` their work in elements times this.
let elementWork = 32

/// Runs body(range) over contiguous ranges that together cover 0..<count, on up to `threads`
/// threads of the kernels' pool when `work` (multiply-adds, or elements times `elementWork`, of
/// all items) reaches `suder_parallel_min_work`; else body(0..<count) here. The ranges depend
/// on the thread count, so items must be independent: each writes only its own outputs and
/// reduces nothing across items.
func parallelRanges(_ count: Int, work: Int, threads: Int = computeThreads, _ body: (Range<Int>) -> Void) {
    let threads = work >= suder_parallel_min_work ? min(threads, count) : 1
    guard threads > 1 else {
        if count > 0 { body(0..<count) }
        return
    }
    // A few ranges per thread, so a thread slowed by other load on its core takes fewer.
    let pieces = min(count, 4 * threads)
    let reversed = parallelRangesReversed
    parallelFor(pieces, threads: threads) { taken in
        let piece = reversed ? pieces - 1 - taken : taken
        body((piece * count / pieces)..<((piece + 1) * count / pieces))
    }
}

/// Tests set this to hand out `parallelRanges`' ranges last first, so a split whose result
/// depends on the order its ranges run in fails even when one thread happens to take them all.
var parallelRangesReversed = false
