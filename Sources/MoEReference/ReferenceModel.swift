import MoE

/// The single-process oracle: the same model as the distributed runtime, with every expert in
/// one process and no exchange. The tests compare the distributed output with it.
///
/// It shares the pure building blocks with the distributed model (LayerNorm, the gate GEMM,
/// `Router`, `ExpertFFN`; each has rule-by-rule unit tests of its own) but none of the
/// distribution: no placement, packing, exchange or unpacking. Capacity is per source rank, so
/// the reference routes each rank's tokens separately, exactly as that rank would. Expert e's
/// input is every source rank's kept rows for e, source by source, in slot order; this is the
/// order the distributed expert sees, which makes the two outputs bitwise equal (the tests
/// still only require 1e-5 relative).
public struct ReferenceModel {
    public let model: ModelConfiguration
    /// Weights with every expert of every layer.
    public let layers: [LayerWeights]

    public init(model: ModelConfiguration, layers: [LayerWeights]) {
        precondition(layers.count == model.layers.count)
        precondition(zip(layers, model.layers).allSatisfy { $0.heldExperts == 0..<$1.experts }, "the reference holds every expert")
        self.model = model
        self.layers = layers
    }

    /// Runs the model on each rank's batch (`batches[r]` is rank r's tokens) and returns each
    /// rank's output hidden states and its routing plan per layer (`plans[layer][rank]`).
    public func forward(_ batches: [TokenBatch]) throws(RoutingError) -> (outputs: [[Float]], plans: [[RoutingPlan]]) {
        let d = model.dModel
        var hidden = batches.map(\.hidden)
        var plans: [[RoutingPlan]] = []
        let workspace = ExpertWorkspace()
        for (layerIndex, layer) in model.layers.enumerated() {
            let weights = layers[layerIndex]
            var normed: [[Float]] = []
            var layerPlans: [RoutingPlan] = []
            for (rank, batch) in batches.enumerated() {
                let tokens = batch.tokenCount
                var normedRows = [Float](repeating: 0, count: tokens * d)
                hidden[rank].withUnsafeBufferPointer { input in
                    normedRows.withUnsafeMutableBufferPointer { output in
                        weights.norm.apply(input.baseAddress!, rows: tokens, into: output.baseAddress!)
                    }
                }
                let plan: RoutingPlan
                if !model.taskExperts.isEmpty {
                    plan = try Router.route(taskIds: batch.taskIds, taskExperts: model.taskExperts, layer: layer)
                } else {
                    var logits = [Float](repeating: 0, count: tokens * layer.experts)
                    if tokens > 0 {
                        normedRows.withUnsafeBufferPointer { x in
                            weights.gate.withUnsafeBufferPointer { gate in
                                logits.withUnsafeMutableBufferPointer { out in
                                    BLAS.multiply(rows: tokens, columns: layer.experts, inner: d, x.baseAddress!, gate.baseAddress!, into: out.baseAddress!)
                                }
                            }
                        }
                    }
                    plan = try logits.withUnsafeBufferPointer { (buffer) throws(RoutingError) in
                        try Router.route(logits: buffer, tokenCount: tokens, layer: layer)
                    }
                }
                normed.append(normedRows)
                layerPlans.append(plan)
            }
            // Each expert's output rows, indexed by (rank, slot).
            var expertOutputs: [[[Float]]] = Array(repeating: [], count: layer.experts)  // [expert][rank] -> rows
            for expert in 0..<layer.experts {
                var input: [Float] = []
                var rowsPerRank: [Int] = []
                for (rank, plan) in layerPlans.enumerated() {
                    let routes = plan.slotRoutes()[expert]
                    rowsPerRank.append(routes.count)
                    for route in routes {
                        let token = route % plan.tokenCount
                        input += normed[rank][token * d..<(token + 1) * d]
                    }
                }
                let rows = rowsPerRank.reduce(0, +)
                var output = [Float](repeating: 0, count: rows * d)
                input.withUnsafeBufferPointer { x in
                    output.withUnsafeMutableBufferPointer { y in
                        if rows > 0 {
                            ExpertFFN.forward(weights.expert(expert), activation: model.activation, dModel: d, dFF: model.dFF,
                                              input: x.baseAddress!, rows: rows, output: y.baseAddress!, workspace: workspace)
                        }
                    }
                }
                var start = 0
                expertOutputs[expert] = rowsPerRank.map { count in
                    defer { start += count * d }
                    return Array(output[start..<start + count * d])
                }
            }
            for (rank, plan) in layerPlans.enumerated() {
                for token in 0..<plan.tokenCount {
                    var mixture = [Float](repeating: 0, count: d)
                    for r in 0..<plan.topK {
                        let route = r * plan.tokenCount + token
                        let expert = plan.expert[route]
                        guard expert >= 0 else { continue }
                        let gate = plan.gate[route]
                        let rows = expertOutputs[expert][rank]
                        let base = plan.slot[route] * d
                        for feature in 0..<d { mixture[feature] += gate * rows[base + feature] }
                    }
                    for feature in 0..<d { hidden[rank][token * d + feature] += mixture[feature] }
                }
            }
            plans.append(layerPlans)
        }
        return (hidden, plans)
    }
}
