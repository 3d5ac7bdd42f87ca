import FileFormats
import MoE

/// One layer's attention weights, row-major `[in, out]` as SwiftMoE stores projections:
/// `wq [d, H·D]`, `wk`/`wv [d, KV·D]`, `wo [H·D, d]`; biases `[out]` or empty; `norm` is the
/// layer's input RMSNorm, `qNorm`/`kNorm` the optional query/key RMSNorms (per head: width D;
/// over the projection: width H·D / KV·D); `bo [d]` the output bias and `sinks [H]` the sink
/// logits, empty when the model has none.
package struct AttentionWeights: Sendable {
    package let norm: RMSNorm
    package let wq: [Float], wk: [Float], wv: [Float], wo: [Float]
    package let bq: [Float], bk: [Float], bv: [Float]
    package let qNorm: RMSNorm?, kNorm: RMSNorm?
    package var bo: [Float] = [], sinks: [Float] = []

    /// Values held, norms included.
    var count: Int { [wq, wk, wv, wo, bq, bk, bv, bo, sinks, norm.scale, qNorm?.scale ?? [], kNorm?.scale ?? []].reduce(0) { $0 + $1.count } }
}

/// One layer's multi-head latent attention weights (`DecoderConfiguration.latent`), projections
/// `[in, out]`: the query `wq [d, H·(nope + rope)]`, or `wqA [d, rank]`, `qNorm`, `wqB [rank,
/// H·(nope + rope)]`; `wkvA [d, kvRank + rope]` and the latent's `kvNorm`; `wkvB [H, nope + v,
/// kvRank]` as the checkpoint stores it (per head, key rows then value rows: it is absorbed into
/// the query and the output, never applied to the cache); `wo [H·v, d]`.
package struct LatentAttentionWeights: Sendable {
    package let norm: RMSNorm
    package let wq: [Float], wqA: [Float], qNorm: RMSNorm?, wqB: [Float]
    package let wkvA: [Float], kvNorm: RMSNorm, wkvB: [Float], wo: [Float]

    /// Values held, norms included.
    var count: Int { [wq, wqA, wqB, wkvA, wkvB, wo, norm.scale, qNorm?.scale ?? [], kvNorm.scale].reduce(0) { $0 + $1.count } }
}

/// Every layer's attention weights, of the kind the model uses.
package enum AttentionLayerWeights: Sendable {
    case grouped([AttentionWeights])
    case latent([LatentAttentionWeights])
}

/// The precision of the LM head's weights (`moe generate --head-precision`).
package enum HeadPrecision: String, CaseIterable, Sendable {
    case fp32, int8
}

/// The decoder's own weights (`DecoderConfiguration.tensorShapes`). Every rank holds all of
/// them: attention is data-parallel, each rank running its own sequences.
package struct DecoderWeights: Sendable {
    /// `[V, d]`: token t's embedding is row t.
    package let embedding: [Float]
    package let finalNorm: RMSNorm
    /// The LM head transposed, `[d, V]` (the embedding's transpose when tied), so the logits are
    /// one GEMM `[rows, d] · [d, V]`; empty once `int8Head` holds it.
    package private(set) var lmHeadTransposed: [Float]
    /// The LM head in int8 (`--head-precision int8`), nil: fp32.
    package private(set) var int8Head: Int8Linear?
    package let attention: AttentionLayerWeights

    /// The weights of `model`'s decoder from `file`, or seeded from `seed` without one (the
    /// values `moe init-weights` would write). Throws the tensor that is missing, misshapen or
    /// not finite.
    package static func load(_ model: ModelConfiguration, seed: UInt64, file: SafetensorsReader?) throws(WeightsError) -> DecoderWeights {
        guard let decoder = model.decoder else { preconditionFailure("a model without a decoder section") }
        let shapes = Dictionary(decoder.tensorShapes(dModel: model.dModel, layers: model.layers.count).map { ($0.name, $0.shape) },
                                uniquingKeysWith: { a, _ in a })
        func tensor(_ name: String) throws(WeightsError) -> [Float] {
            let shape = shapes[name]!
            let values: [Float]
            if let file {
                do { values = try file.readFloat32(name, shape: shape) } catch { throw .file(error) }
            } else {
                values = ModelWeights.seededTensor(name: name, shape: shape, seed: seed)
            }
            guard values.allSatisfy(\.isFinite) else { throw .nonFinite(tensor: name, file: file?.path) }
            return values
        }
        let epsilon = model.normEpsilon
        // Norm scales are seeded around 1 (their names end in "norm", not "scale").
        func norm(_ name: String) throws(WeightsError) -> RMSNorm {
            let values = try tensor(name)
            return RMSNorm(scale: file == nil ? values.map { 1 + $0 } : values, epsilon: epsilon)
        }
        let embedding = try tensor("decoder.embed_tokens")
        let head = decoder.tiedEmbeddings ? embedding : try tensor("decoder.lm_head")
        let attention: AttentionLayerWeights
        if let latent = decoder.latent {
            attention = .latent(try (0..<model.layers.count).map { (layer) throws(WeightsError) in
                let prefix = "decoder.layers.\(layer)"
                let low = latent.queryRank != nil
                return LatentAttentionWeights(
                    norm: try norm("\(prefix).norm"), wq: low ? [] : try tensor("\(prefix).wq"), wqA: low ? try tensor("\(prefix).wq_a") : [],
                    qNorm: low ? try norm("\(prefix).q_a_norm") : nil, wqB: low ? try tensor("\(prefix).wq_b") : [],
                    wkvA: try tensor("\(prefix).wkv_a"), kvNorm: try norm("\(prefix).kv_a_norm"), wkvB: try tensor("\(prefix).wkv_b"),
                    wo: try tensor("\(prefix).wo"))
            })
        } else {
            attention = .grouped(try (0..<model.layers.count).map { (layer) throws(WeightsError) in
                let prefix = "decoder.layers.\(layer)"
                let bias = decoder.attentionBias
                var weights = AttentionWeights(
                    norm: try norm("\(prefix).norm"), wq: try tensor("\(prefix).wq"), wk: try tensor("\(prefix).wk"), wv: try tensor("\(prefix).wv"),
                    wo: try tensor("\(prefix).wo"), bq: bias ? try tensor("\(prefix).bq") : [], bk: bias ? try tensor("\(prefix).bk") : [],
                    bv: bias ? try tensor("\(prefix).bv") : [],
                    qNorm: decoder.qkNorm == .none ? nil : try norm("\(prefix).q_norm"), kNorm: decoder.qkNorm == .none ? nil : try norm("\(prefix).k_norm"))
                if decoder.outputBias { weights.bo = try tensor("\(prefix).bo") }
                if decoder.attentionSinks { weights.sinks = try tensor("\(prefix).sinks") }
                return weights
            })
        }
        return DecoderWeights(embedding: embedding, finalNorm: try norm("decoder.norm"),
                              lmHeadTransposed: transpose(head, rows: decoder.vocabulary, columns: model.dModel), attention: attention)
    }

    /// These weights with the LM head quantised to int8 for `kernels` (its fp32 copy dropped).
    package func withInt8Head(_ kernels: Int8Kernels, dModel: Int) -> DecoderWeights {
        guard int8Head == nil else { return self }
        var copy = self
        copy.int8Head = Int8Linear(lmHeadTransposed, inner: dModel, columns: lmHeadTransposed.count / dModel, kernels: kernels)
        copy.lmHeadTransposed = []
        return copy
    }

    /// The attention layers that run these weights.
    package func attentionLayers(_ decoder: DecoderConfiguration, dModel: Int) -> any AttentionLayer {
        switch attention {
        case let .grouped(layers): GroupedQueryAttention(config: decoder, dModel: dModel, layers: layers)
        case let .latent(layers): MultiHeadLatentAttention(config: decoder, dModel: dModel, layers: layers)
        }
    }

    /// `[rows, columns]` row-major as `[columns, rows]`.
    static func transpose(_ values: [Float], rows: Int, columns: Int) -> [Float] {
        var result = [Float](repeating: 0, count: values.count)
        for row in 0..<rows {
            for column in 0..<columns { result[column * rows + row] = values[row * columns + column] }
        }
        return result
    }

    /// Bytes held (for the memory report).
    package var bytesHeld: Int {
        4 * (embedding.count + lmHeadTransposed.count + finalNorm.scale.count + attentionValues) + (int8Head?.bytesHeld ?? 0)
    }

    /// Values of every layer's attention weights and norms.
    package var attentionValues: Int {
        switch attention {
        case let .grouped(layers): layers.reduce(0) { $0 + $1.count }
        case let .latent(layers): layers.reduce(0) { $0 + $1.count }
        }
    }
}
