import FileFormats

/// Recorded routing to replay instead of the gate (`moe run --routing-trace FILE`): for every
/// step, layer and global token, the k experts it chose, in choice order, and optionally their
/// combine weights — so load balance can be studied on routing recorded from a real model.
///
/// Files (`docs/MODEL.md`, "Routing traces"): expert ids `.npy` int32 or int64
/// `[steps, layers, tokens, k]`; weights (optional) `.npy` float32 of the same shape. A dense
/// layer's entries are ignored (write −1). Without weights every route weighs 1/k, as task
/// routing does. Capacity, drops and the layer's normalisation apply as usual.
package struct RoutingTrace: Sendable {
    package let steps: Int
    package let layers: Int
    package let tokens: Int
    package let topK: Int
    /// `[steps][layers][tokens][k]`, flattened.
    package let experts: [Int32]
    package let weights: [Float]?

    /// Loads and checks a trace against `model`: the shape (layers = the model's, k = the largest
    /// top_k of its MoE layers, tokens = the job's `globalTokens`, at least `steps` steps), expert ids within
    /// each layer's experts and distinct per token, finite non-negative weights. Every problem is
    /// one line naming the file and what is wrong.
    package static func load(
        expertsPath: String, weightsPath: String?, model: ModelConfiguration, globalTokens: Int, steps: Int
    ) throws(RoutingTraceError) -> RoutingTrace {
        let ids: NpyArray
        do { ids = try NpyArray.load(path: expertsPath) } catch { throw RoutingTraceError(description: "\(error)") }
        guard ids.shape.count == 4, let values = ids.integerValues else {
            throw RoutingTraceError(description: "\(expertsPath): expected int32 or int64 [steps, layers, tokens, k] expert ids, got \(ids.elementType.rawValue) \(ids.shape)")
        }
        let (traceSteps, layers, tokens, k) = (ids.shape[0], ids.shape[1], ids.shape[2], ids.shape[3])
        guard layers == model.layers.count else {
            throw RoutingTraceError(description: "\(expertsPath): shape \(ids.shape): layers dimension \(layers), but the model '\(model.name)' has \(model.layers.count) layers")
        }
        guard tokens == globalTokens else {
            throw RoutingTraceError(description: "\(expertsPath): shape \(ids.shape): tokens dimension \(tokens), but the job has \(globalTokens) tokens per step (all ranks)")
        }
        guard traceSteps >= steps else {
            throw RoutingTraceError(description: "\(expertsPath): shape \(ids.shape): the trace holds \(traceSteps) steps, the run asks for \(steps)")
        }
        let largestK = model.layers.filter { !$0.dense }.map(\.topK).max() ?? k
        guard k == largestK else {
            throw RoutingTraceError(description: "\(expertsPath): shape \(ids.shape): k dimension \(k), but the model's largest top_k is \(largestK)")
        }
        for step in 0..<steps {
            for (layerIndex, layer) in model.layers.enumerated() where !layer.dense {
                for token in 0..<tokens {
                    let base = ((step * layers + layerIndex) * tokens + token) * k
                    let chosen = values[base..<base + layer.topK]
                    if let bad = chosen.first(where: { !(0..<layer.experts).contains($0) }) {
                        throw RoutingTraceError(description: "\(expertsPath): step \(step) layer \(layerIndex) token \(token): expert \(bad) is outside the layer's 0...\(layer.experts - 1)")
                    }
                    guard Set(chosen).count == layer.topK else {
                        throw RoutingTraceError(description: "\(expertsPath): step \(step) layer \(layerIndex) token \(token): experts \(Array(chosen)) repeat one")
                    }
                }
            }
        }
        var weights: [Float]?
        if let weightsPath {
            let file: NpyArray
            do { file = try NpyArray.load(path: weightsPath) } catch { throw RoutingTraceError(description: "\(error)") }
            guard file.shape == ids.shape, let values = file.float32Values else {
                throw RoutingTraceError(description: "\(weightsPath): expected float32 \(ids.shape) (the shape of \(expertsPath)), got \(file.elementType.rawValue) \(file.shape)")
            }
            if let index = values.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
                throw RoutingTraceError(description: "\(weightsPath): value \(index) is \(values[index]); weights must be finite and ≥ 0")
            }
            weights = values
        }
        return RoutingTrace(steps: traceSteps, layers: layers, tokens: tokens, topK: k, experts: values.map { Int32($0) }, weights: weights)
    }

    package init(steps: Int, layers: Int, tokens: Int, topK: Int, experts: [Int32], weights: [Float]?) {
        precondition(experts.count == steps * layers * tokens * topK && (weights == nil || weights!.count == experts.count))
        self.steps = steps
        self.layers = layers
        self.tokens = tokens
        self.topK = topK
        self.experts = experts
        self.weights = weights
    }

    /// The first `k` choices of global tokens `range` at (`step`, `layer`) in a routing plan's
    /// layout (`[r * T + t]`), with their weights (1/k without a weights file).
    package func choices(step: Int, layer: Int, k: Int, tokens range: Range<Int>) -> (choice: [Int], probability: [Float]) {
        precondition(k <= topK)
        let count = range.count
        var choice = [Int](repeating: 0, count: k * count)
        var probability = [Float](repeating: 1 / Float(k), count: k * count)
        for (local, token) in range.enumerated() {
            let base = ((step * layers + layer) * tokens + token) * topK
            for r in 0..<k {
                choice[r * count + local] = Int(experts[base + r])
                if let weights { probability[r * count + local] = weights[base + r] }
            }
        }
        return (choice, probability)
    }
}

/// Why a routing trace cannot be used: one line naming the file and what is wrong.
package struct RoutingTraceError: Error, Equatable, CustomStringConvertible {
    package let description: String
    package init(description: String) { self.description = description }
}
