/// One layer's weights on one rank with every FFN in its backend's form: prepared once per run
/// (`ExpertKernels.prepare`), shared by every session of the run (each exchange algorithm), and
/// without the fp32 FFN arrays, so a bf16 or int8 run holds about ½ or ¼ of fp32's FFN bytes.
package struct PreparedLayerWeights: Sendable {
    /// The layer's other weights (norm, gate and its biases, the shared expert's gate, a residual
    /// layer's coefficient); every FFN's arrays are emptied (their forms are below), while
    /// `shared`, `dense` and `residual` stay set exactly when the layer has them.
    package let rest: LayerWeights
    /// The backend every FFN below runs on.
    package let kernels: any ExpertKernels
    /// `experts[i]` is expert `rest.slotExperts[i]`.
    package let experts: [any PreparedFFN]
    /// A dense layer's FFN or a residual layer's MLP, nil otherwise.
    package let dense: (any PreparedFFN)?
    /// The shared expert, nil when the layer has none.
    package let shared: (any PreparedFFN)?
    /// The routed experts in fp32 by logical expert, when asked to compare (`compareWithFP32`)
    /// and `kernels` is not fp32; else empty. They keep the fp32 arrays.
    package let fp32Experts: [Int: any PreparedFFN]

    /// Prepares layer `layerIndex`'s FFNs of `weights` with `kernels`; with `compareWithFP32`
    /// (and a lower precision) its routed experts in fp32 too.
    package init(_ weights: LayerWeights, model: ModelConfiguration, layerIndex: Int, kernels: any ExpertKernels, compareWithFP32: Bool = false) {
        let dModel = model.dModel
        let form = model.form(.expert, layer: layerIndex)
        self.kernels = kernels
        experts = weights.experts.map { kernels.prepare($0, form: form, dModel: dModel) }
        var fp32Experts: [Int: any PreparedFFN] = [:]
        if compareWithFP32, kernels.precision != .fp32 {
            for (slot, expert) in weights.slotExperts.enumerated() where fp32Experts[expert] == nil {
                fp32Experts[expert] = OpenBLASKernels().prepare(weights.experts[slot], form: form, dModel: dModel)
            }
        }
        self.fp32Experts = fp32Experts
        dense = (weights.residual?.dense ?? weights.dense).map { kernels.prepare($0, form: model.form(.dense, layer: layerIndex), dModel: dModel) }
        shared = weights.shared.map { kernels.prepare($0, form: model.form(.shared, layer: layerIndex), dModel: dModel) }
        var rest = weights
        rest.experts = []
        rest.shared = rest.shared.map { _ in .empty }
        rest.dense = rest.dense.map { _ in .empty }
        rest.residual?.dense = .empty
        self.rest = rest
    }

    /// Every layer of `weights`, layer l with `kernels[l]`.
    package static func prepare(_ weights: [LayerWeights], model: ModelConfiguration, kernels: [any ExpertKernels],
                                compareWithFP32: Bool = false) -> [PreparedLayerWeights] {
        precondition(weights.count == kernels.count)
        return weights.indices.map { PreparedLayerWeights(weights[$0], model: model, layerIndex: $0, kernels: kernels[$0], compareWithFP32: compareWithFP32) }
    }

    /// Bytes of FFN weights held, in the backend's form.
    package var bytesHeld: Int { (experts + [dense, shared].compactMap { $0 }).reduce(0) { $0 + $1.bytesHeld } }
}

extension ExpertWeights {
    /// No arrays: an FFN whose weights live elsewhere (`PreparedLayerWeights.rest`).
    static let empty = ExpertWeights(w1: [], b1: [], w2: [], b2: [], w3: [])
}
