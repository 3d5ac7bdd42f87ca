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
            shapes += [("\(prefix).norm", [dModel]), ("\(prefix).wq", [dModel, q]), ("\(prefix).wk", [dModel, kv]),
                       ("\(prefix).wv", [dModel, kv]), ("\(prefix).wo", [q, dModel])]
            if attentionBias { shapes += [("\(prefix).bq", [q]), ("\(prefix).bk", [kv]), ("\(prefix).bv", [kv])] }
            switch qkNorm {
            case .none: break
            case .head: shapes += [("\(prefix).q_norm", [headDim]), ("\(prefix).k_norm", [headDim])]
            case .projection: shapes += [("\(prefix).q_norm", [q]), ("\(prefix).k_norm", [kv])]
            }
        }
        return shapes
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

    init() {}

    init(_ decoder: DecoderConfiguration) {
        (vocabulary, heads, kvHeads, headDim) = (decoder.vocabulary, decoder.heads, decoder.kvHeads, decoder.headDim)
        (ropeTheta, maxPositions, slidingWindow) = (decoder.ropeTheta, decoder.maxPositions, decoder.slidingWindow)
        (attentionBias, qkNorm, tiedEmbeddings, endTokens) = (decoder.attentionBias, decoder.qkNorm, decoder.tiedEmbeddings, decoder.endTokens)
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
            guard case let .array(items) = json else { throw JSONFieldError(path: path, problem: "expected an array of token ids") }
            draft.endTokens = try items.enumerated().map { (index, item) throws(JSONFieldError) in
                try JSONObjectReader.integer(item, path: "\(path)[\(index)]")
            }
        }, write: { $0.endTokens.isEmpty ? nil : .array($0.endTokens.map { .number(Double($0)) }) }),
    ]

    /// The configuration, or the field that is missing or does not fit `dModel`.
    func configuration(dModel: Int, path: String) throws(JSONFieldError) -> DecoderConfiguration {
        guard let vocabulary else { throw JSONFieldError(path: "\(path).vocab_size", problem: "missing") }
        guard let heads else { throw JSONFieldError(path: "\(path).heads", problem: "missing") }
        guard let maxPositions else { throw JSONFieldError(path: "\(path).max_positions", problem: "missing") }
        let kvHeads = self.kvHeads ?? heads
        guard heads % kvHeads == 0 else { throw JSONFieldError(path: "\(path).kv_heads", problem: "must divide heads (\(heads)), got \(kvHeads)") }
        guard let headDim = headDim ?? (dModel % heads == 0 ? dModel / heads : nil) else {
            throw JSONFieldError(path: "\(path).head_dim", problem: "missing, and d_model \(dModel) is not a multiple of heads \(heads)")
        }
        guard headDim % 2 == 0 else { throw JSONFieldError(path: "\(path).head_dim", problem: "must be even (the rotary embedding turns pairs), got \(headDim)") }
        for (index, token) in endTokens.enumerated() where !(0..<vocabulary).contains(token) {
            throw JSONFieldError(path: "\(path).eos_token_ids[\(index)]", problem: "must be a token id below vocab_size \(vocabulary), got \(token)")
        }
        return DecoderConfiguration(vocabulary: vocabulary, heads: heads, kvHeads: kvHeads, headDim: headDim, ropeTheta: ropeTheta,
                                    maxPositions: maxPositions, slidingWindow: slidingWindow, attentionBias: attentionBias, qkNorm: qkNorm,
                                    tiedEmbeddings: tiedEmbeddings, endTokens: endTokens)
    }
}
