import ClusterRuntime
import Foundation
import GenEvalMini
import World

/// `suder data`: rank 0 generates the world while the others wait; every rank learns whether it
/// worked. The world is written into `<run-dir>/.data-incomplete` with its DONE marker and renamed
/// to `<run-dir>/data` when whole, so `data` is either absent or complete. A stop signal ends
/// generation after its current step with exit 85 and nothing kept: the rerun starts afresh.
func runDataStage(_ job: JobContext) throws {
    let world = worldConfig(job.config)
    do { try world.validate() } catch { throw AllRanksError("\(error)") }
    let directory = job.stageDirectory(StageName.data.rawValue)
    let incomplete = job.runDir.appendingPathComponent(".data-incomplete", isDirectory: true)
    let finished = try job.comm.rootDecides { () -> Bool in
        print("world config:")
        for field in world.fields { print("  " + field.name.padding(toLength: 24, withPad: " ", startingAt: 0) + field.value) }
        print("  " + "outDir".padding(toLength: 24, withPad: " ", startingAt: 0) + directory.path)
        let files = FileManager.default
        do {
            // Left by a stopped or killed generation, or a world without its DONE marker.
            try? files.removeItem(at: incomplete)
            try? files.removeItem(at: directory)
            try generateDataset(config: world, outDir: incomplete, stopRequested: { StopSignals.requested }) { line in
                print(line); fflush(stdout)
            }
            try CheckpointStore.writeDoneMarker(in: incomplete, step: 0)
            try files.moveItem(at: incomplete, to: directory)
            return true
        } catch WorldError.stopped(let step) {
            try? files.removeItem(at: incomplete)
            print("data: stop requested after: \(step); nothing kept, a rerun generates the world afresh")
            return false
        } catch {
            try? files.removeItem(at: incomplete)
            throw AllRanksError("data: \(error)", exitCode: 1)
        }
    }
    if !finished { job.comm.exitTogether(code: RequeueExitCode.checkpointed.rawValue) }
}

/// The world config the `data.*` keys describe. The ground truth holds as many samples per eval
/// prompt as the eval stage draws (`eval.images_per_prompt`), so the two stay comparable.
func worldConfig(_ config: ResolvedConfig) -> WorldConfig {
    var world = WorldConfig()
    world.seed = UInt64(config.int("data.seed"))
    world.canvasSize = config.int("data.canvas")
    world.patchSize = config.int("data.patch")
    world.positionStep = config.int("data.position_step")
    world.codebookSize = config.int("data.codebook_size")
    world.trainPairs = config.int("data.train_pairs")
    world.trainCaptions = config.int("data.train_captions")
    world.trainProbes = config.int("data.train_probes")
    world.trainImperfect = config.int("data.train_imperfect")
    world.unpairedPrompts = config.int("data.unpaired_prompts")
    world.unpairedImages = config.int("data.unpaired_images")
    world.evalPromptsPerCategory = config.int("data.eval_prompts_per_category")
    world.evalImages = config.int("data.eval_images")
    world.imagesPerEvalPrompt = config.int("eval.images_per_prompt")
    return world
}
