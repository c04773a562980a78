import ClusterRuntime
import Foundation
import Model
import World

// Each stage decodes its keys once, here, into a typed struct. Settings several stages share
// have one owner: the model's shape and micro-batch (`model.*`), image sampling (one decoder for
// `suder.*` and `eval.*`), the quick evaluations (`eval.quick_*`), the run seed (`run.seed`).

/// The model's shape (`model.*`) and the sequences one forward pass holds on a rank.
struct ModelSettings {
    let dModel, nLayers, nHeads, requestedFFNHidden, maxSeq: Int
    let tiedHead: Bool
    let ropeTheta: Double
    /// Sequences per forward/backward on one rank, in every stage: bounds activation memory.
    let microBatch: Int

    init(_ config: ResolvedConfig) {
        dModel = config.int("model.d_model")
        nLayers = config.int("model.n_layers")
        nHeads = config.int("model.n_heads")
        requestedFFNHidden = config.int("model.ffn_hidden")
        maxSeq = config.int("model.max_seq")
        tiedHead = config.bool("model.tied_head")
        ropeTheta = config.double("model.rope_theta")
        microBatch = config.int("model.micro_batch")
    }

    /// The model over the dataset's vocabulary.
    func modelConfig(vocabulary: Vocabulary) -> ModelConfig {
        // SwiGLU's usual 8/3 ratio keeps the MLP's parameter count equal to a 4x GELU MLP's.
        let hidden = requestedFFNHidden > 0 ? requestedFFNHidden : max(32, (dModel * 8 / 3 + 31) / 32 * 32)
        return ModelConfig(
            vocabSize: vocabulary.size, dModel: dModel, nLayers: nLayers, nHeads: nHeads, ffnHidden: hidden,
            maxSeq: maxSeq, tiedHead: tiedHead, ropeTheta: ropeTheta)
    }
}

/// The model a config's stages build, before the data exist: its vocabulary follows from
/// `data.codebook_size` and the world's fixed words.
func configuredModel(_ config: ResolvedConfig) -> ModelConfig {
    ModelSettings(config).modelConfig(vocabulary: Vocabulary(codebookSize: config.int("data.codebook_size")))
}

/// Drawing images from the model.
struct ImageSampling {
    var temperature: Float
    var topK: Int
    var guidanceWeight: Float
}

extension ImageSampling {
    /// The `<section>.temperature`, `<section>.top_k` and `<section>.cfg_weight` keys.
    init(_ config: ResolvedConfig, section: String) {
        temperature = Float(config.double("\(section).temperature"))
        topK = config.int("\(section).top_k")
        guidanceWeight = Float(config.double("\(section).cfg_weight"))
    }
}

/// `pretrain.*`.
struct PretrainSettings {
    let steps, batchSize, warmupSteps, logEvery, evalEvery, checkpointEvery: Int
    let learningRate, minLearningRateRatio, gradClip, weightDecay: Float
    let mixGeneration, mixUnderstanding, mixProbes: Double
    let promptDropout, captionConditioned, promptStyleCaptions, imperfectPrompts: Double
    let seed: UInt64

    init(_ config: ResolvedConfig) {
        steps = config.int("pretrain.steps")
        batchSize = config.int("pretrain.batch_size")
        warmupSteps = config.int("pretrain.warmup_steps")
        logEvery = config.int("pretrain.log_every")
        evalEvery = config.int("pretrain.eval_every")
        checkpointEvery = config.int("pretrain.checkpoint_every")
        learningRate = Float(config.double("pretrain.lr"))
        minLearningRateRatio = Float(config.double("pretrain.min_lr_ratio"))
        gradClip = Float(config.double("pretrain.grad_clip"))
        weightDecay = Float(config.double("pretrain.weight_decay"))
        mixGeneration = config.double("pretrain.mix_generation")
        mixUnderstanding = config.double("pretrain.mix_understanding")
        mixProbes = config.double("pretrain.mix_probes")
        promptDropout = config.double("pretrain.prompt_dropout")
        captionConditioned = config.double("pretrain.caption_conditioned")
        promptStyleCaptions = config.double("pretrain.prompt_style_captions")
        imperfectPrompts = config.double("pretrain.imperfect_prompts")
        seed = UInt64(config.int("run.seed"))
    }
}

/// The loss of a SUDER update: SimPO or DPO on each group's best and worst sample, or GRPO on
/// all of a group's samples.
enum PreferenceObjective: String, CaseIterable {
    case simpo, dpo, grpo
}

/// `suder.*`.
struct SuderSettings {
    let rounds, promptsPerRound, imagesPerRound, k, stepsPerRound, evalEvery: Int
    /// Images are drawn with guidance; captions with the same temperature and top-k, unguided.
    let imageSampling: ImageSampling
    let objective: PreferenceObjective
    let simpoBeta, simpoGamma, dpoBeta, chosenNLL: Double
    let grpoKL, grpoClip: Double
    /// The likelihood guard: after this many rounds in a row in which a direction's
    /// `logps/chosen` fell (0 = off), its loss is scaled by `guardFactor`, or the stage stops at 0.
    let guardRounds: Int
    let guardFactor: Double
    let mode: DirectionMode
    let reward: RewardSource
    let logSamples: Bool
    /// Groups whose best and worst rewards differ by no more than this give no pair.
    let minimumRewardGap: [Direction: Double]
    /// Each direction's weight in the joint preference loss.
    let lossWeight: [Direction: Double]
    let learningRate, gradClip, weightDecay: Float
    let seed: UInt64

    init(_ config: ResolvedConfig) {
        rounds = config.int("suder.rounds")
        promptsPerRound = config.int("suder.prompts_per_round")
        imagesPerRound = config.int("suder.images_per_round")
        k = config.int("suder.k")
        stepsPerRound = config.int("suder.steps_per_round")
        evalEvery = config.int("suder.eval_every")
        imageSampling = ImageSampling(config, section: "suder")
        objective = PreferenceObjective(rawValue: config.string("suder.objective"))!
        simpoBeta = config.double("suder.simpo_beta")
        simpoGamma = config.double("suder.gamma")
        dpoBeta = config.double("suder.dpo_beta")
        chosenNLL = config.double("suder.chosen_nll")
        grpoKL = config.double("suder.grpo_kl")
        grpoClip = config.double("suder.grpo_clip")
        guardRounds = config.int("suder.guard_rounds")
        guardFactor = config.double("suder.guard_factor")
        mode = DirectionMode(rawValue: config.string("suder.direction"))!
        reward = RewardSource(rawValue: config.string("suder.reward"))!
        logSamples = config.bool("suder.log_samples")
        minimumRewardGap = [
            .generation: config.double("suder.min_reward_gap_generation"),
            .understanding: config.double("suder.min_reward_gap_understanding"),
        ]
        lossWeight = [.generation: 1, .understanding: config.double("suder.loss_weight_understanding")]
        learningRate = Float(config.double("suder.lr"))
        gradClip = Float(config.double("suder.grad_clip"))
        weightDecay = Float(config.double("suder.weight_decay"))
        seed = UInt64(config.int("run.seed"))
    }

    /// DPO, and GRPO with a KL penalty, score against the frozen starting model.
    var needsReference: Bool { objective == .dpo || (objective == .grpo && grpoKL > 0) }
}

/// `eval.*`: the eval stage's full evaluation and the quick evaluations during training.
struct EvalSettings {
    let imagesPerPrompt, maxPrompts: Int
    /// The eval set's share the quick evaluations score.
    let quickPrompts, quickImages: Int
    /// As configured, for the summary; `imageSampling` is what the sampler gets.
    let temperature, cfgWeight: Double
    let imageSampling: ImageSampling
    let seed: UInt64

    init(_ config: ResolvedConfig) {
        imagesPerPrompt = config.int("eval.images_per_prompt")
        maxPrompts = config.int("eval.max_prompts")
        quickPrompts = config.int("eval.quick_prompts")
        quickImages = config.int("eval.quick_images")
        temperature = config.double("eval.temperature")
        cfgWeight = config.double("eval.cfg_weight")
        imageSampling = ImageSampling(config, section: "eval")
        seed = UInt64(config.int("run.seed"))
    }
}
