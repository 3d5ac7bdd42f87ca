import MoE

/// Qwen2-MoE and Qwen3-MoE (`qwen2_moe`, `qwen3_moe`): softmax router, renormalised only with
/// `norm_topk_prob`; SwiGLU experts of `moe_intermediate_size`; dense layers where
/// `mlp_only_layers` lists them or `(l + 1) mod decoder_sparse_step ≠ 0`; Qwen2-MoE's
/// sigmoid-gated shared expert of `shared_expert_intermediate_size`.
enum QwenMoEFamily: DecoderMoEFamily {
    static let modelTypes = ["qwen2_moe", "qwen3_moe"]

    static func layout(_ shape: DecoderShape) throws(ImportError) -> DecoderLayout {
        try shape.requireSiLU()
        let checkpoint = shape.checkpoint
        var layout = DecoderLayout(expertWidth: try shape.width("moe_intermediate_size"))
        layout.rule.normalization = shape.normTopK == true ? .chosen : .none
        let mlpOnly = Set(try checkpoint.optionalIntegers("mlp_only_layers") ?? [])
        let step = try checkpoint.optionalInteger("decoder_sparse_step") ?? 1
        guard step >= 1 else { throw checkpoint.unsupported("decoder_sparse_step", "must be ≥ 1, got \(step)") }
        layout.isDense = { layer in mlpOnly.contains(layer) || (layer + 1) % step != 0 }
        if (0..<shape.layerCount).contains(where: layout.isDense) { layout.denseWidth = try shape.width("intermediate_size") }
        if shape.modelType == "qwen2_moe", let sharedWidth = try checkpoint.optionalInteger("shared_expert_intermediate_size"), sharedWidth > 0 {
            layout.shared = (try shape.width("shared_expert_intermediate_size", sharedWidth), true)
            layout.naming.shared = "shared_expert"
        }
        return layout
    }
}
