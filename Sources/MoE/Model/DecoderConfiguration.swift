import FileFormats

/// What a decoder needs beyond the MoE layers (`"decoder"` in the model file, written by
/// `moe import-hf`): the vocabulary, the attention's heads and rotary embedding, and the tokens
/// that end a sequence. Every layer of the model is a decoder layer: attention (data-parallel:
/// each rank its own sequences), then the layer's MoE (or dense) FFN as today. Tensor names and
/// shapes: docs/MODEL.md.
package struct DecoderConfiguration: Equatable, Sendable {
    package var vocabulary: Int
    /// Query heads H and key/value heads (H for multi-head, fewer for grouped-query attention;
    /// query head h reads key/value head h / (H / kvHeads)).
    package var heads: Int
    package var kvHeads: Int
    /// Width of one head D (Q and K and V).
    package var headDim: Int
    /// The rotary embedding's base θ (inverse frequencies θ^(−2i/D), halves rotated together:
    /// transformers' `rotate_half` layout).
    package var ropeTheta: Double
    /// Longest sequence (prompt + generated tokens) the model takes.
    package var maxPositions: Int
    /// Keys a token attends to at most (the latest ones), nil: every earlier token.
    package var slidingWindow: Int?
    /// Q, K and V projections carry biases (Qwen2-MoE).
    package var attentionBias: Bool
    /// RMSNorm on queries and keys before the rotary embedding: per head (Qwen3-MoE) or over the
    /// whole projection (OLMoE).
    package var qkNorm: QKNorm
    /// The LM head is the token embedding (no `decoder.lm_head` tensor).
    package var tiedEmbeddings: Bool
    /// Token ids that end a sequence (empty: none; only `--max-new-tokens` ends it).
    package var endTokens: [Int]
    /// How the rotary embedding pairs elements.
    package var ropePairs: RopePairs = .halves
    /// YaRN-scaled rotary frequencies (GPT-OSS, DeepSeek-V3), nil: the plain θ^(−2i/D).
    package var yarn: YaRN?
    /// The layers the sliding window applies to (GPT-OSS alternates), nil: every layer.
    package var slidingWindowLayers: [Int]?
    /// Each query head has a learned sink logit that joins its softmax and takes weight from
    /// the keys without adding a value (GPT-OSS; tensor `sinks [H]`).
    package var attentionSinks = false
    /// The output projection carries a bias (GPT-OSS; tensor `bo [d]`).
    package var outputBias = false
    /// The query–key products' scale, nil: 1/√(query/key head width).
    package var softmaxScale: Double?
    /// Multi-head latent attention's widths (DeepSeek-V2/V3), nil: grouped-query attention.
    package var latent: LatentAttention?

    package enum QKNorm: String, CaseIterable, Sendable {
        case none, head, projection
    }

    package init(vocabulary: Int, heads: Int, kvHeads: Int, headDim: Int, ropeTheta: Double = 10000, maxPositions: Int,
                 slidingWindow: Int? = nil, attentionBias: Bool = false, qkNorm: QKNorm = .none, tiedEmbeddings: Bool = false,
                 endTokens: [Int] = []) {
        (self.vocabulary, self.heads, self.kvHeads, self.headDim) = (vocabulary, heads, kvHeads, headDim)
        (self.ropeTheta, self.maxPositions, self.slidingWindow) = (ropeTheta, maxPositions, slidingWindow)
        (self.attentionBias, self.qkNorm, self.tiedEmbeddings, self.endTokens) = (attentionBias, qkNorm, tiedEmbeddings, endTokens)
    }

    /// The sliding window layer `layer` uses, nil: it attends to every earlier token.
    package func window(layer: Int) -> Int? {
        guard let slidingWindow else { return nil }
        return slidingWindowLayers.map { $0.contains(layer) ? slidingWindow : nil } ?? slidingWindow
    }

    /// The width the rotary embedding turns in each head: the head (grouped-query attention) or
    /// its rotary part (latent attention).
    package var rotaryDim: Int { latent?.ropeDim ?? headDim }

    /// The query–key products' scale.
    package var queryKeyScale: Float { Float(softmaxScale ?? 1 / Double(latent?.queryKeyDim ?? headDim).squareRoot()) }

    /// Values the KV cache holds per token and layer, as keys and as values: K and V of every
    /// key/value head, or (latent attention) one row of the latent and the rotated shared key.
    package var cacheWidths: (key: Int, value: Int) {
        if let latent { return (latent.kvRank + latent.ropeDim, 0) }
        return (kvHeads * headDim, kvHeads * headDim)
    }

    /// Largest vocabulary and position count a model file may state.
    package static let vocabularyLimit = 4_000_000
    package static let positionLimit = 16_777_216

    /// The tensors of the decoder (besides the layers' MoE tensors), with their shapes, for a
    /// model of width `dModel` and `layers` layers: what `import-hf` writes and `moe generate` reads.
    package func tensorShapes(dModel: Int, layers: Int) -> [(name: String, shape: [Int])] {
        var shapes: [(String, [Int])] = [("decoder.embed_tokens", [vocabulary, dModel]), ("decoder.norm", [dModel])]
        if !tiedEmbeddings { shapes.append(("decoder.lm_head", [vocabulary, dModel])) }
        let q = heads * headDim, kv = kvHeads * headDim
        for layer in 0..<layers {
            let prefix = "decoder.layers.\(layer)"
            shapes.append(("\(prefix).norm", [dModel]))
            if let latent {
                shapes += latentShapes(latent, prefix: prefix, dModel: dModel)
                continue
            }
            shapes += [("\(prefix).wq", [dModel, q]), ("\(prefix).wk", [dModel, kv]), ("\(prefix).wv", [dModel, kv]), ("\(prefix).wo", [q, dModel])]
            if attentionBias { shapes += [("\(prefix).bq", [q]), ("\(prefix).bk", [kv]), ("\(prefix).bv", [kv])] }
            if outputBias { shapes.append(("\(prefix).bo", [dModel])) }
            if attentionSinks { shapes.append(("\(prefix).sinks", [heads])) }
            switch qkNorm {
            case .none: break
            case .head: shapes += [("\(prefix).q_norm", [headDim]), ("\(prefix).k_norm", [headDim])]
            case .projection: shapes += [("\(prefix).q_norm", [q]), ("\(prefix).k_norm", [kv])]
            }
        }
        return shapes
    }

    /// One layer's latent-attention tensors: the query (`wq`, or `wq_a`, `q_a_norm`, `wq_b`),
    /// the compression `wkv_a [d, kvRank + ropeDim]` and its norm, the expansion `wkv_b [H,
    /// nopeDim + valueDim, kvRank]` (as the checkpoint stores it, per head: key rows, then value
    /// rows), and `wo [H · valueDim, d]`.
    private func latentShapes(_ latent: LatentAttention, prefix: String, dModel: Int) -> [(String, [Int])] {
        let query = heads * latent.queryKeyDim
        var shapes: [(String, [Int])]
        if let rank = latent.queryRank {
            shapes = [("\(prefix).wq_a", [dModel, rank]), ("\(prefix).q_a_norm", [rank]), ("\(prefix).wq_b", [rank, query])]
        } else {
            shapes = [("\(prefix).wq", [dModel, query])]
        }
        return shapes + [("\(prefix).wkv_a", [dModel, latent.kvRank + latent.ropeDim]), ("\(prefix).kv_a_norm", [latent.kvRank]),
                         ("\(prefix).wkv_b", [heads, latent.nopeDim + latent.valueDim, latent.kvRank]), ("\(prefix).wo", [heads * latent.valueDim, dModel])]
    }
}

/// A model file's `"decoder"` object as read; one stored field per key of `fields`.
struct DecoderDraft {
    var vocabulary: Int?
    var heads: Int?
    var kvHeads: Int?
    var headDim: Int?
    var ropeTheta = 10000.0
    var maxPositions: Int?
    var slidingWindow: Int?
    var attentionBias = false
    var qkNorm = DecoderConfiguration.QKNorm.none
    var tiedEmbeddings = false
    var endTokens: [Int] = []
    var ropePairs = RopePairs.halves
    var yarn: YaRN?
    var slidingWindowLayers: [Int]?
    var attentionSinks = false
    var outputBias = false
    /// 0: the default scale.
    var softmaxScale = 0.0
    var attention = AttentionKind.grouped
    var queryRank: Int?
    var kvRank: Int?
    var nopeDim: Int?
    var ropeDim: Int?
    var valueDim: Int?

    enum AttentionKind: String, CaseIterable, Sendable {
        case grouped, latent
    }

    init() {}

    init(_ decoder: DecoderConfiguration) {
        (vocabulary, heads, kvHeads, headDim) = (decoder.vocabulary, decoder.heads, decoder.kvHeads, decoder.headDim)
        (ropeTheta, maxPositions, slidingWindow) = (decoder.ropeTheta, decoder.maxPositions, decoder.slidingWindow)
        (attentionBias, qkNorm, tiedEmbeddings, endTokens) = (decoder.attentionBias, decoder.qkNorm, decoder.tiedEmbeddings, decoder.endTokens)
        (ropePairs, yarn, slidingWindowLayers) = (decoder.ropePairs, decoder.yarn, decoder.slidingWindowLayers)
        (attentionSinks, outputBias, softmaxScale) = (decoder.attentionSinks, decoder.outputBias, decoder.softmaxScale ?? 0)
        if let latent = decoder.latent {
            (attention, headDim) = (.latent, nil)
            (queryRank, kvRank, nopeDim, ropeDim, valueDim) = (latent.queryRank, latent.kvRank, latent.nopeDim, latent.ropeDim, latent.valueDim)
        }
    }

    /// An array of integers, each checked by `check` (nil: accepted).
    static func integers(_ json: JSONValue, path: String, _ check: (Int) -> String?) throws(JSONFieldError) -> [Int] {
        guard case let .array(items) = json else { throw JSONFieldError(path: path, problem: "expected an array of integers") }
        return try items.enumerated().map { (index, item) throws(JSONFieldError) in
            let value = try JSONObjectReader.integer(item, path: "\(path)[\(index)]")
            if let problem = check(value) { throw JSONFieldError(path: "\(path)[\(index)]", problem: problem) }
            return value
        }
    }

    static let fields: [ModelFileField<DecoderDraft>] = [
        .optionalInteger("vocab_size", \.vocabulary, in: 1...DecoderConfiguration.vocabularyLimit, absent: "required", "tokens in the vocabulary"),
        .optionalInteger("heads", \.heads, in: 1...65_536, absent: "required", "query heads H"),
        .optionalInteger("kv_heads", \.kvHeads, in: 1...65_536, absent: "heads", "key/value heads (divides heads; fewer: grouped-query attention)"),
        .optionalInteger("head_dim", \.headDim, in: 2...65_536, absent: "d_model / heads", "width of one head (even: the rotary embedding turns pairs)"),
        .number("rope_theta", \.ropeTheta, default: 10000, check: { $0 > 1 && $0.isFinite ? nil : "must be above 1 and finite, got \($0)" },
                "the rotary embedding's base θ"),
        .optionalInteger("max_positions", \.maxPositions, in: 1...DecoderConfiguration.positionLimit, absent: "required",
                         "longest sequence (prompt + generated tokens)"),
        .optionalInteger("sliding_window", \.slidingWindow, in: 1...DecoderConfiguration.positionLimit, absent: "none",
                         "keys a token attends to at most (the latest); absent: all earlier tokens"),
        .flag("attention_bias", \.attentionBias, "Q, K and V projections carry biases (Qwen2-MoE)"),
        .choice("qk_norm", \.qkNorm, default: .none, noun: "qk_norm",
                "RMSNorm on queries and keys before the rotary embedding: none, head (per head, Qwen3-MoE) or projection (whole projection, OLMoE)"),
        .flag("tie_embeddings", \.tiedEmbeddings, "the LM head is the token embedding"),
        ModelFileField(key: "eos_token_ids", defaultText: "[]", meaning: "token ids that end a sequence", read: { (draft, json, path) throws(JSONFieldError) in
            draft.endTokens = try integers(json, path: path) { _ in nil }
        }, write: { $0.endTokens.isEmpty ? nil : .array($0.endTokens.map { .number(Double($0)) }) }),
        .choice("rope_pairs", \.ropePairs, default: .halves, noun: "rope_pairs",
                "elements the rotary embedding turns together: halves (i and i + D/2) or interleaved (2i and 2i + 1, DeepSeek)"),
        ModelFileField(key: "yarn", defaultText: "none",
                       meaning: "YaRN-scaled rotary frequencies: {factor, original_max_positions, beta_fast (32), beta_slow (1), truncate (true), attention_factor (0.1·ln factor + 1)}",
                       read: { (draft, json, path) throws(JSONFieldError) in draft.yarn = try YaRN.read(json, path: path) },
                       write: { $0.yarn?.json }),
        ModelFileField(key: "sliding_window_layers", defaultText: "every layer", meaning: "the layers `sliding_window` applies to (GPT-OSS alternates)",
                       read: { (draft, json, path) throws(JSONFieldError) in
                           draft.slidingWindowLayers = try integers(json, path: path) { $0 >= 0 ? nil : "must be a layer index, got \($0)" }
                       }, write: { $0.slidingWindowLayers.map { .array($0.map { .number(Double($0)) }) } }),
        .flag("attention_sinks", \.attentionSinks, "a learned sink logit per query head joins the softmax (GPT-OSS; tensor sinks)"),
        .flag("output_bias", \.outputBias, "the output projection carries a bias (GPT-OSS; tensor bo)"),
        .number("softmax_scale", \.softmaxScale, default: 0, defaultText: "1/√(query/key head width)",
                check: { $0 > 0 && $0.isFinite ? nil : "must be above 0 and finite, got \($0)" }, "the scale of the query–key products"),
        .choice("attention", \.attention, default: .grouped, noun: "attention",
                "grouped (grouped-query attention) or latent (DeepSeek's multi-head latent attention: the KV cache holds the latent)"),
        .optionalInteger("q_lora_rank", \.queryRank, in: 1...65_536, absent: "none", "latent: the query's low rank (absent: projected directly)"),
        .optionalInteger("kv_lora_rank", \.kvRank, in: 1...65_536, absent: "required (latent)", "latent: the compressed key/value latent's width"),
        .optionalInteger("qk_nope_head_dim", \.nopeDim, in: 1...65_536, absent: "required (latent)", "latent: a head's query/key width without rotation"),
        .optionalInteger("qk_rope_head_dim", \.ropeDim, in: 2...65_536, absent: "required (latent)", "latent: a head's rotated query/key width (shared key)"),
        .optionalInteger("v_head_dim", \.valueDim, in: 1...65_536, absent: "required (latent)", "latent: a head's value width"),
    ]

    /// The configuration, or the field that is missing or does not fit `dModel`.
    func configuration(dModel: Int, path: String) throws(JSONFieldError) -> DecoderConfiguration {
        guard let vocabulary else { throw JSONFieldError(path: "\(path).vocab_size", problem: "missing") }
        guard let heads else { throw JSONFieldError(path: "\(path).heads", problem: "missing") }
        guard let maxPositions else { throw JSONFieldError(path: "\(path).max_positions", problem: "missing") }
        let kvHeads = self.kvHeads ?? heads
        guard heads % kvHeads == 0 else { throw JSONFieldError(path: "\(path).kv_heads", problem: "must divide heads (\(heads)), got \(kvHeads)") }
        let latent = try latentConfiguration(path: path)
        guard let headDim = latent.map(\.queryKeyDim) ?? headDim ?? (dModel % heads == 0 ? dModel / heads : nil) else {
            throw JSONFieldError(path: "\(path).head_dim", problem: "missing, and d_model \(dModel) is not a multiple of heads \(heads)")
        }
        guard (latent?.ropeDim ?? headDim) % 2 == 0 else {
            throw JSONFieldError(path: latent == nil ? "\(path).head_dim" : "\(path).qk_rope_head_dim", problem: "must be even (the rotary embedding turns pairs), got \(latent?.ropeDim ?? headDim)")
        }
        if latent != nil, kvHeads != heads { throw JSONFieldError(path: "\(path).kv_heads", problem: "latent attention has no key/value heads of its own; leave it out") }
        for (index, token) in endTokens.enumerated() where !(0..<vocabulary).contains(token) {
            throw JSONFieldError(path: "\(path).eos_token_ids[\(index)]", problem: "must be a token id below vocab_size \(vocabulary), got \(token)")
        }
        if latent != nil, attentionBias || outputBias || attentionSinks || qkNorm != .none {
            throw JSONFieldError(path: path, problem: "latent attention takes no attention_bias, output_bias, attention_sinks or qk_norm")
        }
        var decoder = DecoderConfiguration(vocabulary: vocabulary, heads: heads, kvHeads: kvHeads, headDim: headDim, ropeTheta: ropeTheta,
                                           maxPositions: maxPositions, slidingWindow: slidingWindow, attentionBias: attentionBias, qkNorm: qkNorm,
                                           tiedEmbeddings: tiedEmbeddings, endTokens: endTokens)
        (decoder.ropePairs, decoder.yarn, decoder.slidingWindowLayers) = (ropePairs, yarn, slidingWindowLayers)
        (decoder.attentionSinks, decoder.outputBias, decoder.softmaxScale, decoder.latent) = (attentionSinks, outputBias, softmaxScale > 0 ? softmaxScale : nil, latent)
        return decoder
    }

    /// The latent attention's widths (all given when `attention` is latent, none otherwise).
    private func latentConfiguration(path: String) throws(JSONFieldError) -> LatentAttention? {
        let widths = [("kv_lora_rank", kvRank), ("qk_nope_head_dim", nopeDim), ("qk_rope_head_dim", ropeDim), ("v_head_dim", valueDim)]
        guard attention == .latent else {
            if let given = (widths + [("q_lora_rank", queryRank)]).first(where: { $0.1 != nil }) {
                throw JSONFieldError(path: "\(path).\(given.0)", problem: "only latent attention takes it (set \"attention\": \"latent\")")
            }
            return nil
        }
        if headDim != nil { throw JSONFieldError(path: "\(path).head_dim", problem: "latent attention's widths are qk_nope_head_dim, qk_rope_head_dim and v_head_dim") }
        for (key, value) in widths where value == nil { throw JSONFieldError(path: "\(path).\(key)", problem: "missing (latent attention needs it)") }
        return LatentAttention(queryRank: queryRank, kvRank: kvRank!, nopeDim: nopeDim!, ropeDim: ropeDim!, valueDim: valueDim!)
    }
}
