import Foundation

/// Output of a job: only rank 0 prints, so logs of N ranks read like the log of one.
public final class Console {
    public let isPrinter: Bool
    public let progressMode: String
    public let progressInterval: Double

    public init(rank: Int, progressMode: String = "auto", progressInterval: Double = 10) {
        isPrinter = rank == 0
        self.progressMode = progressMode
        self.progressInterval = progressInterval
    }

    public func print(_ message: String) {
        guard isPrinter else { return }
        Swift.print(message)
        fflush(stdout)
    }

    public func warn(_ message: String) {
        guard isPrinter else { return }
        printError("warning: " + message)
    }

    /// A progress reporter for `total` units of work labelled `label`.
    public func progress(_ label: String, total: Int, unit: String = "") -> ProgressReporter {
        let live: Bool
        switch progressMode {
        case "bar": live = true
        case "lines": live = false
        case "off": return ProgressReporter(label: label, total: total, unit: unit, output: nil, live: false, interval: 0)
        default: live = stdoutIsTerminal()
        }
        return ProgressReporter(label: label, total: total, unit: unit, output: isPrinter ? self : nil, live: live, interval: progressInterval)
    }
}

/// Whether the user watches stdout on a terminal. Open MPI hands every rank a pseudo-terminal even
/// when mpirun's own output goes to a file, so under Open MPI only the launcher knows: the
/// `scripts/mpirun` wrapper passes SUDER_STDOUT_IS_TERMINAL; without it, a batch log is assumed.
public func stdoutIsTerminal(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
    if environment["OMPI_COMM_WORLD_SIZE"] != nil { return environment["SUDER_STDOUT_IS_TERMINAL"] == "1" }
    return isatty(STDOUT_FILENO) != 0
}

/// ProgressReporter with rate and ETA: a redrawn bar on a terminal, a line every `interval` seconds in a
/// batch log (where carriage returns would make the file unreadable).
public final class ProgressReporter {
    public let label: String
    public let total: Int
    public let unit: String
    weak var output: Console?
    public let live: Bool
    public let interval: Double
    public let start = Date()
    public var lastPrint = Date.distantPast
    public private(set) var done = 0

    public init(label: String, total: Int, unit: String, output: Console?, live: Bool, interval: Double) {
        self.label = label
        self.total = total
        self.unit = unit
        self.output = output
        self.live = live
        self.interval = interval
    }

    /// Marks `count` more units done; `detail` (e.g. the current loss) is shown beside the bar.
    public func advance(by count: Int = 1, detail: String = "") {
        done += count
        guard output != nil else { return }
        let now = Date()
        let finished = done >= total
        if !finished && now.timeIntervalSince(lastPrint) < (live ? 0.2 : interval) { return }
        lastPrint = now
        let line = render(now: now, detail: detail)
        if live {
            Swift.print("\r" + line + (finished ? "\n" : ""), terminator: "")
        } else {
            Swift.print(line)
        }
        fflush(stdout)
    }

    public func render(now: Date, detail: String) -> String {
        let elapsed = now.timeIntervalSince(start)
        let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 1
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let width = 24
        let filled = Int(fraction * Double(width))
        let bar = live ? "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] " : ""
        let rateText = unit.isEmpty ? "" : " " + String(format: "%.1f", rate) + " \(unit)/s"
        let percent = String(format: "%.0f%%", fraction * 100)
        return "\(label) \(bar)\(done)/\(total) (\(percent))\(rateText) elapsed \(formatDuration(elapsed))"
            + " eta \(formatDuration(eta))" + (detail.isEmpty ? "" : "  " + detail)
    }
}

public func formatDuration(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
}
