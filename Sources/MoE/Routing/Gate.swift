/// How a gate turns a token's logits into expert scores (the probabilities that become combine
/// weights). `docs/ROUTING.md` §1.
package enum GateScoreFunction: String, Equatable, Sendable, CaseIterable {
    /// `exp(l_e − max l) / Σ exp(l − max l)` over all E experts, the sum in Double.
    case softmax
    /// `1 / (1 + exp(−l_e))` per expert, independently (DeepSeek-V3).
    case sigmoid
    /// The softmax over the k chosen logits only (GPT-OSS); the experts not chosen score nothing.
    case softmaxOfChosen = "softmax-top-k"
}

/// How a group-limited gate scores a group of experts. `docs/ROUTING.md` §2.
package enum GroupScore: String, Equatable, Sendable, CaseIterable {
    /// The largest selection key in the group (DeepSeek-V2).
    case max
    /// The sum of the group's two largest selection keys (DeepSeek-V3).
    case topTwoSum = "top2-sum"
}

/// Which experts a gate picks for a token, given its selection keys. `docs/ROUTING.md` §2.
package enum ExpertSelection: Equatable, Sendable {
    /// The k largest keys in descending order, ties to the lower expert index.
    case topK
    /// Group-limited top-k (DeepSeek-V2/V3): the E experts form `groups` equal consecutive
    /// groups; the `topGroups` groups with the best `GroupScore` (ties to the lower group) are
    /// kept, and the k largest keys among their experts are chosen.
    case groupLimited(groups: Int, topGroups: Int, score: GroupScore)
}

/// How the chosen experts' scores become combine weights. `docs/ROUTING.md` §3.
package enum TopKNormalization: String, Equatable, Sendable, CaseIterable {
    /// SwiftMoE's own rule: k = 1 keeps the probability; k ≥ 2 renormalises it over the routes
    /// that survive capacity (a fully dropped token gets 0).
    case survivors
    /// Divided by the sum of the k chosen scores, before drops (`norm_topk_prob: true`).
    case chosen
    /// The score itself (`norm_topk_prob: false`).
    case none
}

/// The gate's rule as a value: a score function, a selection rule, a normalisation and a scale.
/// Equal rules route identical logits identically, in the distributed layer and in the
/// reference alike.
package struct GateRule: Equatable, Sendable {
    package var score: GateScoreFunction
    package var selection: ExpertSelection
    package var normalization: TopKNormalization
    /// Multiplies every combine weight after normalisation (`routed_scaling_factor`).
    package var scalingFactor: Float

    package init(score: GateScoreFunction = .softmax, selection: ExpertSelection = .topK,
                normalization: TopKNormalization = .survivors, scalingFactor: Float = 1) {
        self.score = score
        self.selection = selection
        self.normalization = normalization
        self.scalingFactor = scalingFactor
    }

    /// SwiftMoE's own rule (softmax, top-k, renormalised over survivors, scale 1), the one the
    /// earlier routing tests pin down bit for bit.
    package var isClassic: Bool { self == GateRule() }
}

/// Where a gate's expert choices come from.
package enum GateSource: Sendable {
    /// A learned gate: logits = normalised hidden · `weights` (+ `bias`), `weights` row-major
    /// `[dModel, E]`, `bias` `[E]` or empty (GPT-OSS's router has one). `selectionBias` `[E]` or
    /// empty is added to the scores to choose experts only, never to the weights
    /// (DeepSeek-V3's `e_score_correction_bias`).
    case learned(weights: [Float], bias: [Float] = [], selectionBias: [Float] = [])
    /// Task-level routing: token t goes to `taskExperts[taskIds[t]]`, with no gate GEMM.
    case tasks([Int: [Int]])
    /// A dense layer: nothing is routed (`route` returns `RoutingPlan.denseLayer`).
    case none
}

/// The gate of one MoE layer: normalised hidden states in, a `RoutingPlan` out — gate GEMM,
/// the synthetic workload bias (if any), scores, selection, then capacity and drops through
/// `Router`. One entry point (`route`), used by the distributed layer and by the reference, so
/// the two cannot route differently.
///
/// The drifting workload (`RouterDrift`) is an input of the gate: it is given once, when the
/// gate is made, and `route` asks it for the bias of its layer at the step it is told.
package struct Gate: Sendable {
    /// The layer's index in the model (the drift's phase depends on it).
    package let layerIndex: Int
    package let layer: LayerConfiguration
    package let dModel: Int
    package let source: GateSource
    package let rule: GateRule
    /// The synthetic drifting workload's bias, added to every token's logits; nil = none.
    package let drift: RouterDrift?
    /// Recorded routing that replaces the gate's choices (`moe run --routing-trace`); nil = none.
    package let trace: RoutingTrace?

    package init(layerIndex: Int, layer: LayerConfiguration, dModel: Int, source: GateSource, rule: GateRule = GateRule(),
                drift: RouterDrift? = nil, trace: RoutingTrace? = nil) {
        if case let .learned(weights, bias, selectionBias) = source {
            precondition(weights.count == dModel * layer.experts, "gate weights are [dModel, E]")
            precondition(bias.isEmpty || bias.count == layer.experts, "a gate bias is [E]")
            precondition(selectionBias.isEmpty || selectionBias.count == layer.experts, "a selection bias is [E]")
        }
        self.layerIndex = layerIndex
        self.layer = layer
        self.dModel = dModel
        self.source = source
        self.rule = rule
        self.drift = drift
        self.trace = trace
    }

    /// The gate of layer `layerIndex` of `model`: by task when the model has `task_experts`,
    /// else learned from `weights.gate` (with its bias and selection bias), by the layer's rule.
    package init(layerIndex: Int, model: ModelConfiguration, weights: LayerWeights, drift: RouterDrift? = nil, trace: RoutingTrace? = nil) {
        let layer = model.layers[layerIndex]
        self.init(layerIndex: layerIndex, layer: layer, dModel: model.dModel,
                  source: layer.dense ? .none : model.taskExperts.isEmpty
                      ? .learned(weights: weights.gate, bias: weights.gateBias, selectionBias: weights.selectionBias)
                      : .tasks(model.taskExperts),
                  rule: layer.gateRule, drift: drift, trace: trace)
    }

    /// Routes `tokenCount` tokens at `step`. `normalized` is row-major `[tokenCount, dModel]`
    /// (the layer's norm already applied; unused by task routing); `taskIds` has one id per token
    /// for task routing (ignored otherwise); `capacity` is this step's capacity plan for the
    /// layer. `logits` is scratch the caller reuses across steps (grown to `[tokenCount, E]`).
    /// `firstToken` is the global index of the rank's first token (a routing trace is indexed by
    /// global token); `sequenceLength`, when given, counts capacity per sequence of that many
    /// tokens (`TokenBatch.sequenceLength`).
    package func route(
        normalized: UnsafeBufferPointer<Float>, tokenCount: Int, taskIds: [Int], step: Int, capacity: LayerCapacity,
        logits: inout [Float], firstToken: Int = 0, sequenceLength: Int? = nil
    ) throws(RoutingError) -> RoutingPlan {
        if let trace, !layer.dense {
            let recorded = trace.choices(step: step, layer: layerIndex, k: layer.topK, tokens: firstToken..<firstToken + tokenCount)
            return Router.route(recordedChoice: recorded.choice, probability: recorded.probability, tokenCount: tokenCount, layer: layer,
                                capacity: capacity, rule: rule, sequenceLength: sequenceLength)
        }
        switch source {
        case .none:
            return .denseLayer(tokenCount: tokenCount)
        case let .tasks(taskExperts):
            return try Router.route(taskIds: taskIds, taskExperts: taskExperts, layer: layer, capacity: capacity, sequenceLength: sequenceLength)
        case let .learned(weights, gateBias, selectionBias):
            let experts = layer.experts
            precondition(normalized.count >= tokenCount * dModel)
            if logits.count < tokenCount * experts { logits = [Float](repeating: 0, count: tokenCount * experts) }
            let bias = drift?.bias(layer: layerIndex, experts: experts, step: step)
            logits.withUnsafeMutableBufferPointer { out in
                guard tokenCount > 0 else { return }
                weights.withUnsafeBufferPointer { gate in
                    BLAS.multiply(rows: tokenCount, columns: experts, inner: dModel, normalized.baseAddress!, gate.baseAddress!,
                                  into: out.baseAddress!)
                }
                for bias in [gateBias, bias ?? []] where !bias.isEmpty {
                    for token in 0..<tokenCount {
                        for expert in 0..<experts { out[token * experts + expert] += bias[expert] }
                    }
                }
            }
            return try logits.withUnsafeBufferPointer { (buffer) throws(RoutingError) in
                try Router.route(logits: UnsafeBufferPointer(rebasing: buffer[0..<tokenCount * experts]), tokenCount: tokenCount,
                                 layer: layer, capacity: capacity, rule: rule, selectionBias: selectionBias, sequenceLength: sequenceLength)
            }
        }
    }

    /// `route` over an array of normalised rows (allocates its logits; for tools and tests).
    package func route(normalized: [Float], taskIds: [Int] = [], step: Int = 0, capacity: LayerCapacity = .configured,
                       firstToken: Int = 0, sequenceLength: Int? = nil) throws(RoutingError) -> RoutingPlan {
        var logits: [Float] = []
        return try normalized.withUnsafeBufferPointer { (rows) throws(RoutingError) in
            try route(normalized: rows, tokenCount: normalized.count / dModel, taskIds: taskIds, step: step, capacity: capacity, logits: &logits,
                      firstToken: firstToken, sequenceLength: sequenceLength)
        }
    }
}
