import ClusterRuntime
import Foundation
import Model

/// The memory each model stage needs on one rank (`MemoryEstimate`): the model at the
/// micro-batch (parameters, gradients, activations), AdamW's state when it trains, the sampler's
/// KV cache, buffers and packed copy of the weights, and the frozen reference model of DPO and of
/// GRPO's KL penalty. The
/// vocabulary follows from the config alone, so the job checks it before the data exists
/// (`prepareJob`).
public func stageMemory(_ config: ResolvedConfig) -> [StageMemory] {
    let settings = ModelSettings(config)
    let model = configuredModel(config)
    let side = config.int("data.canvas") / config.int("data.patch")
    // One sampler draws images for a chunk's prompts (and as many guidance streams) after text
    // prompts, and captions for a chunk of image prefixes of up to maxSeq tokens.
    let chunk = UnifiedModelTasks.samplingChunk
    let guided = config.double("suder.cfg_weight") > 0 || config.double("eval.cfg_weight") > 0
    let samplingBytes = MemoryEstimate.samplingBytes(
        model,
        calls: [
            (prompts: chunk, guided: guided, promptLength: max(1, model.maxSeq - side * side)),
            (prompts: chunk, guided: false, promptLength: model.maxSeq),
        ], threads: resolveThreads(requested: config.int("runtime.threads")))
    let parameters = MemoryEstimate.buffer(MemoryEstimate.parameterCount(model))
    let transformer = MemoryEstimate.transformerBytes(model, batchCapacity: settings.microBatch)
    let modelParts: [(name: String, bytes: Double)] = [
        ("parameters", parameters), ("gradients", parameters), ("activations", transformer - 2 * parameters),
    ]
    let optimizer = ("AdamW state", MemoryEstimate.adamWBytes(model))
    let sampler = ("sampling KV cache, buffers and packed weights", samplingBytes)
    var suder = modelParts + [optimizer, sampler]
    if SuderSettings(config).needsReference { suder.append(("frozen reference model", transformer)) }
    return [
        StageMemory(stage: StageName.pretrain.rawValue, parts: modelParts + [optimizer, sampler]),
        StageMemory(stage: StageName.suder.rawValue, parts: suder),
        StageMemory(stage: StageName.eval.rawValue, parts: modelParts + [sampler]),
    ]
}
