import ArgumentParser
import Foundation
import SUDERCluster

/// Commands that run a trained model on the user's own prompts and images.
extension Suder {
    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Draw images from a trained model for a prompt, or for a GenEval metadata file.",
            discussion: "With --prompt: <out>/NNNN.png and an enlarged grid.png. With --metadata: GenEval's layout "
                + "<out>/<index:05d>/metadata.jsonl and samples/<k:04d>.png, scorable by `suder eval geneval`; with the run's "
                + "defaults the images are the eval stage's. Runs alone or under mpirun; the images do not depend on the rank count.")
        @Option(help: "A stage directory (the step its DONE marker records; while it trains, its newest valid checkpoint) or a step-* directory.")
        var checkpoint: String
        @Option(help: "The run's data directory (vocabulary, codebook); default: <run-dir>/data beside the checkpoint.")
        var data: String?
        @Option(help: "The prompt, in the world's words (e.g. \"a photo of two red circles\").")
        var prompt: String?
        @Option(help: "A GenEval metadata file (one JSON object a line) instead of --prompt.")
        var metadata: String?
        @Option(help: "Images per prompt; default 8 for --prompt, the run's eval.images_per_prompt for --metadata.")
        var n: Int?
        @Option(help: "Seed; default: the run's run.seed.")
        var seed: Int?
        @Option(help: "Classifier-free guidance weight; default: the run's eval.cfg_weight.")
        var cfg: Double?
        @Option(help: "Sampling temperature; default: the run's eval.temperature.")
        var temperature: Double?
        @Option(help: "Output directory (new or empty).")
        var out: String
        @Option(name: .customLong("grid-scale"), help: "Grid pixels per image pixel (nearest neighbour).")
        var gridScale: Int = 8

        func validate() throws {
            guard (prompt == nil) != (metadata == nil) else { throw ValidationError("give exactly one of --prompt and --metadata") }
            if let n, !(1...256).contains(n) { throw ValidationError("--n must be in 1...256; received \(n)") }
            if let cfg, !(0...100).contains(cfg) { throw ValidationError("--cfg must be in 0...100; received \(cfg)") }
            if let temperature, !(0.01...10).contains(temperature) { throw ValidationError("--temperature must be in 0.01...10; received \(temperature)") }
            if let seed, seed < 0 { throw ValidationError("--seed must not be negative; received \(seed)") }
            guard (1...32).contains(gridScale) else { throw ValidationError("--grid-scale must be in 1...32; received \(gridScale)") }
        }

        func run() throws {
            runGenerateCommand(
                GenerateOptions(
                    checkpoint: URL(fileURLWithPath: checkpoint, isDirectory: true), data: data.map { URL(fileURLWithPath: $0, isDirectory: true) },
                    prompt: prompt, metadata: metadata.map { URL(fileURLWithPath: $0) }, count: n, seed: seed, guidanceWeight: cfg,
                    temperature: temperature, out: URL(fileURLWithPath: out, isDirectory: true), gridScale: gridScale))
        }
    }

    struct Caption: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Caption images with a trained model and score each caption by SUDER's dual self-reward.",
            discussion: "Prints each caption with its mean log p(image | caption); --ask answers a yes/no probe as POPE-mini does.")
        @Option(help: "A stage directory (the step its DONE marker records; while it trains, its newest valid checkpoint) or a step-* directory.")
        var checkpoint: String
        @Option(help: "The run's data directory (vocabulary, codebook); default: <run-dir>/data beside the checkpoint.")
        var data: String?
        @Option(help: "Captions per image (more than one needs --temperature above 0).")
        var n: Int = 1
        @Option(help: "Sampling temperature; 0 = greedy, as the eval stage captions.")
        var temperature: Double = 0
        @Option(help: "Seed; default: the run's run.seed.")
        var seed: Int?
        @Option(help: "A yes/no question, e.g. \"is there a red circle ?\".")
        var ask: String?
        @Argument(help: "PNG images of the world's size (e.g. 32x32).")
        var images: [String] = []

        func validate() throws {
            guard !images.isEmpty else { throw ValidationError("give at least one PNG image") }
            guard (0...10).contains(temperature) else { throw ValidationError("--temperature must be in 0...10; received \(temperature)") }
            if let seed, seed < 0 { throw ValidationError("--seed must not be negative; received \(seed)") }
            if let ask, ask.allSatisfy(\.isWhitespace) { throw ValidationError("--ask needs a question, e.g. \"is there a red circle ?\"") }
        }

        func run() throws {
            runCaptionCommand(
                CaptionOptions(
                    checkpoint: URL(fileURLWithPath: checkpoint, isDirectory: true), data: data.map { URL(fileURLWithPath: $0, isDirectory: true) },
                    images: images.map { URL(fileURLWithPath: $0) }, count: n, temperature: temperature, seed: seed, ask: ask))
        }
    }
}
