import Foundation
import MoE

/// The physical limits a generation run is compared with, measured on this machine in the same
/// process (`moe generate --bounds`; Benchmarks/README.md, "Token generation"):
///
/// - **decode at batch 1 is bound by the bytes one step reads** — every layer's attention
///   weights, the top-k experts of each MoE layer, its shared expert or its dense FFN, the router,
///   the norms, the final norm and the LM head (the KV cache and one embedding row are left out: small) —
///   over the bandwidth of a plain sequential read of as many bytes;
/// - **prefill is bound by the GEMM rate**: the time the prefill's matrix products take alone —
///   the attention projections, the scores and mixtures of each sequence, every expert's GEMMs over
///   its share of the rows (routing taken as uniform: ⌈rows · k / E⌉ each), shared and dense FFNs,
///   the LM head on each sequence's last position — through the same `BLAS` calls the run makes.
///
/// Both are fp32: the bound of the fp32 model, whatever precision the run used.
package struct GenerationBounds: Sendable {
    /// Weight bytes of one decode step at batch 1.
    package let decodeBytes: Int
    /// GB/s of a plain read of `decodeBytes` (best of 3).
    package let plainReadGBps: Double
    /// Seconds the prefill's products take alone, and the prompt tokens they cover.
    package let prefillGEMMSeconds: Double
    package let prefillTokens: Int

    package var decodeSecondsPerStep: Double { Double(decodeBytes) / (plainReadGBps * 1e9) }
    package var prefillTokensPerSecond: Double { Double(prefillTokens) / max(prefillGEMMSeconds, 1e-12) }

    /// Measures the bounds of `model` for prompts of `promptLengths` (one rank's batch).
    package static func measure(model: ModelConfiguration, weights: DecoderWeights, promptLengths: [Int]) -> GenerationBounds {
        let bytes = decodeBytes(model: model, weights: weights)
        let read = MemoryBandwidth.plainRead(bytes: bytes)
        let products = prefillProducts(model: model, promptLengths: promptLengths)
        return GenerationBounds(decodeBytes: bytes, plainReadGBps: read, prefillGEMMSeconds: time(products),
                                prefillTokens: promptLengths.reduce(0, +))
    }

    /// Weight bytes one decode step at batch 1 reads (fp32).
    package static func decodeBytes(model: ModelConfiguration, weights: DecoderWeights) -> Int {
        let d = model.dModel
        // Attention, one embedding row, the final norm and the LM head in fp32 (whatever precision the run's head has).
        var floats = weights.attentionValues + d + weights.finalNorm.scale.count + (model.decoder?.vocabulary ?? 0) * d
        for (index, layer) in model.layers.enumerated() {
            floats += d  // the layer's FFN norm
            if layer.dense {
                floats += model.form(.dense, layer: index).parameterCount(dModel: d)
                continue
            }
            floats += d * layer.experts + layer.topK * model.form(.expert, layer: index).parameterCount(dModel: d)
            if layer.residual { floats += model.form(.dense, layer: index).parameterCount(dModel: d) }
            if layer.sharedDFF > 0 { floats += model.form(.shared, layer: index).parameterCount(dModel: d) + (layer.sharedGate ? d : 0) }
        }
        return floats * 4
    }

    /// One product `[rows, inner] · [inner, columns]`, `count` times.
    struct Product: Hashable {
        let rows: Int, inner: Int, columns: Int
        var count = 1
    }

    /// The prefill's matrix products for prompts of `promptLengths`.
    static func prefillProducts(model: ModelConfiguration, promptLengths: [Int]) -> [Product] {
        guard let decoder = model.decoder else { return [] }
        let d = model.dModel, tokens = promptLengths.reduce(0, +)
        var products: [Product] = []
        for (index, layer) in model.layers.enumerated() {
            products += attentionProducts(decoder, dModel: d, tokens: tokens, promptLengths: promptLengths)
            func ffn(_ role: ModelConfiguration.FFNRole, rows: Int, count: Int = 1) {
                let form = model.form(role, layer: index)
                products.append(Product(rows: rows, inner: d, columns: form.dFF, count: count * (form.activation.isGated ? 2 : 1)))
                products.append(Product(rows: rows, inner: form.dFF, columns: d, count: count))
            }
            if layer.dense {
                ffn(.dense, rows: tokens)
                continue
            }
            products.append(Product(rows: tokens, inner: d, columns: layer.experts))
            ffn(.expert, rows: (tokens * layer.topK + layer.experts - 1) / layer.experts, count: layer.experts)
            if layer.residual { ffn(.dense, rows: tokens) }
            if layer.sharedDFF > 0 { ffn(.shared, rows: tokens) }
        }
        products.append(Product(rows: promptLengths.count, inner: d, columns: decoder.vocabulary))
        return products
    }

    /// One layer's attention products: projections over every token, scores and mixtures per
    /// sequence (grouped-query: per query head; latent: all heads against the latent cache).
    private static func attentionProducts(_ decoder: DecoderConfiguration, dModel d: Int, tokens: Int, promptLengths: [Int]) -> [Product] {
        let heads = decoder.heads
        if let latent = decoder.latent {
            let row = latent.kvRank + latent.ropeDim
            var products = [Product(rows: tokens, inner: d, columns: row), Product(rows: tokens, inner: latent.nopeDim, columns: latent.kvRank, count: heads),
                            Product(rows: tokens, inner: latent.kvRank, columns: latent.valueDim, count: heads),
                            Product(rows: tokens, inner: heads * latent.valueDim, columns: d)]
            if let rank = latent.queryRank {
                products += [Product(rows: tokens, inner: d, columns: rank), Product(rows: tokens, inner: rank, columns: heads * latent.queryKeyDim)]
            } else {
                products.append(Product(rows: tokens, inner: d, columns: heads * latent.queryKeyDim))
            }
            for length in promptLengths {
                products += [Product(rows: length * heads, inner: row, columns: length), Product(rows: length * heads, inner: length, columns: latent.kvRank)]
            }
            return products
        }
        let (q, kv) = (heads * decoder.headDim, decoder.kvHeads * decoder.headDim)
        var products = [Product(rows: tokens, inner: d, columns: q), Product(rows: tokens, inner: d, columns: kv, count: 2), Product(rows: tokens, inner: q, columns: d)]
        for length in promptLengths {
            products += [Product(rows: length, inner: decoder.headDim, columns: length, count: heads),
                         Product(rows: length, inner: length, columns: decoder.headDim, count: heads)]
        }
        return products
    }

    /// Seconds `products` take through `BLAS.multiply` (each shape warmed once, then the best of
    /// 2 timings × its count).
    static func time(_ products: [Product]) -> Double {
        var counts: [Product: Int] = [:]
        for product in products { counts[Product(rows: product.rows, inner: product.inner, columns: product.columns), default: 0] += product.count }
        let largestA = counts.keys.map { $0.rows * $0.inner }.max() ?? 0
        let largestB = counts.keys.map { $0.inner * $0.columns }.max() ?? 0
        let largestC = counts.keys.map { $0.rows * $0.columns }.max() ?? 0
        let a = [Float](repeating: 0.01, count: max(largestA, 1)), b = [Float](repeating: 0.02, count: max(largestB, 1))
        var c = [Float](repeating: 0, count: max(largestC, 1))
        var total = 0.0
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    for (shape, count) in counts {
                        var best = Double.infinity
                        for attempt in 0..<3 {
                            let start = DispatchTime.now().uptimeNanoseconds
                            BLAS.multiply(rows: shape.rows, columns: shape.columns, inner: shape.inner, a.baseAddress!, b.baseAddress!, into: c.baseAddress!)
                            if attempt > 0 { best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9) }
                        }
                        total += best * Double(count)
                    }
                }
            }
        }
        return total
    }

    /// The summary lines: each bound and the run's rate against it.
    package func summaryLines(prefillTokensPerSecond measuredPrefill: Double, decodeSecondsPerStep measuredDecode: Double?) -> [String] {
        var lines = [String(format: "bounds: prefill's products alone %.1f ms for %d tokens → %.0f tokens/s; the run's prefill %.0f tokens/s = %.0f%% of the GEMM-bound rate",
                            prefillGEMMSeconds * 1000, prefillTokens, prefillTokensPerSecond, measuredPrefill, 100 * measuredPrefill / prefillTokensPerSecond)]
        let decode = String(format: "bounds: a batch-1 decode step reads %.1f MB of fp32 weights; a plain read of them runs at %.1f GB/s → %.1f ms a step",
                            Double(decodeBytes) / 1e6, plainReadGBps, decodeSecondsPerStep * 1000)
        if let measuredDecode {
            lines.append(decode + String(format: "; the run's decode %.1f ms a step = %.0f%% of the bytes-bound rate", measuredDecode * 1000, 100 * decodeSecondsPerStep / measuredDecode))
        } else {
            lines.append(decode + " (the run's batch is not 1: not compared)")
        }
        return lines
    }
}
