import MoE

/// The single-process oracle: the same model as the distributed runtime, with every expert in
/// one process and no exchange. The tests compare the distributed output with it.
///
/// It shares the pure building blocks with the distributed model (LayerNorm, `Gate`, the
/// `ExpertKernels` backend its FFNs run on; each has unit tests of its own) but none of the
/// distribution: no placement, packing, exchange or unpacking. Capacity is per source rank, so
/// the reference routes each rank's tokens separately, exactly as that rank would. Expert e's
/// input is every source rank's kept rows for e, source by source, in slot order; this is the
/// order the distributed expert sees, which makes the two outputs bitwise equal (the tests
/// still only require 1e-5 relative). With fewer experts than ranks, each expert-parallel group
/// (`ExpertPlacement`) has its own replica of each expert, fed only by the group's ranks; a
/// residual layer adds the dense MLP's share per `ResidualMixture`; a shared expert's output is
/// added after the routed sum; a dense layer is its FFN alone.
package struct ReferenceModel {
    package let model: ModelConfiguration
    /// Weights with every expert of every layer.
    package let layers: [LayerWeights]
    /// Each layer's gate (the same `Gate` the distributed layer routes with).
    package let gates: [Gate]
    /// Every FFN in the backend's form: `experts[l][e]`, and each layer's dense FFN (a dense
    /// layer's or a residual layer's MLP) and shared expert.
    private let experts: [[any PreparedFFN]]
    private let denseFFNs: [(any PreparedFFN)?]
    private let sharedFFNs: [(any PreparedFFN)?]
    /// The rows' format between ranks: every expert input and output row makes the trip
    /// (encoded, decoded) as in the distributed layer, self-rows included.
    private let exchangePrecision: ExchangePrecision
    private let isa: CPUISA

    /// `drift`, when given, is the drifting workload the gates add to their logits; `kernels`
    /// runs every FFN (`kernels[l]` layer l's; nil: fp32), prepared here once, as in the distributed layer.
    package init(model: ModelConfiguration, layers: [LayerWeights], drift: RouterDrift? = nil, trace: RoutingTrace? = nil,
                 kernels: [any ExpertKernels]? = nil, exchangePrecision: ExchangePrecision = .fp32, isa: CPUISA = .portable) {
        self.exchangePrecision = exchangePrecision
        self.isa = isa
        let kernels = kernels ?? Array(repeating: OpenBLASKernels(), count: model.layers.count)
        precondition(layers.count == model.layers.count)
        precondition(zip(layers, model.layers).allSatisfy { $0.slotExperts == Array(0..<$1.experts) || $1.dense }, "the reference holds every expert")
        self.model = model
        self.layers = layers
        gates = layers.indices.map { Gate(layerIndex: $0, model: model, weights: layers[$0], drift: drift, trace: trace) }
        experts = layers.indices.map { index in
            layers[index].experts.map { kernels[index].prepare($0, form: model.form(.expert, layer: index), dModel: model.dModel) }
        }
        denseFFNs = layers.indices.map { index in
            (layers[index].residual?.dense ?? layers[index].dense).map { kernels[index].prepare($0, form: model.form(.dense, layer: index), dModel: model.dModel) }
        }
        sharedFFNs = layers.indices.map { index in
            layers[index].shared.map { kernels[index].prepare($0, form: model.form(.shared, layer: index), dModel: model.dModel) }
        }
    }

    /// Runs the model on each rank's batch (`batches[r]` is rank r's tokens) and returns each
    /// rank's output hidden states and its routing plan per layer (`plans[layer][rank]`), at
    /// `step` (the drifting workload's clock) under `capacity` (that step's plan).
    /// `afterLayer`, when given, sees every rank's hidden states after each layer.
    package func forward(
        _ batches: [TokenBatch], capacity: CapacityPlan? = nil, step: Int = 0, afterLayer: ((_ layer: Int, _ hidden: [[Float]]) -> Void)? = nil
    ) throws(RoutingError) -> (outputs: [[Float]], plans: [[RoutingPlan]]) {
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
                        if tokens > 0 { weights.norm.apply(input.baseAddress!, rows: tokens, width: d, into: output.baseAddress!) }
                    }
                }
                if layer.dense, let dense = denseFFNs[layerIndex] {
                    let output = dense.forward(normedRows, dModel: d, workspace: workspace)
                    for index in 0..<tokens * d { hidden[rank][index] += output[index] }
                    layerPlans.append(.denseLayer(tokenCount: tokens))
                    continue
                }
                let plan = try gates[layerIndex].route(normalized: normedRows, taskIds: batch.taskIds, step: step,
                                                       capacity: capacity?.layers[layerIndex] ?? .configured, firstToken: batch.firstToken,
                                                       sequenceLength: batch.sequenceLength)
                normed.append(normedRows)
                layerPlans.append(plan)
            }
            if layer.dense {
                plans.append(layerPlans)
                afterLayer?(layerIndex, hidden)
                continue
            }
            let expertOutputs = runExperts(layer: layerIndex, plans: layerPlans, normed: normed, workspace: workspace)
            for (rank, plan) in layerPlans.enumerated() {
                try addOutputs(layer: layerIndex, rank: rank, plan: plan, normed: normed[rank], expertOutputs: expertOutputs,
                               hidden: &hidden[rank], workspace: workspace)
            }
            plans.append(layerPlans)
            afterLayer?(layerIndex, hidden)
        }
        return (hidden, plans)
    }

    /// Each expert's output rows for each source rank, `[expert][rank]`, in slot order. When the
    /// layer has fewer experts than ranks, each expert-parallel group has its own copy of every
    /// expert, fed only by the group's ranks.
    private func runExperts(layer layerIndex: Int, plans layerPlans: [RoutingPlan], normed: [[Float]], workspace: ExpertWorkspace) -> [[[Float]]] {
        let d = model.dModel
        let layer = model.layers[layerIndex]
        let ranks = layerPlans.count
        let placement = ExpertPlacement(experts: layer.experts, worldSize: ranks)
        let slotRoutes = layerPlans.map { $0.slotRoutes() }
        var expertOutputs = [[[Float]]](repeating: [[Float]](repeating: [], count: ranks), count: layer.experts)
        for group in 0..<placement.groupCount {
            let members = placement.ranks(ofGroup: group)
            for expert in 0..<layer.experts {
                var input: [Float] = []
                var rowsPerRank: [Int] = []
                for rank in members {
                    let routes = slotRoutes[rank][expert]
                    rowsPerRank.append(routes.count)
                    for route in routes {
                        let token = route % layerPlans[rank].tokenCount
                        input += normed[rank][token * d..<(token + 1) * d]
                    }
                }
                let rows = rowsPerRank.reduce(0, +)
                let codec = RowCodec(precision: exchangePrecision, width: d)
                codec.roundTrip(&input, isa: isa)
                var output = [Float](repeating: 0, count: rows * d)
                if rows > 0 {
                    input.withUnsafeBufferPointer { x in
                        output.withUnsafeMutableBufferPointer { y in
                            experts[layerIndex][expert].forward(input: x.baseAddress!, rows: rows, output: y.baseAddress!, workspace: workspace)
                        }
                    }
                }
                codec.roundTrip(&output, isa: isa)
                var start = 0
                for (rank, count) in zip(members, rowsPerRank) {
                    expertOutputs[expert][rank] = Array(output[start..<start + count * d])
                    start += count * d
                }
            }
        }
        return expertOutputs
    }

    /// Adds one rank's layer output to its hidden states: the routed sum (a residual layer: its
    /// mixture with the dense MLP) and the shared expert.
    private func addOutputs(
        layer layerIndex: Int, rank: Int, plan: RoutingPlan, normed: [Float], expertOutputs: [[[Float]]], hidden: inout [Float],
        workspace: ExpertWorkspace
    ) throws(RoutingError) {
        let d = model.dModel
        let weights = layers[layerIndex]
        if let residual = weights.residual, let dense = denseFFNs[layerIndex] {
            try addResidualOutputs(rank: rank, plan: plan, normed: normed, residual: residual, dense: dense,
                                   expertOutputs: expertOutputs, hidden: &hidden, workspace: workspace)
            return
        }
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
            for feature in 0..<d { hidden[token * d + feature] += mixture[feature] }
        }
        if let shared = sharedFFNs[layerIndex], plan.tokenCount > 0 {
            var output = [Float](repeating: 0, count: plan.tokenCount * d)
            normed.withUnsafeBufferPointer { x in
                output.withUnsafeMutableBufferPointer { y in
                    SharedExpert.forward(shared, gate: weights.sharedGate, dModel: d,
                                         input: x.baseAddress!, rows: plan.tokenCount, output: y.baseAddress!, workspace: workspace)
                }
            }
            for index in output.indices { hidden[index] += output[index] }
        }
    }

    /// A residual layer's output for one rank's tokens: the dense MLP over all of them, the
    /// coefficients, and `ResidualMixture.add` per token with its (top-1) expert row or none.
    private func addResidualOutputs(
        rank: Int, plan: RoutingPlan, normed: [Float], residual: ResidualWeights, dense denseFFN: any PreparedFFN, expertOutputs: [[[Float]]],
        hidden: inout [Float], workspace: ExpertWorkspace
    ) throws(RoutingError) {
        let d = model.dModel
        let tokens = plan.tokenCount
        guard tokens > 0 else { return }
        precondition(plan.topK == 1)
        var dense = [Float](repeating: 0, count: tokens * d)
        var coefficients: [Float] = []
        normed.withUnsafeBufferPointer { x in
            dense.withUnsafeMutableBufferPointer { y in
                denseFFN.forward(input: x.baseAddress!, rows: tokens, output: y.baseAddress!, workspace: workspace)
            }
            coefficients = ResidualMixture.coefficients(normed: x.baseAddress!, rows: tokens, dModel: d, weights: residual)
        }
        hidden.withUnsafeMutableBufferPointer { output in
            dense.withUnsafeBufferPointer { denseRows in
                for token in 0..<tokens {
                    let expert = plan.expert[token]
                    let pair = (mlp: coefficients[2 * token], expert: coefficients[2 * token + 1])
                    let denseRow = denseRows.baseAddress! + token * d
                    let target = output.baseAddress! + token * d
                    if expert >= 0 {
                        expertOutputs[expert][rank].withUnsafeBufferPointer { rows in
                            ResidualMixture.add(expertRow: rows.baseAddress! + plan.slot[token] * d, combineWeight: plan.gate[token],
                                                denseRow: denseRow, coefficients: pair, count: d, to: target)
                        }
                    } else {
                        ResidualMixture.add(expertRow: nil, combineWeight: 0, denseRow: denseRow, coefficients: pair, count: d, to: target)
                    }
                }
            }
        }
    }
}
