import MoE

/// OLMoE (`olmoe`): softmax router, renormalised only with `norm_topk_prob`; SwiGLU experts of
/// `intermediate_size`; no dense layers, no shared expert.
enum OLMoEFamily: DecoderMoEFamily {
    static let modelTypes = ["olmoe"]

    static func layout(_ shape: DecoderShape) throws(ImportError) -> DecoderLayout {
        try shape.requireSiLU()
        var layout = DecoderLayout(expertWidth: try shape.width("intermediate_size"))
        layout.rule.normalization = shape.normTopK == true ? .chosen : .none
        return layout
    }
}
