import Foundation

/// Counts every run of the detector and of the GenEval-mini scorer in this process, so a test can
/// show that writing training data never consults the judge, whatever code later moves where.
public enum JudgeCalls {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var calls = 0

    public static var count: Int { lock.withLock { calls } }

    static func record() { lock.withLock { calls += 1 } }
}
