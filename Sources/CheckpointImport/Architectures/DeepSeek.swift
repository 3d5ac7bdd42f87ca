import MoE

/// DeepSeek-V2 and -V3 (`deepseek_v2`, `deepseek_v3`): SwiGLU experts of
/// `moe_intermediate_size`, the first `first_k_dense_replace` layers dense, shared experts of
/// `moe_intermediate_size × n_shared_experts` (weight 1), `routed_scaling_factor`, groups.
/// V2: softmax scores, greedy or group-limited (group score max), no renormalisation. V3:
/// sigmoid scores, choice by score + `e_score_correction_bias`, group score the sum of the top
/// 2, renormalised with `norm_topk_prob`; its FP8 checkpoints are dequantised on import.
enum DeepSeekFamily: DecoderMoEFamily {
    static let modelTypes = ["deepseek_v2", "deepseek_v3"]

    static func reads(_ quantisation: HuggingFaceCheckpoint.Quantisation, modelType: String) -> Bool {
        if case .fp8 = quantisation { return modelType == "deepseek_v3" }
        return quantisation == .none
    }

    static func layout(_ shape: DecoderShape) throws(ImportError) -> DecoderLayout {
        try shape.requireSiLU()
        let checkpoint = shape.checkpoint
        var layout = DecoderLayout(expertWidth: try shape.width("moe_intermediate_size"))
        let firstDense = try checkpoint.optionalInteger("first_k_dense_replace") ?? 0
        layout.isDense = { $0 < firstDense }
        if firstDense > 0 { layout.denseWidth = try shape.width("intermediate_size") }
        if try checkpoint.optionalBool("mlp_bias") == true { throw checkpoint.unsupported("mlp_bias", "biased DeepSeek MLPs are not supported") }
        let sharedCount = try checkpoint.optionalInteger("n_shared_experts") ?? 0
        if sharedCount > 0 {
            layout.shared = (try shape.width("moe_intermediate_size × n_shared_experts", layout.expertWidth * sharedCount), false)
            layout.naming.shared = "shared_experts"
        }
        let scale = try checkpoint.optionalNumber("routed_scaling_factor") ?? 1
        guard scale > 0, scale <= 1e6 else { throw checkpoint.unsupported("routed_scaling_factor", "must be in (0, 1e6], got \(scale)") }
        layout.rule.scalingFactor = Float(scale)
        let (groups, topGroups) = try groupLimits(shape)
        if shape.modelType == "deepseek_v2" {
            // transformers' DeepseekV2TopkRouter: softmax scores, greedy or group-limited
            // (group score = max), weights = scores × routed_scaling_factor, no renormalisation.
            layout.rule.normalization = .none
            let method = try checkpoint.optionalString("topk_method") ?? "greedy"
            switch method {
            case "greedy": layout.rule.selection = .topK
            case "group_limited_greedy": layout.rule.selection = .groupLimited(groups: groups, topGroups: topGroups, score: .max)
            default: throw checkpoint.unsupported("topk_method", "'\(method)' is not supported (greedy, group_limited_greedy)")
            }
            if shape.normTopK == true { layout.notes.append("norm_topk_prob (transformers' DeepSeek-V2 router does not apply it)") }
        } else {
            // transformers' DeepseekV3TopkRouter: sigmoid scores; choice by score +
            // e_score_correction_bias, group score = sum of the top 2; weights = scores,
            // renormalised if norm_topk_prob, × routed_scaling_factor.
            layout.rule.score = .sigmoid
            layout.rule.selection = .groupLimited(groups: groups, topGroups: topGroups, score: .topTwoSum)
            layout.rule.normalization = shape.normTopK == true ? .chosen : .none
            layout.selectionBias = true
        }
        return layout
    }

    /// `n_group` and `topk_group`, checked against the experts and top-k.
    private static func groupLimits(_ shape: DecoderShape) throws(ImportError) -> (groups: Int, topGroups: Int) {
        let checkpoint = shape.checkpoint
        let groups = try checkpoint.optionalInteger("n_group") ?? 1
        let topGroups = try checkpoint.optionalInteger("topk_group") ?? groups
        guard groups >= 1, shape.experts % groups == 0 else {
            throw checkpoint.unsupported("n_group", "must divide the \(shape.experts) routed experts into equal groups, got \(groups)")
        }
        guard (1...groups).contains(topGroups), shape.topK <= topGroups * (shape.experts / groups) else {
            throw checkpoint.unsupported("topk_group", "must be in 1...\(groups) and leave at least top_k = \(shape.topK) experts, got \(topGroups)")
        }
        return (groups, topGroups)
    }
}
