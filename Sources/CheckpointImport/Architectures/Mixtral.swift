import MoE

/// Mixtral (`mixtral`): softmax router, top-k renormalised, SwiGLU experts of
/// `intermediate_size` named `w1`/`w3`/`w2` (gate/up/down) in `block_sparse_moe`; no dense
/// layers, no shared expert.
enum MixtralFamily: DecoderMoEFamily {
    static let modelTypes = ["mixtral"]

    static func layout(_ shape: DecoderShape) throws(ImportError) -> DecoderLayout {
        try shape.requireSiLU()
        var layout = DecoderLayout(expertWidth: try shape.width("intermediate_size"))
        layout.naming = DecoderLayout.Naming(blocks: ["block_sparse_moe", "mlp"], router: "gate", expertProjections: ("w1", "w3", "w2"))
        return layout
    }
}
