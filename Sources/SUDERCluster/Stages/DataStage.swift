import ClusterRuntime
import Foundation
import GenEvalMini
import World

/// `suder data`: rank 0 generates the world into `<run-dir>/data` while the others wait; every
/// rank learns whether it worked.
func runDataStage(_ job: JobContext) throws {
    let world = worldConfig(job.config)
    do { try world.validate() } catch { throw AllRanksError("\(error)") }
    let directory = job.stageDirectory(StageName.data.rawValue)
    try job.comm.rootDecides {
        print("world config:")
        for field in world.fields { print("  " + field.name.padding(toLength: 24, withPad: " ", startingAt: 0) + field.value) }
        print("  " + "outDir".padding(toLength: 24, withPad: " ", startingAt: 0) + directory.path)
        do {
            try generateDataset(config: world, outDir: directory) { line in
                print(line); fflush(stdout)
            }
        } catch {
            throw AllRanksError("data: \(error)", exitCode: 1)
        }
    }
    try CheckpointStore(directory: directory, comm: job.comm).markDone(step: 0)
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
