import ClusterRuntime
import Foundation
import SUDERCluster

// Comparisons of two stage runs for Tests/mpi/stages.sh, run as one process after the runs:
//   suder-mpitests compare-checkpoints DIR_A DIR_B TOLERANCE
//   suder-mpitests compare-metrics FILE_A FILE_B TOLERANCE [KEY=TOLERANCE ...]
// TOLERANCE 0 means bitwise; otherwise the script states why its value is enough, per quantity
// where one quantity needs its own (KEY names a metric, or its family as in `grad_norm` for
// `grad_norm/generation`).

/// Metrics that measure the machine, not the training: they differ between any two runs.
let machineDependentMetrics: Set<String> = [
    "tokens_per_s", "gflops_per_s", "step_time_s", "communication_s",
    "peak_memory_mb", "eval/seconds", "time/sampling_s", "time/scoring_s",
    "time/update_s", "time/communication_s",
]

/// Two checkpoint directories (`step-...`). Tolerance 0: the weights, both Adam moments and the
/// Adam step must be bitwise identical (exact resume). Tolerance t > 0: same step and tensor table,
/// and no weight differs by more than t (the same training on another rank count).
func compareCheckpoints(_ arguments: [String]) -> Bool {
    guard arguments.count == 3, let tolerance = Float(arguments[2]), tolerance >= 0 else {
        printError("usage: suder-mpitests compare-checkpoints DIR_A DIR_B TOLERANCE")
        return false
    }
    let a: Checkpoint, b: Checkpoint
    do {
        a = try readCheckpoint(directory: URL(fileURLWithPath: arguments[0]))
        b = try readCheckpoint(directory: URL(fileURLWithPath: arguments[1]))
    } catch {
        printError("compare-checkpoints: \(error)")
        return false
    }
    guard a.header.step == b.header.step, a.header.tensors == b.header.tensors else {
        print("checkpoints differ in step (\(a.header.step) vs \(b.header.step)) or tensor table")
        return false
    }
    var same = true
    let sections = tolerance == 0 ? ["weights", "adam_m", "adam_v", "adam_step"] : ["weights"]
    for name in sections {
        guard let x = a.sections[name], let y = b.sections[name] else {
            print("\(name): missing in one checkpoint")
            return false
        }
        if tolerance == 0 {
            let identical = x == y
            print("\(name): \(identical ? "bitwise identical" : "DIFFERENT") (\(x.count) bytes)")
            same = same && identical
            continue
        }
        guard let u = try? bytesToFloats(x), let v = try? bytesToFloats(y), u.count == v.count else {
            print("\(name): not comparable float32 arrays")
            return false
        }
        var largest: Float = 0, largestAt = 0, differenceSquares = 0.0, normSquares = 0.0
        for i in u.indices {
            let difference = abs(u[i] - v[i])
            if !(difference <= largest) { largest = difference; largestAt = i }  // NaN counts as largest
            differenceSquares += Double(difference) * Double(difference)
            normSquares += Double(u[i]) * Double(u[i])
        }
        let within = largest <= tolerance
        print(
            String(
                format: "%@: max |a-b| = %.3g (element %d, a = %.6g), relative L2 = %.3g, tolerance %.3g: %@", name, largest,
                largestAt, u[largestAt], (differenceSquares / max(normSquares, 1e-300)).squareRoot(), tolerance, within ? "ok" : "EXCEEDED"))
        same = same && within
    }
    return same
}

/// Two `metrics.jsonl` files: the same lines with the same keys; every value except the
/// machine-dependent ones equal (tolerance 0) or within relative tolerance t, or within the
/// tolerance given for its key (`KEY=TOLERANCE`, for the key and its `KEY/...` family), or within
/// the optional absolute tolerance (a plain number): a mean of terms that cancel (GRPO's loss,
/// whose advantages sum to zero in every group) is near 0 while its float noise stays the size of
/// the terms'.
func compareMetrics(_ arguments: [String]) -> Bool {
    let usage = "usage: suder-mpitests compare-metrics FILE_A FILE_B TOLERANCE [ABSOLUTE_TOLERANCE] [KEY=TOLERANCE ...]"
    guard arguments.count >= 3, let tolerance = Double(arguments[2]), tolerance >= 0 else {
        printError(usage)
        return false
    }
    var keyTolerances: [String: Double] = [:], absoluteTolerance = 0.0
    for argument in arguments.dropFirst(3) {
        if let value = Double(argument), value >= 0 {
            absoluteTolerance = value
            continue
        }
        let parts = argument.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty, let value = Double(parts[1]), value >= 0 else {
            printError("compare-metrics: '\(argument)' is neither an absolute tolerance nor KEY=TOLERANCE; \(usage)")
            return false
        }
        keyTolerances[parts[0]] = value
    }
    func family(_ key: String) -> String? { keyTolerances.keys.first { key == $0 || key.hasPrefix($0 + "/") } }
    func records(_ path: String) -> [[String: Any]]? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return text.split(separator: "\n").map { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] ?? [:] }
    }
    guard let first = records(arguments[0]), let second = records(arguments[1]) else {
        printError("compare-metrics: cannot read \(arguments[0]) or \(arguments[1])")
        return false
    }
    guard first.count == second.count, !first.isEmpty else {
        print("metrics: \(first.count) lines vs \(second.count)")
        return false
    }
    var compared = 0, largestRelative = 0.0, largestAt = "-", largestAbsolute = 0.0
    var largestRelativeByKey: [String: Double] = [:], mismatches: [String] = []
    for (number, (x, y)) in zip(first, second).enumerated() {
        let keys = x.keys.sorted()
        guard keys == y.keys.sorted(), !keys.isEmpty else {
            mismatches.append("line \(number + 1): keys \(keys) vs \(y.keys.sorted())")
            continue
        }
        for key in keys where !machineDependentMetrics.contains(key) {
            compared += 1
            if let p = x[key] as? NSNumber, let q = y[key] as? NSNumber {
                // Exact comparison first: the Doubles read back from the shortest decimal are exact.
                let difference = abs(p.doubleValue - q.doubleValue)
                let relative = p.doubleValue == q.doubleValue ? 0 : difference / max(abs(p.doubleValue), 1e-12)
                if difference <= absoluteTolerance {
                    largestAbsolute = max(largestAbsolute, difference)
                    continue
                }
                if let family = family(key) {
                    largestRelativeByKey[family] = max(largestRelativeByKey[family] ?? 0, relative)
                } else if relative > largestRelative {
                    (largestRelative, largestAt) = (relative, "line \(number + 1) \(key)")
                }
                if relative > family(key).map({ keyTolerances[$0]! }) ?? tolerance {
                    mismatches.append("line \(number + 1) \(key): \(p) vs \(q)")
                }
            } else if "\(x[key]!)" != "\(y[key]!)" {
                mismatches.append("line \(number + 1) \(key): \(x[key]!) vs \(y[key]!)")
            }
        }
    }
    print(
        String(format: "metrics: %d lines, %d values compared, largest relative difference %.3g", first.count, compared, largestRelative)
            + " (\(largestAt))" + String(format: ", tolerance %.3g", tolerance))
    if absoluteTolerance > 0 {
        print(
            String(
                format: "  values within the absolute tolerance (not held to the relative one): largest |a-b| %.3g, tolerance %.3g",
                largestAbsolute, absoluteTolerance))
    }
    for (family, value) in keyTolerances.sorted(by: { $0.key < $1.key }) {
        print(String(format: "  %@: largest relative difference %.3g, tolerance %.3g", family, largestRelativeByKey[family] ?? 0, value))
    }
    for mismatch in mismatches.prefix(10) { print("  DIFFERENT \(mismatch)") }
    return mismatches.isEmpty
}
