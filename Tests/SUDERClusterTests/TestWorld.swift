import World

@testable import ClusterRuntime

extension WorldConfig {
    /// A world small enough to generate in well under a second, for tests that need a dataset
    /// on disk but not a trained model.
    static var smallTestWorld: WorldConfig {
        var world = WorldConfig()
        (world.trainPairs, world.trainCaptions, world.trainProbes, world.trainImperfect) = (60, 30, 30, 40)
        (world.unpairedPrompts, world.unpairedImages, world.evalPromptsPerCategory, world.evalImages) = (8, 8, 2, 8)
        (world.kmeansImages, world.kmeansIterations) = (60, 2)
        return world
    }
}
