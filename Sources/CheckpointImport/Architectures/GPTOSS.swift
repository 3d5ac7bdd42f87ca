import MoE

/// GPT-OSS (`gpt_oss`): a biased router whose softmax runs over the chosen experts, clamped-GLU
/// experts with biases (`swiglu_alpha`, `swiglu_limit`) of `intermediate_size` in the fused
/// `gate_up_proj` layout; its MXFP4 checkpoints are dequantised on import.
enum GPTOSSFamily: DecoderMoEFamily {
    static let modelTypes = ["gpt_oss"]

    static func reads(_ quantisation: HuggingFaceCheckpoint.Quantisation, modelType: String) -> Bool {
        quantisation == .none || quantisation == .mxfp4
    }

    static func layout(_ shape: DecoderShape) throws(ImportError) -> DecoderLayout {
        let checkpoint = shape.checkpoint
        var layout = DecoderLayout(expertWidth: try shape.width("intermediate_size"))
        layout.rule = GateRule(score: .softmaxOfChosen, selection: .topK, normalization: .none)
        layout.routerBias = true
        layout.activation = .clampedGLU
        layout.ffnBias = true
        layout.glu = ClampedGLU(alpha: Float(try checkpoint.optionalNumber("swiglu_alpha") ?? 1.702),
                                limit: Float(try checkpoint.optionalNumber("swiglu_limit") ?? 7))
        layout.naming = DecoderLayout.Naming(blocks: ["mlp"], router: "router", expertProjections: ("gate_proj", "up_proj", "down_proj"),
                                             fusedIsGptOss: true)
        return layout
    }
}
