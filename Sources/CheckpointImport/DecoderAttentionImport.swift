import FileFormats
import MoE

/// The decoder around the MoE layers — token embeddings, each layer's input norm and attention,
/// the final norm and the LM head — for every decoder family: grouped-query attention with the
/// rotary embedding (Mixtral), Q/K/V biases (Qwen2-MoE), query/key RMSNorms per head (Qwen3-MoE)
/// or over the projection (OLMoE), sinks, output biases, alternating sliding windows and YaRN
/// (GPT-OSS), and multi-head latent attention (DeepSeek-V2/V3). What a checkpoint has is read
/// from its tensors (biases, norms and their widths, sinks), not assumed from its family.
enum DecoderAttentionImport {
    /// Families whose attention is not imported, with what they use instead.
    static let unsupported = ["switch_transformers": "an encoder-decoder (T5) stack"]

    /// The decoder section of `shape`'s model.
    static func configuration(_ shape: DecoderShape) throws(ImportError) -> DecoderConfiguration {
        let checkpoint = shape.checkpoint
        let heads = try checkpoint.integer("num_attention_heads")
        let vocabulary = try checkpoint.integer("vocab_size")
        let maxPositions = try checkpoint.integer("max_position_embeddings")
        let (theta, yarn) = try rotaryScaling(checkpoint)
        var decoder: DecoderConfiguration
        if shape.modelType.hasPrefix("deepseek") {
            let latent = try latentAttention(checkpoint)
            decoder = DecoderConfiguration(vocabulary: vocabulary, heads: heads, kvHeads: heads, headDim: latent.queryKeyDim, ropeTheta: theta ?? 10000,
                                           maxPositions: maxPositions)
            decoder.latent = latent
            // transformers' DeepSeek-V2 rotates complex pairs; V3 interleaved pairs unless rope_interleave is false.
            let interleaved = try checkpoint.optionalBool("rope_interleave") ?? true
            decoder.ropePairs = shape.modelType == "deepseek_v2" || interleaved ? .interleaved : .halves
            // DeepSeek scales the query–key products by YaRN's mscale(factor, mscale_all_dim)² too.
            if let yarn, let allDimensions = try yarnNumber(checkpoint, "mscale_all_dim"), allDimensions != 0 {
                let magnitude = YaRN.magnitudeScale(factor: yarn.factor, mscale: allDimensions)
                decoder.softmaxScale = 1 / Double(latent.queryKeyDim).squareRoot() * magnitude * magnitude
            }
        } else {
            decoder = try groupedQueryAttention(shape, heads: heads, vocabulary: vocabulary, maxPositions: maxPositions, theta: theta)
        }
        decoder.yarn = yarn
        decoder.tiedEmbeddings = try checkpoint.optionalBool("tie_word_embeddings") ?? false
        // eos_token_id is an id, a list of ids or null.
        var endTokens: [Int]
        if case .array? = checkpoint.config.value("eos_token_id") {
            endTokens = try checkpoint.optionalIntegers("eos_token_id") ?? []
        } else {
            endTokens = (try checkpoint.optionalInteger("eos_token_id")).map { [$0] } ?? []
        }
        decoder.endTokens = endTokens.filter { (0..<vocabulary).contains($0) }
        return decoder
    }

    /// Grouped-query attention as the checkpoint's tensors and config describe it.
    private static func groupedQueryAttention(_ shape: DecoderShape, heads: Int, vocabulary: Int, maxPositions: Int, theta: Double?)
        throws(ImportError) -> DecoderConfiguration {
        let checkpoint = shape.checkpoint
        let kvHeads = try checkpoint.optionalInteger("num_key_value_heads") ?? heads
        guard heads >= 1, kvHeads >= 1, heads % kvHeads == 0 else {
            throw checkpoint.unsupported("num_key_value_heads", "must divide num_attention_heads (\(heads)), got \(kvHeads)")
        }
        let headDim = try checkpoint.optionalInteger("head_dim") ?? shape.hidden / heads
        guard headDim >= 2, headDim % 2 == 0 else { throw checkpoint.unsupported("head_dim", "must be even and ≥ 2, got \(headDim)") }
        let useWindow = try checkpoint.optionalBool("use_sliding_window") ?? (shape.modelType == "mixtral" || shape.modelType == "gpt_oss")
        let window = useWindow ? try checkpoint.optionalInteger("sliding_window") : nil
        let firstAttention = "model.layers.0.self_attn"
        let qkNorm: DecoderConfiguration.QKNorm
        if let norm = checkpoint.entry("\(firstAttention).q_norm.weight") {
            qkNorm = norm.shape == [headDim] ? .head : .projection
        } else {
            qkNorm = .none
        }
        var decoder = DecoderConfiguration(vocabulary: vocabulary, heads: heads, kvHeads: kvHeads, headDim: headDim, ropeTheta: theta ?? 10000,
                                           maxPositions: maxPositions, slidingWindow: window, attentionBias: checkpoint.has("\(firstAttention).q_proj.bias"),
                                           qkNorm: qkNorm)
        decoder.outputBias = checkpoint.has("\(firstAttention).o_proj.bias")
        decoder.attentionSinks = checkpoint.has("\(firstAttention).sinks")
        // GPT-OSS names each layer's kind; the window applies to the sliding ones.
        if window != nil, case let .array(kinds)? = checkpoint.config.value("layer_types") {
            var sliding: [Int] = []
            for (layer, kind) in kinds.enumerated() {
                switch kind {
                case .string("sliding_attention"): sliding.append(layer)
                case .string("full_attention"): break
                default: throw checkpoint.unsupported("layer_types[\(layer)]", "expected \"sliding_attention\" or \"full_attention\"")
                }
            }
            decoder.slidingWindowLayers = sliding
        }
        return decoder
    }

    /// DeepSeek's latent attention widths.
    private static func latentAttention(_ checkpoint: HuggingFaceCheckpoint) throws(ImportError) -> LatentAttention {
        if try checkpoint.optionalBool("attention_bias") == true {
            throw checkpoint.unsupported("attention_bias", "biased latent-attention projections are not supported")
        }
        var widths: [Int] = []
        for key in ["kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"] {
            let width = try checkpoint.integer(key)
            guard (1...65_536).contains(width) else { throw checkpoint.unsupported(key, "must be in 1...65536, got \(width)") }
            widths.append(width)
        }
        guard widths[2] % 2 == 0 else { throw checkpoint.unsupported("qk_rope_head_dim", "must be even (the rotary embedding turns pairs), got \(widths[2])") }
        let queryRank = try checkpoint.optionalInteger("q_lora_rank")
        if let queryRank, !(1...65_536).contains(queryRank) { throw checkpoint.unsupported("q_lora_rank", "must be in 1...65536 or null, got \(queryRank)") }
        return LatentAttention(queryRank: queryRank, kvRank: widths[0], nopeDim: widths[1], ropeDim: widths[2], valueDim: widths[3])
    }

    /// The rotary embedding's θ and YaRN scaling, from `rope_parameters` (transformers 5) or
    /// `rope_scaling` and `rope_theta` (earlier configs); other scalings are refused.
    private static func rotaryScaling(_ checkpoint: HuggingFaceCheckpoint) throws(ImportError) -> (theta: Double?, yarn: YaRN?) {
        var theta = try checkpoint.optionalNumber("rope_theta")
        guard let (key, members) = ropeObject(checkpoint) else { return (theta, nil) }
        if let value = members.first(where: { $0.key == "rope_theta" })?.value, case let .number(number) = value { theta = number }
        var kind = "default"
        for name in ["rope_type", "type"] {
            if let value = members.first(where: { $0.key == name })?.value, case let .string(text) = value { kind = text; break }
        }
        switch kind {
        case "default": return (theta, nil)
        case "yarn":
            guard let factor = try yarnNumber(checkpoint, "factor"), factor >= 1 else { throw checkpoint.unsupported("\(key).factor", "YaRN needs a factor ≥ 1") }
            guard let original = try yarnNumber(checkpoint, "original_max_position_embeddings"), original >= 1, original == original.rounded() else {
                throw checkpoint.unsupported("\(key).original_max_position_embeddings", "YaRN needs the original context length")
            }
            var attentionFactor = try yarnNumber(checkpoint, "attention_factor")
            if attentionFactor == nil, let mscale = try yarnNumber(checkpoint, "mscale"), let all = try yarnNumber(checkpoint, "mscale_all_dim"), mscale != 0, all != 0 {
                attentionFactor = YaRN.magnitudeScale(factor: factor, mscale: mscale) / YaRN.magnitudeScale(factor: factor, mscale: all)
            }
            var truncate = true
            if let value = members.first(where: { $0.key == "truncate" })?.value, case let .bool(flag) = value { truncate = flag }
            return (theta, YaRN(factor: factor, originalMaxPositions: Int(original), betaFast: try yarnNumber(checkpoint, "beta_fast") ?? 32,
                                betaSlow: try yarnNumber(checkpoint, "beta_slow") ?? 1, truncate: truncate, attentionFactor: attentionFactor))
        default:
            throw checkpoint.unsupported("\(key).rope_type", "'\(kind)' rotary scaling is not supported (default or yarn)")
        }
    }

    /// The config's rotary-scaling object and its key.
    private static func ropeObject(_ checkpoint: HuggingFaceCheckpoint) -> (key: String, members: [(key: String, value: JSONValue)])? {
        for key in ["rope_parameters", "rope_scaling"] {
            if let value = checkpoint.config.value(key), case let .object(members) = value { return (key, members) }
        }
        return nil
    }

    /// A number of the rotary-scaling object (nil when absent or null).
    private static func yarnNumber(_ checkpoint: HuggingFaceCheckpoint, _ name: String) throws(ImportError) -> Double? {
        guard let (key, members) = ropeObject(checkpoint), let value = members.first(where: { $0.key == name })?.value, value != .null else { return nil }
        guard case let .number(number) = value, number.isFinite else { throw checkpoint.unsupported("\(key).\(name)", "must be a number") }
        return number
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
            if let latent = decoder.latent {
                tensors += try latentTensors(latent, heads: decoder.heads, hidden: hidden, source: "\(source).self_attn", target: target, reader: &reader)
                continue
            }
            for (name, width) in [("q", q), ("k", kv), ("v", kv)] {
                let weight = try reader.read("\(source).self_attn.\(name)_proj.weight", shape: [width, hidden])
                tensors.append(("\(target).w\(name)", [hidden, width], transpose(weight, rows: width, columns: hidden)))
                if decoder.attentionBias {
                    tensors.append(("\(target).b\(name)", [width], try reader.read("\(source).self_attn.\(name)_proj.bias", shape: [width])))
                }
            }
            let output = try reader.read("\(source).self_attn.o_proj.weight", shape: [hidden, q])
            tensors.append(("\(target).wo", [q, hidden], transpose(output, rows: hidden, columns: q)))
            if decoder.outputBias { tensors.append(("\(target).bo", [hidden], try reader.read("\(source).self_attn.o_proj.bias", shape: [hidden]))) }
            if decoder.attentionSinks { tensors.append(("\(target).sinks", [decoder.heads], try reader.read("\(source).self_attn.sinks", shape: [decoder.heads]))) }
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

    /// One layer's latent-attention tensors: projections transposed to `[in, out]`, the
    /// expansion `kv_b_proj` kept as stored (`[H, nope + v, kvRank]`).
    private static func latentTensors(_ latent: LatentAttention, heads: Int, hidden: Int, source: String, target: String, reader: inout TensorReader)
        throws(ImportError) -> [(name: String, shape: [Int], values: [Float])] {
        func projection(_ name: String, _ into: String, rows: Int, columns: Int) throws(ImportError) -> (name: String, shape: [Int], values: [Float]) {
            ("\(target).\(into)", [columns, rows], transpose(try reader.read("\(source).\(name).weight", shape: [rows, columns]), rows: rows, columns: columns))
        }
        let query = heads * latent.queryKeyDim
        var tensors: [(name: String, shape: [Int], values: [Float])]
        if let rank = latent.queryRank {
            tensors = [try projection("q_a_proj", "wq_a", rows: rank, columns: hidden),
                       ("\(target).q_a_norm", [rank], try reader.read("\(source).q_a_layernorm.weight", shape: [rank])),
                       try projection("q_b_proj", "wq_b", rows: query, columns: rank)]
        } else {
            tensors = [try projection("q_proj", "wq", rows: query, columns: hidden)]
        }
        let expansion = [heads, latent.nopeDim + latent.valueDim, latent.kvRank]
        return tensors + [
            try projection("kv_a_proj_with_mqa", "wkv_a", rows: latent.kvRank + latent.ropeDim, columns: hidden),
            ("\(target).kv_a_norm", [latent.kvRank], try reader.read("\(source).kv_a_layernorm.weight", shape: [latent.kvRank])),
            ("\(target).wkv_b", expansion, try reader.read("\(source).kv_b_proj.weight", shape: [heads * (latent.nopeDim + latent.valueDim), latent.kvRank])),
            try projection("o_proj", "wo", rows: hidden, columns: heads * latent.valueDim),
        ]
    }

    static func summary(_ decoder: DecoderConfiguration) -> String {
        let heads = decoder.latent.map {
            "\(decoder.heads) heads of latent attention (KV latent \($0.kvRank) + rotary key \($0.ropeDim) cached per token"
                + ($0.queryRank.map { ", query rank \($0)" } ?? "") + ")"
        } ?? "\(decoder.heads) query heads / \(decoder.kvHeads) key-value heads of \(decoder.headDim)"
        let window = decoder.slidingWindow.map { window in
            ", sliding window \(window)" + (decoder.slidingWindowLayers.map { " on layers \($0.map(String.init).joined(separator: ", "))" } ?? "")
        } ?? ""
        return "decoder: vocabulary \(decoder.vocabulary), \(heads), "
            + "rotary θ \(JSONObjectReader.formatNumber(decoder.ropeTheta))" + (decoder.ropePairs == .interleaved ? " (interleaved pairs)" : "")
            + (decoder.yarn.map { " with YaRN × \(JSONObjectReader.formatNumber($0.factor)) of \($0.originalMaxPositions)" } ?? "")
            + ", context \(decoder.maxPositions)"
            + window + (decoder.attentionBias ? ", Q/K/V biases" : "") + (decoder.outputBias ? ", output bias" : "")
            + (decoder.attentionSinks ? ", attention sinks" : "")
            + (decoder.qkNorm == .none ? "" : ", query/key RMSNorm (\(decoder.qkNorm.rawValue))")
            + (decoder.tiedEmbeddings ? ", LM head tied to the embedding" : "")
            + (decoder.endTokens.isEmpty ? "" : ", end tokens \(decoder.endTokens.map(String.init).joined(separator: ", "))")
    }
}
