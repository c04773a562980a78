import Foundation

/// Every failure the world reports: each names what was wrong and where, so a bad file or word
/// can be fixed without a debugger.
public enum WorldError: Error, CustomStringConvertible, Equatable {
    case unknownWord(String)
    case invalidTokens(String)
    case malformedFile(path: String, reason: String)
    case missingFile(path: String)
    case metadata(line: Int, reason: String)
    case png(String)
    case invalidConfig(String)
    case caption(String)
    /// The caller asked generation to stop (`generateDataset`'s `stopRequested`) after this step.
    case stopped(after: String)

    public var description: String {
        switch self {
        case .unknownWord(let word): return "unknown word '\(word)': not in the world's vocabulary"
        case .invalidTokens(let reason): return "invalid tokens: \(reason)"
        case .malformedFile(let path, let reason): return "malformed file \(path): \(reason)"
        case .missingFile(let path): return "missing file \(path)"
        case .metadata(let line, let reason): return "metadata line \(line): \(reason)"
        case .png(let reason): return "PNG: \(reason)"
        case .invalidConfig(let reason): return "invalid world config: \(reason)"
        case .caption(let reason): return "caption: \(reason)"
        case .stopped(let step): return "stopped as asked after: \(step)"
        }
    }
}

extension WorldError: LocalizedError {
    public var errorDescription: String? { description }
}
