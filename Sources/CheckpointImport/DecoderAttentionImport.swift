import FileFormats
import MoE

/// The decoder around the MoE layers — token embeddings, each layer's input norm and attention,
/// the final norm and the LM head — for the families whose attention SwiftMoE runs: grouped-query
/// attention with the default rotary embedding (Mixtral), Q/K/V biases (Qwen2-MoE) and query/key
/// RMSNorms per head (Qwen3-MoE) or over the projection (OLMoE). What a checkpoint has is read
/// from its tensors (biases, norms and their widths), not assumed from its family.
enum DecoderAttentionImport {
    /// Families whose attention is not this one, with what they use instead.
    static let unsupported = [
        "deepseek_v2": "multi-head latent attention", "deepseek_v3": "multi-head latent attention",
        "gpt_oss": "attention sinks, sliding windows on alternate layers and YaRN-scaled rotary embeddings",
        "switch_transformers": "an encoder-decoder (T5) stack",
    ]

    /// The decoder section of `shape`'s model.
    static func configuration(_ shape: DecoderShape) throws(ImportError) -> DecoderConfiguration {
        let checkpoint = shape.checkpoint
        let heads = try checkpoint.integer("num_attention_heads")
        let kvHeads = try checkpoint.optionalInteger("num_key_value_heads") ?? heads
        guard heads >= 1, kvHeads >= 1, heads % kvHeads == 0 else {
            throw checkpoint.unsupported("num_key_value_heads", "must divide num_attention_heads (\(heads)), got \(kvHeads)")
        }
        let headDim = try checkpoint.optionalInteger("head_dim") ?? shape.hidden / heads
        guard headDim >= 2, headDim % 2 == 0 else { throw checkpoint.unsupported("head_dim", "must be even and ≥ 2, got \(headDim)") }
        var theta = try checkpoint.optionalNumber("rope_theta")
        if let rope = checkpoint.config.value("rope_parameters"), case let .object(members) = rope {
            for (key, value) in members {
                if key == "rope_theta", case let .number(number) = value { theta = number }
                if key == "rope_type", case let .string(kind) = value, kind != "default" {
                    throw checkpoint.unsupported("rope_parameters.rope_type", "'\(kind)' rotary scaling is not supported (only the default rotary embedding)")
                }
            }
        }
        if let scaling = checkpoint.config.value("rope_scaling"), scaling != .null {
            throw checkpoint.unsupported("rope_scaling", "scaled rotary embeddings are not supported (only the default rotary embedding)")
        }
        let vocabulary = try checkpoint.integer("vocab_size")
        let maxPositions = try checkpoint.integer("max_position_embeddings")
        let useWindow = try checkpoint.optionalBool("use_sliding_window") ?? (shape.modelType == "mixtral")
        let window = useWindow ? try checkpoint.optionalInteger("sliding_window") : nil
        let firstAttention = "model.layers.0.self_attn"
        let qkNorm: DecoderConfiguration.QKNorm
        if let norm = checkpoint.entry("\(firstAttention).q_norm.weight") {
            qkNorm = norm.shape == [headDim] ? .head : .projection
        } else {
            qkNorm = .none
        }
        if checkpoint.has("\(firstAttention).o_proj.bias") {
            throw ImportError("\(checkpoint.directory): tensor '\(firstAttention).o_proj.bias': an output-projection bias is not supported")
        }
        // eos_token_id is an id, a list of ids or null.
        var endTokens: [Int]
        if case .array? = checkpoint.config.value("eos_token_id") {
            endTokens = try checkpoint.optionalIntegers("eos_token_id") ?? []
        } else {
            endTokens = (try checkpoint.optionalInteger("eos_token_id")).map { [$0] } ?? []
        }
        endTokens = endTokens.filter { (0..<vocabulary).contains($0) }
        return DecoderConfiguration(vocabulary: vocabulary, heads: heads, kvHeads: kvHeads, headDim: headDim, ropeTheta: theta ?? 10000,
                                    maxPositions: maxPositions, slidingWindow: window, attentionBias: checkpoint.has("\(firstAttention).q_proj.bias"),
                                    qkNorm: qkNorm, tiedEmbeddings: try checkpoint.optionalBool("tie_word_embeddings") ?? false, endTokens: endTokens)
    }

    /// The decoder's tensors in SwiftMoE's layout (projections `[in, out]`).
    static func tensors(_ decoder: DecoderConfiguration, _ shape: DecoderShape, reader: inout TensorReader)
        throws(ImportError) -> [(name: String, shape: [Int], values: [Float])] {
        let hidden = shape.hidden
        let (q, kv) = (decoder.heads * decoder.headDim, decoder.kvHeads * decoder.headDim)
        var tensors: [(name: String, shape: [Int], values: [Float])] = [
            ("decoder.embed_tokens", [decoder.vocabulary, hidden], try reader.read("model.embed_tokens.weight", shape: [decoder.vocabulary, hidden])),
            ("decoder.norm", [hidden], try reader.read("model.norm.weight", shape: [hidden])),
        ]
        if !decoder.tiedEmbeddings {
            tensors.append(("decoder.lm_head", [decoder.vocabulary, hidden], try reader.read("lm_head.weight", shape: [decoder.vocabulary, hidden])))
        }
        for layer in 0..<shape.layerCount {
            let source = "model.layers.\(layer)", target = "decoder.layers.\(layer)"
            tensors.append(("\(target).norm", [hidden], try reader.read("\(source).input_layernorm.weight", shape: [hidden])))
            for (name, width) in [("q", q), ("k", kv), ("v", kv)] {
                let weight = try reader.read("\(source).self_attn.\(name)_proj.weight", shape: [width, hidden])
                tensors.append(("\(target).w\(name)", [hidden, width], transpose(weight, rows: width, columns: hidden)))
                if decoder.attentionBias {
                    tensors.append(("\(target).b\(name)", [width], try reader.read("\(source).self_attn.\(name)_proj.bias", shape: [width])))
                }
            }
            let output = try reader.read("\(source).self_attn.o_proj.weight", shape: [hidden, q])
            tensors.append(("\(target).wo", [q, hidden], transpose(output, rows: hidden, columns: q)))
            switch decoder.qkNorm {
            case .none: break
            case .head:
                tensors.append(("\(target).q_norm", [decoder.headDim], try reader.read("\(source).self_attn.q_norm.weight", shape: [decoder.headDim])))
                tensors.append(("\(target).k_norm", [decoder.headDim], try reader.read("\(source).self_attn.k_norm.weight", shape: [decoder.headDim])))
            case .projection:
                tensors.append(("\(target).q_norm", [q], try reader.read("\(source).self_attn.q_norm.weight", shape: [q])))
                tensors.append(("\(target).k_norm", [kv], try reader.read("\(source).self_attn.k_norm.weight", shape: [kv])))
            }
        }
        return tensors
    }

    static func summary(_ decoder: DecoderConfiguration) -> String {
        "decoder: vocabulary \(decoder.vocabulary), \(decoder.heads) query heads / \(decoder.kvHeads) key-value heads of \(decoder.headDim), "
            + "rotary θ \(JSONObjectReader.formatNumber(decoder.ropeTheta)), context \(decoder.maxPositions)"
            + (decoder.slidingWindow.map { ", sliding window \($0)" } ?? "") + (decoder.attentionBias ? ", Q/K/V biases" : "")
            + (decoder.qkNorm == .none ? "" : ", query/key RMSNorm (\(decoder.qkNorm.rawValue))")
            + (decoder.tiedEmbeddings ? ", LM head tied to the embedding" : "")
            + (decoder.endTokens.isEmpty ? "" : ", end tokens \(decoder.endTokens.map(String.init).joined(separator: ", "))")
    }
}
