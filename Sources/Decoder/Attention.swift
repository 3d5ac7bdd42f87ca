import Foundation
import MoE

/// Where one row of a decoder batch sits: its sequence's first KV-cache slot and its position
/// in the sequence (the slot it writes is `cacheStart + position`).
package struct RowPosition: Sendable, Equatable {
    package var cacheStart: Int
    package var position: Int

    package init(cacheStart: Int, position: Int) {
        self.cacheStart = cacheStart
        self.position = position
    }
}

/// A decoder's self-attention, every layer: adds layer `layer`'s attention over `rows` to
/// `hidden` (`[rows.count, d]`), keys and values stored in `cache`. Every row's key and value go
/// into the cache before any row attends, so the rows of a prompt attend causally to each other
/// and to what the cache already holds; each row reads only its own sequence's slots, so a
/// sequence's numbers never depend on its batch.
package protocol AttentionLayer: AnyObject {
    func forward(_ hidden: inout [Float], rows: [RowPosition], layer: Int, cache: KVCache)
}

/// Grouped-query self-attention over a batch of rows from any number of sequences:
/// `hidden += Wo · softmax(s · q·Kᵀ) · V (+ bo)` per head, with the rotary embedding, optional
/// Q/K/V biases, query/key RMSNorms, sliding windows (on every layer or some) and sink logits —
/// the attention of Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE and GPT-OSS.
package final class GroupedQueryAttention: AttentionLayer {
    let config: DecoderConfiguration
    let dModel: Int
    let rotary: RotaryTable
    let layers: [AttentionWeights]
    let scale: Float
    private var normed: [Float] = []
    private var queries: [Float] = []
    private var keys: [Float] = []
    private var values: [Float] = []
    private var mixed: [Float] = []
    private var output: [Float] = []
    private var scores: [Float] = []

    package init(config: DecoderConfiguration, dModel: Int, layers: [AttentionWeights]) {
        (self.config, self.dModel, self.layers) = (config, dModel, layers)
        rotary = RotaryTable(config)
        scale = config.queryKeyScale
    }

    static func grow(_ buffer: inout [Float], to count: Int) {
        if buffer.count < count { buffer = [Float](repeating: 0, count: count) }
    }

    package func forward(_ hidden: inout [Float], rows: [RowPosition], layer: Int, cache: KVCache) {
        let count = rows.count
        guard count > 0 else { return }
        let weights = layers[layer]
        let (heads, kvHeads, headDim) = (config.heads, config.kvHeads, config.headDim)
        let (q, kv) = (heads * headDim, kvHeads * headDim)
        for buffer in [\GroupedQueryAttention.normed, \GroupedQueryAttention.output] { Self.grow(&self[keyPath: buffer], to: count * dModel) }
        Self.grow(&queries, to: count * q)
        Self.grow(&mixed, to: count * q)
        Self.grow(&keys, to: count * kv)
        Self.grow(&values, to: count * kv)
        hidden.withUnsafeBufferPointer { x in normed.withUnsafeMutableBufferPointer { weights.norm.apply(x.baseAddress!, rows: count, into: $0.baseAddress!) } }
        project(weights.wq, bias: weights.bq, columns: q, rows: count, into: &queries)
        project(weights.wk, bias: weights.bk, columns: kv, rows: count, into: &keys)
        project(weights.wv, bias: weights.bv, columns: kv, rows: count, into: &values)
        normalise(&queries, weights.qNorm, rows: count, heads: heads)
        normalise(&keys, weights.kNorm, rows: count, heads: kvHeads)
        queries.withUnsafeMutableBufferPointer { qs in
            keys.withUnsafeMutableBufferPointer { ks in
                values.withUnsafeBufferPointer { vs in
                    for (row, place) in rows.enumerated() {
                        rotary.rotate(qs.baseAddress! + row * q, heads: heads, position: place.position)
                        rotary.rotate(ks.baseAddress! + row * kv, heads: kvHeads, position: place.position)
                        cache.store(layer: layer, slot: place.cacheStart + place.position, key: ks.baseAddress! + row * kv, value: vs.baseAddress! + row * kv)
                    }
                }
            }
        }
        attend(rows: rows, layer: layer, cache: cache, sinks: weights.sinks)
        mixed.withUnsafeBufferPointer { m in
            weights.wo.withUnsafeBufferPointer { wo in
                output.withUnsafeMutableBufferPointer { o in
                    BLAS.multiply(rows: count, columns: dModel, inner: q, m.baseAddress!, wo.baseAddress!, into: o.baseAddress!)
                }
            }
        }
        Self.add(output, bias: weights.bo, into: &hidden, rows: count, width: dModel)
    }

    /// `hidden[rows, width] += output (+ bias)`.
    static func add(_ output: [Float], bias: [Float], into hidden: inout [Float], rows: Int, width: Int) {
        hidden.withUnsafeMutableBufferPointer { h in
            output.withUnsafeBufferPointer { o in
                for index in 0..<rows * width { h[index] += o[index] }
                guard !bias.isEmpty else { return }
                for row in 0..<rows { for column in 0..<width { h[row * width + column] += bias[column] } }
            }
        }
    }

    /// `into[rows, columns] = normed · w (+ bias)`.
    private func project(_ w: [Float], bias: [Float], columns: Int, rows: Int, into result: inout [Float]) {
        normed.withUnsafeBufferPointer { x in
            w.withUnsafeBufferPointer { weight in
                result.withUnsafeMutableBufferPointer { y in
                    BLAS.multiply(rows: rows, columns: columns, inner: dModel, x.baseAddress!, weight.baseAddress!, into: y.baseAddress!)
                    guard !bias.isEmpty else { return }
                    for row in 0..<rows { for column in 0..<columns { y[row * columns + column] += bias[column] } }
                }
            }
        }
    }

    /// The query/key RMSNorm: per head (width D, `heads` rows per token) or over the projection.
    private func normalise(_ values: inout [Float], _ norm: RMSNorm?, rows: Int, heads: Int) {
        guard let norm else { return }
        let normRows = norm.scale.count == config.headDim ? rows * heads : rows
        var copy = Array(values[0..<rows * heads * config.headDim])
        copy.withUnsafeMutableBufferPointer { source in
            values.withUnsafeMutableBufferPointer { target in norm.apply(source.baseAddress!, rows: normRows, into: target.baseAddress!) }
        }
    }

    /// `mixed[row, head] = Σ_j softmax_j(q·k_j / √D) · v_j` over the row's sequence's slots
    /// `cacheStart + j`, j in the window up to its position. A run of rows of one sequence (a
    /// prefill) runs as GEMMs per head — scores `Q·Kᵀ` over the run's whole context, causal and
    /// window masks, softmax, then `P·V` — single rows (decode) as dot products.
    private func attend(rows: [RowPosition], layer: Int, cache: KVCache, sinks: [Float]) {
        for run in Self.runs(rows) {
            if run.count > 1 { attendRun(rows, run, layer: layer, cache: cache, sinks: sinks) } else { attendRows(rows, run, layer: layer, cache: cache, sinks: sinks) }
        }
    }

    /// `rows` cut into runs of one sequence's consecutive positions.
    static func runs(_ rows: [RowPosition]) -> [Range<Int>] {
        var runs: [Range<Int>] = []
        var start = 0
        while start < rows.count {
            var end = start + 1
            while end < rows.count, rows[end].cacheStart == rows[start].cacheStart, rows[end].position == rows[end - 1].position + 1 { end += 1 }
            runs.append(start..<end)
            start = end
        }
        return runs
    }

    /// Softmax over `line[visible]` of the scaled scores, zero elsewhere in `0..<width`; a sink
    /// logit (nil: none) joins the normalisation without a place in the line.
    static func softmax(_ line: UnsafeMutablePointer<Float>, width: Int, visible: Range<Int>, scale: Float, sink: Float?) {
        var largest = sink ?? -Float.infinity
        for j in visible { line[j] *= scale; largest = max(largest, line[j]) }
        var total: Float = sink.map { exp($0 - largest) } ?? 0
        for j in 0..<width {
            if visible.contains(j) {
                line[j] = exp(line[j] - largest)
                total += line[j]
            } else {
                line[j] = 0
            }
        }
        for j in visible { line[j] /= total }
    }

    /// One sequence's consecutive rows `run` as GEMMs per query head.
    private func attendRun(_ rows: [RowPosition], _ run: Range<Int>, layer: Int, cache: KVCache, sinks: [Float]) {
        let (heads, headDim) = (config.heads, config.headDim)
        let group = heads / config.kvHeads
        let (q, kv) = (heads * headDim, config.kvHeads * headDim)
        let count = run.count
        let base = rows[run.lowerBound].cacheStart
        let firstPosition = rows[run.lowerBound].position, lastPosition = rows[run.upperBound - 1].position
        // Keys from the first position any row of the run may see.
        let window = config.window(layer: layer)
        let from = window.map { max(0, firstPosition - $0 + 1) } ?? 0
        let context = lastPosition + 1 - from
        Self.grow(&scores, to: count * context)
        cache.withLayer(layer) { cachedKeys, cachedValues in
            queries.withUnsafeBufferPointer { qs in
                mixed.withUnsafeMutableBufferPointer { out in
                    scores.withUnsafeMutableBufferPointer { score in
                        for head in 0..<heads {
                            let offset = (head / group) * headDim
                            let query = qs.baseAddress! + run.lowerBound * q + head * headDim
                            BLAS.multiplyStrided(rows: count, columns: context, inner: headDim, query, leadingA: q,
                                                 cachedKeys + (base + from) * kv + offset, leadingB: kv, transposeB: true,
                                                 into: score.baseAddress!, leadingC: context)
                            for row in 0..<count {
                                let position = firstPosition + row
                                let visible = (window.map { max(0, position - $0 + 1) } ?? 0) - from..<position + 1 - from
                                Self.softmax(score.baseAddress! + row * context, width: context, visible: visible, scale: scale,
                                             sink: sinks.isEmpty ? nil : sinks[head])
                            }
                            BLAS.multiplyStrided(rows: count, columns: headDim, inner: context, score.baseAddress!, leadingA: context,
                                                 cachedValues + (base + from) * kv + offset, leadingB: kv, transposeB: false,
                                                 into: out.baseAddress! + run.lowerBound * q + head * headDim, leadingC: q)
                        }
                    }
                }
            }
        }
    }

    /// Rows one by one (decode: one row per sequence): per key/value head, the query heads that
    /// share it score against the sequence's cached keys as one small GEMM (`[group, D] · Kᵀ`),
    /// then mix its values as another (`P · V`).
    private func attendRows(_ rows: [RowPosition], _ range: Range<Int>, layer: Int, cache: KVCache, sinks: [Float]) {
        let (heads, headDim, kvHeads) = (config.heads, config.headDim, config.kvHeads)
        let group = heads / kvHeads
        let (q, kv) = (heads * headDim, kvHeads * headDim)
        let window = config.window(layer: layer)
        Self.grow(&scores, to: group * config.maxPositions)
        cache.withLayer(layer) { cachedKeys, cachedValues in
            queries.withUnsafeBufferPointer { qs in
                mixed.withUnsafeMutableBufferPointer { out in
                    scores.withUnsafeMutableBufferPointer { score in
                        for row in range {
                            let place = rows[row]
                            let first = window.map { max(0, place.position - $0 + 1) } ?? 0
                            let context = place.position + 1 - first
                            for kvHead in 0..<kvHeads {
                                let firstHead = kvHead * group
                                BLAS.multiplyStrided(rows: group, columns: context, inner: headDim, qs.baseAddress! + row * q + firstHead * headDim, leadingA: headDim,
                                                     cachedKeys + (place.cacheStart + first) * kv + kvHead * headDim, leadingB: kv, transposeB: true,
                                                     into: score.baseAddress!, leadingC: context)
                                for member in 0..<group {
                                    Self.softmax(score.baseAddress! + member * context, width: context, visible: 0..<context, scale: scale,
                                                 sink: sinks.isEmpty ? nil : sinks[firstHead + member])
                                }
                                BLAS.multiplyStrided(rows: group, columns: headDim, inner: context, score.baseAddress!, leadingA: context,
                                                     cachedValues + (place.cacheStart + first) * kv + kvHead * headDim, leadingB: kv, transposeB: false,
                                                     into: out.baseAddress! + row * q + firstHead * headDim, leadingC: headDim)
                            }
                        }
                    }
                }
            }
        }
    }
}
