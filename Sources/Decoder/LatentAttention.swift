import Foundation
import MoE

/// Multi-head latent attention (DeepSeek-V2, arXiv:2405.04434 §2.1) over a batch of rows from
/// any number of sequences, with the expansion absorbed (§2.1.2: "W^UK can be absorbed into
/// W^Q, and W^UV into W^O"), so the cache is read as it is stored — one row per token of the
/// normalised latent c (width R) and the rotated shared key k_r — and never expanded:
///
///     score(h, j) = s · (q_nope,h · W_UK,h · c_j  +  q_rope,h · k_r,j)
///                 = s · [q_nope,h · W_UK,h | q_rope,h] · [c_j | k_r,j]
///     out_h       = W_UV,h · Σ_j softmax_j(score(h, ·)) · c_j
///
/// The absorbed queries of all heads share the cache (the heads are one multi-query group in
/// latent space), so a run of n rows of one sequence scores as one GEMM of `[n·H, R + rope]`
/// against the cache, and a decode row as `[H, R + rope]`.
package final class MultiHeadLatentAttention: AttentionLayer {
    let config: DecoderConfiguration
    let latent: LatentAttention
    let dModel: Int
    let rotary: RotaryTable
    let layers: [LatentAttentionWeights]
    let scale: Float
    private var normed: [Float] = []
    private var lowQueries: [Float] = []
    private var queries: [Float] = []
    private var compressed: [Float] = []
    private var latents: [Float] = []
    private var absorbed: [Float] = []
    private var scores: [Float] = []
    private var mixedLatents: [Float] = []
    private var mixed: [Float] = []
    private var output: [Float] = []

    package init(config: DecoderConfiguration, dModel: Int, layers: [LatentAttentionWeights]) {
        (self.config, self.latent, self.dModel, self.layers) = (config, config.latent!, dModel, layers)
        rotary = RotaryTable(config)
        scale = config.queryKeyScale
    }

    package func forward(_ hidden: inout [Float], rows: [RowPosition], layer: Int, cache: KVCache) {
        let count = rows.count
        guard count > 0 else { return }
        let weights = layers[layer]
        let heads = config.heads
        let (rank, rope, queryWidth) = (latent.kvRank, latent.ropeDim, heads * latent.queryKeyDim)
        let row = rank + rope
        GroupedQueryAttention.grow(&normed, to: count * dModel)
        GroupedQueryAttention.grow(&output, to: count * dModel)
        GroupedQueryAttention.grow(&queries, to: count * queryWidth)
        GroupedQueryAttention.grow(&compressed, to: count * row)
        GroupedQueryAttention.grow(&latents, to: count * rank)
        GroupedQueryAttention.grow(&absorbed, to: count * heads * row)
        GroupedQueryAttention.grow(&mixedLatents, to: count * heads * rank)
        GroupedQueryAttention.grow(&mixed, to: count * heads * latent.valueDim)
        hidden.withUnsafeBufferPointer { x in normed.withUnsafeMutableBufferPointer { weights.norm.apply(x.baseAddress!, rows: count, into: $0.baseAddress!) } }
        project(weights, rows: count)
        // The latent's RMSNorm (its R values of each compressed row), the rotary parts turned,
        // and the cache row [c | k_r] stored.
        compressed.withUnsafeMutableBufferPointer { c in
            latents.withUnsafeMutableBufferPointer { l in
                for index in 0..<count { (l.baseAddress! + index * rank).update(from: c.baseAddress! + index * row, count: rank) }
                for index in 0..<count { weights.kvNorm.apply(l.baseAddress! + index * rank, rows: 1, into: c.baseAddress! + index * row) }
            }
            queries.withUnsafeMutableBufferPointer { q in
                for (index, place) in rows.enumerated() {
                    rotary.rotate(c.baseAddress! + index * row + rank, heads: 1, position: place.position)
                    rotary.rotate(q.baseAddress! + index * queryWidth + latent.nopeDim, heads: heads, stride: latent.queryKeyDim, position: place.position)
                    cache.store(layer: layer, slot: place.cacheStart + place.position, key: c.baseAddress! + index * row, value: nil)
                }
            }
        }
        absorbQueries(weights, rows: count)
        for run in GroupedQueryAttention.runs(rows) { attend(rows, run, layer: layer, cache: cache) }
        expandValues(weights, rows: count)
        mixed.withUnsafeBufferPointer { m in
            weights.wo.withUnsafeBufferPointer { wo in
                output.withUnsafeMutableBufferPointer { o in
                    BLAS.multiply(rows: count, columns: dModel, inner: heads * latent.valueDim, m.baseAddress!, wo.baseAddress!, into: o.baseAddress!)
                }
            }
        }
        GroupedQueryAttention.add(output, bias: [], into: &hidden, rows: count, width: dModel)
    }

    /// `queries = normed · wq`, or `normed · wqA`, its RMSNorm, `· wqB`; `compressed = normed · wkvA`.
    private func project(_ weights: LatentAttentionWeights, rows: Int) {
        let queryWidth = config.heads * latent.queryKeyDim
        normed.withUnsafeBufferPointer { x in
            queries.withUnsafeMutableBufferPointer { q in
                if let rank = latent.queryRank, let norm = weights.qNorm {
                    GroupedQueryAttention.grow(&lowQueries, to: rows * rank)
                    lowQueries.withUnsafeMutableBufferPointer { low in
                        weights.wqA.withUnsafeBufferPointer { BLAS.multiply(rows: rows, columns: rank, inner: dModel, x.baseAddress!, $0.baseAddress!, into: low.baseAddress!) }
                        var copy = Array(low[0..<rows * rank])
                        copy.withUnsafeMutableBufferPointer { norm.apply($0.baseAddress!, rows: rows, into: low.baseAddress!) }
                        weights.wqB.withUnsafeBufferPointer {
                            BLAS.multiply(rows: rows, columns: queryWidth, inner: rank, low.baseAddress!, $0.baseAddress!, into: q.baseAddress!)
                        }
                    }
                } else {
                    weights.wq.withUnsafeBufferPointer { BLAS.multiply(rows: rows, columns: queryWidth, inner: dModel, x.baseAddress!, $0.baseAddress!, into: q.baseAddress!) }
                }
            }
            compressed.withUnsafeMutableBufferPointer { c in
                weights.wkvA.withUnsafeBufferPointer {
                    BLAS.multiply(rows: rows, columns: latent.kvRank + latent.ropeDim, inner: dModel, x.baseAddress!, $0.baseAddress!, into: c.baseAddress!)
                }
            }
        }
    }

    /// `absorbed[row · H + h] = [q_nope,h · W_UK,h | q_rope,h]`: per head one GEMM over the rows.
    private func absorbQueries(_ weights: LatentAttentionWeights, rows: Int) {
        let heads = config.heads
        let (rank, nope, qk) = (latent.kvRank, latent.nopeDim, latent.queryKeyDim)
        let row = rank + latent.ropeDim
        let expansion = (nope + latent.valueDim) * rank
        queries.withUnsafeBufferPointer { q in
            absorbed.withUnsafeMutableBufferPointer { a in
                weights.wkvB.withUnsafeBufferPointer { w in
                    for head in 0..<heads {
                        BLAS.multiplyStrided(rows: rows, columns: rank, inner: nope, q.baseAddress! + head * qk, leadingA: heads * qk,
                                             w.baseAddress! + head * expansion, leadingB: rank, transposeB: false,
                                             into: a.baseAddress! + head * row, leadingC: heads * row)
                    }
                }
                for index in 0..<rows * heads {
                    (a.baseAddress! + index * row + rank).update(from: q.baseAddress! + index * qk + nope, count: latent.ropeDim)
                }
            }
        }
    }

    /// `mixedLatents[row · H + h] = Σ_j softmax_j(s · absorbed[row · H + h] · cache_j) · c_j` for
    /// one sequence's consecutive rows `run`, over the cache slots each row may see.
    private func attend(_ rows: [RowPosition], _ run: Range<Int>, layer: Int, cache: KVCache) {
        let heads = config.heads
        let rank = latent.kvRank
        let row = rank + latent.ropeDim
        let base = rows[run.lowerBound].cacheStart
        let firstPosition = rows[run.lowerBound].position, lastPosition = rows[run.upperBound - 1].position
        let window = config.window(layer: layer)
        let from = window.map { max(0, firstPosition - $0 + 1) } ?? 0
        let context = lastPosition + 1 - from
        let queryRows = run.count * heads
        GroupedQueryAttention.grow(&scores, to: queryRows * context)
        cache.withLayer(layer) { cached, _ in
            absorbed.withUnsafeBufferPointer { a in
                scores.withUnsafeMutableBufferPointer { score in
                    BLAS.multiplyStrided(rows: queryRows, columns: context, inner: row, a.baseAddress! + run.lowerBound * heads * row, leadingA: row,
                                         cached + (base + from) * row, leadingB: row, transposeB: true, into: score.baseAddress!, leadingC: context)
                    for index in 0..<queryRows {
                        let position = firstPosition + index / heads
                        let visible = (window.map { max(0, position - $0 + 1) } ?? 0) - from..<position + 1 - from
                        GroupedQueryAttention.softmax(score.baseAddress! + index * context, width: context, visible: visible, scale: scale, sink: nil)
                    }
                    mixedLatents.withUnsafeMutableBufferPointer { m in
                        BLAS.multiplyStrided(rows: queryRows, columns: rank, inner: context, score.baseAddress!, leadingA: context,
                                             cached + (base + from) * row, leadingB: row, transposeB: false,
                                             into: m.baseAddress! + run.lowerBound * heads * rank, leadingC: rank)
                    }
                }
            }
        }
    }

    /// `mixed[row, h] = mixedLatents[row · H + h] · W_UV,hᵀ`: per head one GEMM over the rows.
    private func expandValues(_ weights: LatentAttentionWeights, rows: Int) {
        let heads = config.heads
        let (rank, nope, value) = (latent.kvRank, latent.nopeDim, latent.valueDim)
        let expansion = (nope + value) * rank
        mixedLatents.withUnsafeBufferPointer { m in
            weights.wkvB.withUnsafeBufferPointer { w in
                mixed.withUnsafeMutableBufferPointer { out in
                    for head in 0..<heads {
                        BLAS.multiplyStrided(rows: rows, columns: value, inner: rank, m.baseAddress! + head * rank, leadingA: heads * rank,
                                             w.baseAddress! + head * expansion + nope * rank, leadingB: rank, transposeB: true,
                                             into: out.baseAddress! + head * value, leadingC: heads * value)
                    }
                }
            }
        }
    }
}
