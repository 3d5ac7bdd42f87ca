/// How a gate turns a token's logits into expert scores (the probabilities that become combine
/// weights). `docs/ROUTING.md` §1.
package enum GateScoreFunction: String, Equatable, Sendable, CaseIterable {
    /// `exp(l_e − max l) / Σ exp(l − max l)` over all E experts, the sum in Double.
    case softmax
}

/// Which experts a gate picks for a token, given its logits. `docs/ROUTING.md` §2.
package enum ExpertSelection: Equatable, Sendable {
    /// The k largest logits in descending order, ties to the lower expert index.
    case topK
}

/// The gate's rule as a value: a score function and a selection rule. Equal rules route
/// identical logits identically, in the distributed layer and in the reference alike.
package struct GateRule: Equatable, Sendable {
    package var score: GateScoreFunction
    package var selection: ExpertSelection

    package init(score: GateScoreFunction = .softmax, selection: ExpertSelection = .topK) {
        self.score = score
        self.selection = selection
    }
}

/// Where a gate's expert choices come from.
package enum GateSource: Sendable {
    /// A learned gate: logits = normalised hidden · `weights`, `weights` row-major `[dModel, E]`.
    case learned(weights: [Float])
    /// Task-level routing: token t goes to `taskExperts[taskIds[t]]`, with no gate GEMM.
    case tasks([Int: [Int]])
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

    package init(layerIndex: Int, layer: LayerConfiguration, dModel: Int, source: GateSource, rule: GateRule = GateRule(),
                drift: RouterDrift? = nil) {
        if case let .learned(weights) = source { precondition(weights.count == dModel * layer.experts, "gate weights are [dModel, E]") }
        self.layerIndex = layerIndex
        self.layer = layer
        self.dModel = dModel
        self.source = source
        self.rule = rule
        self.drift = drift
    }

    /// The gate of layer `layerIndex` of `model`: by task when the model has `task_experts`,
    /// else learned from `weights.gate`.
    package init(layerIndex: Int, model: ModelConfiguration, weights: LayerWeights, drift: RouterDrift? = nil) {
        let layer = model.layers[layerIndex]
        self.init(layerIndex: layerIndex, layer: layer, dModel: model.dModel,
                  source: model.taskExperts.isEmpty ? .learned(weights: weights.gate) : .tasks(model.taskExperts), drift: drift)
    }

    /// Routes `tokenCount` tokens at `step`. `normalized` is row-major `[tokenCount, dModel]`
    /// (the layer's norm already applied; unused by task routing); `taskIds` has one id per token
    /// for task routing (ignored otherwise); `capacity` is this step's capacity plan for the
    /// layer. `logits` is scratch the caller reuses across steps (grown to `[tokenCount, E]`).
    package func route(
        normalized: UnsafeBufferPointer<Float>, tokenCount: Int, taskIds: [Int], step: Int, capacity: LayerCapacity,
        logits: inout [Float]
    ) throws(RoutingError) -> RoutingPlan {
        switch source {
        case let .tasks(taskExperts):
            return try Router.route(taskIds: taskIds, taskExperts: taskExperts, layer: layer, capacity: capacity)
        case let .learned(weights):
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
                if let bias {
                    for token in 0..<tokenCount {
                        for expert in 0..<experts { out[token * experts + expert] += bias[expert] }
                    }
                }
            }
            return try logits.withUnsafeBufferPointer { (buffer) throws(RoutingError) in
                try Router.route(logits: UnsafeBufferPointer(rebasing: buffer[0..<tokenCount * experts]), tokenCount: tokenCount,
                                 layer: layer, capacity: capacity, rule: rule)
            }
        }
    }

    /// `route` over an array of normalised rows (allocates its logits; for tools and tests).
    package func route(normalized: [Float], taskIds: [Int] = [], step: Int = 0, capacity: LayerCapacity = .configured) throws(RoutingError) -> RoutingPlan {
        var logits: [Float] = []
        return try normalized.withUnsafeBufferPointer { (rows) throws(RoutingError) in
            try route(normalized: rows, tokenCount: normalized.count / dModel, taskIds: taskIds, step: step, capacity: capacity, logits: &logits)
        }
    }
}
