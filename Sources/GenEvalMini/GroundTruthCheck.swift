import Foundation
import World

/// The `data` stage: `writeDataset` with GenEval-mini as the judge of the ground-truth eval images
/// (the round trip's ceiling in `world.json`). The judge sees eval images only.
@discardableResult
public func generateDataset(
    config: WorldConfig, outDir: URL, stopRequested: () -> Bool = { false }, progress: (String) -> Void
) throws -> DatasetReport {
    try writeDataset(
        config: config, outDir: outDir, judge: { evaluateGenEval(image: $0, record: $1).correct }, stopRequested: stopRequested,
        progress: progress)
}
