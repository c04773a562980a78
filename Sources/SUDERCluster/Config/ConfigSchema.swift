import ClusterRuntime
import Foundation
import World

/// Every config key the product knows, with its type, default and meaning. A key missing here is
/// an error in a config file or an override.
public let configSchema = ConfigSchema(
    fields: runtimeConfigFields + runFields + dataFields + modelFields + pretrainFields + suderFields + evalFields + renamedFields,
    // Logging every sample changes what is written, not what is learned.
    resultNeutralPrefixes: ["suder.log_samples"],
    checkConsistency: checkConsistency)

/// Keys that were renamed: setting one is an error naming its new name.
let renamedFields: [ConfigField] = [
    .renamed("suder.beta", to: "suder.simpo_beta"),
    .renamed("pretrain.micro_batch", to: "model.micro_batch"),
    .renamed("pretrain.eval_prompts", to: "eval.quick_prompts"),
    .renamed("pretrain.eval_images", to: "eval.quick_images"),
]

public extension ResolvedConfig {
    /// `resolve` against the product's schema.
    static func resolve(file: URL?, overrides: [String]) throws -> ResolvedConfig {
        try resolve(file: file, overrides: overrides, schema: configSchema)
    }

    /// `setting` against the product's schema.
    func setting(_ key: String, _ text: String) throws -> ResolvedConfig {
        try setting(key, text, schema: configSchema)
    }
}

/// The keys under `prefix` (e.g. "suder."), one per paragraph: key, type, default and meaning.
/// For a stage's `--help`.
public func configKeysHelp(prefix: String) -> String {
    configSchema.fields.compactMap { field in
        if case .renamed = field.kind { return nil }
        guard field.key.hasPrefix(prefix) else { return nil }
        return "\(field.key) (\(field.kind.typeName), default \(field.defaultValue)): \(field.help)"
    }.joined(separator: "\n")
}

private let positive = 1...Int.max
private let nonNegative = 0...Int.max

let runFields: [ConfigField] = [
    ConfigField("run.seed", .int(nonNegative), .int(1234), "shared seed: initialisation, data, sampling streams")
]

let dataFields: [ConfigField] = [
    ConfigField("data.seed", .int(nonNegative), .int(250_607_963), "seed of the world: scenes, splits, codebook"),
    ConfigField("data.canvas", .int(16...256), .int(32), "image side in pixels"),
    ConfigField("data.patch", .int(1...32), .int(4), "VQ patch side in pixels"),
    ConfigField(
        "data.position_step", .int(1...8), .int(4),
        "objects' corners lie on a lattice of this many pixels; 4 (the patch size) aligns objects with patches, "
            + "which a small model learns to draw several times faster than 2"),
    ConfigField("data.codebook_size", .int(16...65536), .int(1024), "VQ codebook entries (image tokens)"),
    ConfigField("data.train_pairs", .int(0...10_000_000), .int(18_000), "(prompt, image) training pairs"),
    ConfigField("data.train_captions", .int(0...10_000_000), .int(12_000), "(image, full caption) training examples"),
    ConfigField("data.train_probes", .int(0...10_000_000), .int(12_000), "(image, yes/no question) training examples"),
    ConfigField(
        "data.train_imperfect", .int(0...10_000_000), .int(12_000),
        "damaged renders with the prompt their scene and damage still satisfy (prompt task only)"),
    ConfigField("data.unpaired_prompts", .int(0...10_000_000), .int(2_000), "prompts without images for SUDER"),
    ConfigField("data.unpaired_images", .int(0...10_000_000), .int(2_000), "images without captions for SUDER"),
    ConfigField("data.eval_prompts_per_category", .int(1...10_000), .int(100), "GenEval-mini prompts per category, in each eval split (dev and test)"),
    ConfigField("data.eval_images", .int(0...10_000_000), .int(600), "images of unseen scenes for caption and POPE scoring, in each eval split (dev and test)"),
]

let modelFields: [ConfigField] = [
    ConfigField("model.d_model", .int(8...8192), .int(192), "residual width C"),
    ConfigField("model.n_layers", .int(1...128), .int(6), "transformer blocks"),
    ConfigField("model.n_heads", .int(1...128), .int(6), "attention heads (d_model must divide evenly)"),
    ConfigField("model.ffn_hidden", .int(0...65536), .int(0), "SwiGLU hidden width; 0 = 8/3 * d_model rounded to 32"),
    ConfigField("model.max_seq", .int(8...4096), .int(112), "longest sequence"),
    ConfigField("model.tied_head", .bool, .bool(true), "output head shares the token embedding"),
    ConfigField(
        "model.micro_batch", .int(positive), .int(32),
        "sequences per forward/backward on one rank in every stage (bounds activation memory)"),
    ConfigField("model.rope_theta", .double(1...1e9), .double(10000), "rotary embedding base"),
]

let pretrainFields: [ConfigField] = [
    ConfigField("pretrain.steps", .int(nonNegative), .int(2000), "optimizer steps"),
    ConfigField("pretrain.batch_size", .int(positive), .int(64), "global sequences per step (split over ranks)"),
    ConfigField("pretrain.lr", .double(0...10), .double(3e-3), "peak learning rate"),
    ConfigField("pretrain.min_lr_ratio", .double(0...1), .double(0.1), "final learning rate as a fraction of the peak"),
    ConfigField("pretrain.warmup_steps", .int(nonNegative), .int(100), "linear warmup steps"),
    ConfigField("pretrain.weight_decay", .double(0...10), .double(0.1), "AdamW decoupled weight decay"),
    ConfigField("pretrain.grad_clip", .double(0...1e9), .double(1.0), "global gradient-norm clip; 0 = off"),
    ConfigField("pretrain.mix_generation", .double(0...1), .double(0.5), "share of prompt -> image sequences"),
    ConfigField("pretrain.mix_understanding", .double(0...1), .double(0.35), "share of image -> caption sequences"),
    ConfigField("pretrain.mix_probes", .double(0...1), .double(0.15), "share of yes/no probe sequences"),
    ConfigField("pretrain.prompt_dropout", .double(0...1), .double(0.1), "chance a prompt is replaced by the null prompt (for guidance)"),
    ConfigField(
        "pretrain.caption_conditioned", .double(0...1), .double(0.25),
        "share of generation sequences conditioned on a full caption instead of a prompt"),
    ConfigField(
        "pretrain.prompt_style_captions", .double(0...1), .double(0.5),
        "share of understanding sequences that ask for the image's prompt (<prompt> marker) instead of its full caption"),
    ConfigField(
        "pretrain.imperfect_prompts", .double(0...1), .double(0.25),
        "share of prompt-task sequences that read a damaged render instead of a clean one"),
    ConfigField("pretrain.log_every", .int(positive), .int(20), "steps between metrics lines"),
    ConfigField("pretrain.eval_every", .int(nonNegative), .int(500), "steps between held-out evaluations; 0 = only at the end"),
    ConfigField("pretrain.checkpoint_every", .int(nonNegative), .int(500), "steps between checkpoints; 0 = only at the end"),
]

let suderFields: [ConfigField] = [
    ConfigField("suder.rounds", .int(nonNegative), .int(10), "self-improvement rounds"),
    ConfigField("suder.prompts_per_round", .int(nonNegative), .int(64), "unpaired prompts per round (generation direction)"),
    ConfigField("suder.images_per_round", .int(nonNegative), .int(64), "unpaired images per round (understanding direction)"),
    ConfigField("suder.k", .int(2...256), .int(8), "samples per prompt or image"),
    ConfigField("suder.temperature", .double(0.01...10), .double(1.0), "sampling temperature"),
    ConfigField("suder.top_k", .int(nonNegative), .int(0), "top-k sampling; 0 = off"),
    ConfigField(
        "suder.cfg_weight", .double(0...100), .double(3.0),
        "classifier-free guidance weight for the rounds' images; the loss scores every sample unguided, "
            + "so 0 makes the rounds on-policy (the loss sees the distribution the samples came from)"),
    ConfigField(
        "suder.objective", .choice(PreferenceObjective.allCases.map(\.rawValue)), .string("simpo"),
        "simpo = online SimPO on each group's best and worst sample (reference-free, length-normalised; "
            + "suder.simpo_beta, suder.gamma, suder.chosen_nll); dpo = DPO on the same pairs against the frozen "
            + "starting model (suder.dpo_beta, suder.chosen_nll); grpo = every sample of a group with its group-relative "
            + "advantage (r - mean) / (std + 1e-4), a clipped policy gradient on its length-normalised log-probability "
            + "(suder.grpo_kl, suder.grpo_clip)"),
    ConfigField("suder.simpo_beta", .double(0...1000), .double(2.0), "SimPO beta"),
    ConfigField("suder.gamma", .double(-100...100), .double(0.5), "SimPO target margin gamma"),
    ConfigField("suder.dpo_beta", .double(0...1000), .double(0.1), "DPO beta"),
    ConfigField(
        "suder.chosen_nll", .double(0...100), .double(0),
        "SimPO and DPO: weight of the chosen completion's mean negative log-likelihood added to the preference loss "
            + "(a CPO/RPO-style guard against pushing both completions down); 0 = pure SimPO/DPO"),
    ConfigField(
        "suder.grpo_kl", .double(0...100), .double(0.04),
        "GRPO: weight of the KL penalty (k3 estimate, per token) to the frozen starting model; 0 = no reference model"),
    ConfigField(
        "suder.grpo_clip", .double(0...10), .double(0.2),
        "GRPO: a sample whose probability ratio to the round's first step leaves [1 - clip, 1 + clip] in the direction "
            + "its advantage pushes gets no gradient (acts from the second of suder.steps_per_round)"),
    ConfigField(
        "suder.guard_rounds", .int(nonNegative), .int(0),
        "label-free likelihood guard: once a direction's logps/chosen has fallen this many rounds in a row, "
            + "its next round's loss is scaled by suder.guard_factor; 0 = off"),
    ConfigField(
        "suder.guard_factor", .double(0...1), .double(0.5),
        "the guard's scale of that direction's loss; 0 = the stage stops (finished) after the round that triggers it"),
    ConfigField(
        "suder.direction", .choice(["joint", "generation", "understanding", "alternating"]), .string("joint"),
        "which directions train each round"),
    ConfigField(
        "suder.loss_weight_understanding", .double(0...100), .double(1),
        "weight of the understanding direction's preference loss in the joint loss (generation's is 1)"),
    ConfigField(
        "suder.reward", .choice(RewardSource.allCases.map(\.rawValue)), .string("self"),
        "self = dual self-rewards (SUDER); oracle = detector/labels, an upper-bound ablation that reads labels; "
            + "random = controls: chosen and rejected drawn at random within each group; shuffled = each group's self-rewards "
            + "permuted before pairing (both keep the self-reward run's samples and update size)"),
    ConfigField("suder.lr", .double(0...10), .double(1e-4), "learning rate"),
    ConfigField("suder.steps_per_round", .int(positive), .int(1), "optimizer steps over each round's pairs (or GRPO groups)"),
    ConfigField("suder.weight_decay", .double(0...10), .double(0.0), "AdamW decoupled weight decay"),
    ConfigField("suder.grad_clip", .double(0...1e9), .double(1.0), "global gradient-norm clip; 0 = off"),
    ConfigField("suder.eval_every", .int(nonNegative), .int(0), "rounds between evaluations; 0 = only at the end"),
    ConfigField(
        "suder.min_reward_gap_generation", .double(0...1000), .double(0),
        "a prompt's K images give a pair only if the best and worst self-rewards differ by more than this "
            + "(0 = drop only exact ties); near-ties are the pairs the self-reward orders worst"),
    ConfigField(
        "suder.min_reward_gap_understanding", .double(0...1000), .double(0),
        "the same for an image's K captions (their rewards are per image token, on a smaller scale)"),
    ConfigField(
        "suder.log_samples", .bool, .bool(false),
        "write every sample with its self-reward and the oracle's verdict (and the detector's reason) to suder/samples.jsonl"),
]

let evalFields: [ConfigField] = [
    ConfigField("eval.images_per_prompt", .int(1...64), .int(4), "images per GenEval prompt (GenEval uses 4)"),
    ConfigField("eval.temperature", .double(0.01...10), .double(1.0), "image sampling temperature"),
    ConfigField("eval.top_k", .int(nonNegative), .int(0), "top-k for image sampling; 0 = off"),
    ConfigField("eval.cfg_weight", .double(0...100), .double(3.0), "guidance weight for image sampling"),
    ConfigField("eval.max_prompts", .int(nonNegative), .int(0), "prompts scored; 0 = the whole eval set"),
    ConfigField(
        "eval.quick_prompts", .int(nonNegative), .int(60),
        "GenEval-mini prompts in the quick evaluations during pretrain and suder"),
    ConfigField(
        "eval.quick_images", .int(nonNegative), .int(100),
        "held-out images for validation loss and caption accuracy in the quick evaluations"),
]

/// Checks that involve several keys at once.
func checkConsistency(_ config: ResolvedConfig) throws {
    let dModel = config.int("model.d_model"), heads = config.int("model.n_heads")
    guard dModel % heads == 0, (dModel / heads) % 2 == 0 else {
        throw ConfigError("model.d_model (\(dModel)) must split into model.n_heads (\(heads)) heads of even size (rotary embeddings rotate pairs)")
    }
    let canvas = config.int("data.canvas"), patch = config.int("data.patch")
    guard canvas % patch == 0 else {
        throw ConfigError("data.canvas (\(canvas)) must be a multiple of data.patch (\(patch))")
    }
    // The world's scenes: two of the largest objects side by side, or four of the smallest, keep
    // a patch of background between them (WorldConfig.validate).
    let world = worldConfig(config)
    let needed = max(2 * world.maxObjectSize + patch + 2, 3 * patch + 2 * world.minObjectSize + 2)
    guard canvas >= needed else {
        let smallest = (needed + patch - 1) / patch * patch
        throw ConfigError(
            "data.canvas (\(canvas)) is too small for data.patch (\(patch)): scenes of objects up to \(world.maxObjectSize) pixels "
                + "with a patch between them need \(needed) pixels; use data.canvas >= \(smallest) or a smaller data.patch")
    }
    do { try world.validate() } catch { throw ConfigError("the data.* settings describe no valid world: \(error)") }
    if let problem = sequenceFitProblem(maxSeq: config.int("model.max_seq"), canvas: canvas, patch: patch) { throw ConfigError(problem) }
    // Every round draws its prompts and images from the unpaired ones the data stage makes.
    for (perRound, unpaired) in [("suder.prompts_per_round", "data.unpaired_prompts"), ("suder.images_per_round", "data.unpaired_images")] {
        guard config.int(perRound) <= config.int(unpaired) else {
            throw ConfigError("\(perRound) (\(config.int(perRound))) must not exceed \(unpaired) (\(config.int(unpaired)))")
        }
    }
    let mix = config.double("pretrain.mix_generation") + config.double("pretrain.mix_understanding") + config.double("pretrain.mix_probes")
    guard mix > 0 else {
        throw ConfigError("pretrain.mix_generation + pretrain.mix_understanding + pretrain.mix_probes must be > 0")
    }
    // The controls replace how a group's pair is chosen; GRPO trains every sample on the rewards
    // themselves, so a control would not change its update.
    let reward = config.string("suder.reward")
    guard config.string("suder.objective") != "grpo" || ["self", "oracle"].contains(reward) else {
        throw ConfigError(
            "suder.reward=\(reward) is a pairing control for suder.objective=simpo or dpo; with grpo every sample trains on its reward, "
                + "so use suder.reward=self or oracle")
    }
}

/// Why a model of `maxSeq` positions cannot hold this world's longest sequence (an understanding
/// sequence with a full caption), or nil when it can.
func sequenceFitProblem(maxSeq: Int, canvas: Int, patch: Int) -> String? {
    let imageTokens = (canvas / patch) * (canvas / patch)
    let longest = 4 + imageTokens + maxCaptionTokens + 1
    guard maxSeq < longest else { return nil }
    return "model.max_seq (\(maxSeq)) is shorter than the longest sequence of this world (\(longest) tokens: "
        + "BOS BOI, \(imageTokens) image tokens, EOI, task marker, up to \(maxCaptionTokens) caption words, EOS)"
}
