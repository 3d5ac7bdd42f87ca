import MoE

// The token dispatcher's pure parts: functions over buffers, no communication, no state.
// `Tests/ExpertParallelTests` checks each against plain loops; `moe-bench pack` times `pack`.
//
// Layouts (all row-major Float32, `width` = d_model floats per row):
// - token rows: `[tokenCount, width]`, the rank's normalised hidden states;
// - a pack: for each expert of a list, in list order, that expert's slots in slot order (one
//   row per kept route, the token's row);
// - received rows: blocks by source rank at `receiveDisplacements[source]`; inside a block, the
//   source's rows for each local expert in expert order (`rowsFrom[source][localExpert]` rows);
// - an expert's gathered rows: its rows from every source, source by source, slot order.
extension TokenDispatcher {
    /// Copies, for each expert of `experts` in order, the token row of each of its slots
    /// (`slotRoutes[e][s]` is the route `r · tokenCount + t` holding slot s) to consecutive rows
    /// of `destination`. Returns the rows written. Rows leave in expert order, slot order within
    /// an expert — with experts placed in contiguous blocks by rank, that is destination-rank
    /// order, which is the dispatch layout.
    @discardableResult
    package nonisolated static func pack<Experts: Sequence<Int>>(
        tokenRows source: UnsafePointer<Float>, width: Int, tokenCount: Int, slotRoutes: [[Int]], experts: Experts,
        into destination: UnsafeMutablePointer<Float>
    ) -> Int {
        var row = 0
        for expert in experts {
            for route in slotRoutes[expert] {
                (destination + row * width).update(from: source + (route % tokenCount) * width, count: width)
                row += 1
            }
        }
        return row
    }

    /// The first received row of local expert `localExpert` from each source: its block's start
    /// plus the rows the source sent the local experts before it.
    nonisolated static func expertOffsets(receiveDisplacements: [Int], rowsFrom: [[Int]], localExpert: Int) -> [Int] {
        rowsFrom.indices.map { source in receiveDisplacements[source] + rowsFrom[source][..<localExpert].reduce(0, +) }
    }

    /// Gathers local expert `localExpert`'s received rows, source by source, into consecutive rows
    /// of `expertRows` (the expert's one GEMM input). Returns the row count.
    @discardableResult
    nonisolated static func gather(
        received: UnsafePointer<Float>, width: Int, receiveDisplacements: [Int], rowsFrom: [[Int]], localExpert: Int,
        into expertRows: UnsafeMutablePointer<Float>
    ) -> Int {
        let offsets = expertOffsets(receiveDisplacements: receiveDisplacements, rowsFrom: rowsFrom, localExpert: localExpert)
        var cursor = 0
        for source in rowsFrom.indices where rowsFrom[source][localExpert] > 0 {
            let rows = rowsFrom[source][localExpert]
            (expertRows + cursor * width).update(from: received + offsets[source] * width, count: rows * width)
            cursor += rows
        }
        return cursor
    }

    /// The inverse of `gather`: puts the expert's output rows back where its input rows were
    /// received, so the combine sends each source its rows in the order it packed them.
    nonisolated static func scatter(
        expertRows: UnsafePointer<Float>, width: Int, receiveDisplacements: [Int], rowsFrom: [[Int]], localExpert: Int,
        into received: UnsafeMutablePointer<Float>
    ) {
        let offsets = expertOffsets(receiveDisplacements: receiveDisplacements, rowsFrom: rowsFrom, localExpert: localExpert)
        var cursor = 0
        for source in rowsFrom.indices where rowsFrom[source][localExpert] > 0 {
            let rows = rowsFrom[source][localExpert]
            (received + offsets[source] * width).update(from: expertRows + cursor * width, count: rows * width)
            cursor += rows
        }
    }

    /// A residual (PR-MoE) layer's share of the weighted sum: per token, `coefficients[2t]` =
    /// a_mlp and `coefficients[2t + 1]` = a_expert (`ResidualMixture`), and the dense MLP's
    /// output rows `[tokenCount, width]`.
    struct ResidualShare {
        let coefficients: UnsafePointer<Float>
        let dense: UnsafePointer<Float>
    }

    /// Adds each token's weighted expert outputs to its hidden state, in original token order:
    /// `hidden[t] += Σ_r g_r · combined[row of route r of t]` summed in choice order (a residual
    /// layer: `Σ_r (a_expert · g_r) · row + a_mlp · dense[t]`). `combined` holds the combine's
    /// result in pack order (all experts, slot order), so route (t, r) is at row
    /// `Σ_{e < expert} kept[e] + slot`. `scratch` holds `width` floats.
    ///
    /// The sum is accumulated in `scratch` and added once, with the scalar operation order of
    /// the reference (`accumulate`), so the result is bitwise the reference's.
    nonisolated static func weightedSum(
        combined: UnsafePointer<Float>, width: Int, plan: RoutingPlan, residual: ResidualShare?,
        scratch: UnsafeMutablePointer<Float>, into hidden: UnsafeMutablePointer<Float>
    ) {
        let tokens = plan.tokenCount
        let kept = plan.keptPerExpert
        var expertStart = [Int](repeating: 0, count: plan.expertCount)  // first packed row of each expert
        for expert in 1..<max(plan.expertCount, 1) { expertStart[expert] = expertStart[expert - 1] + kept[expert - 1] }
        for token in 0..<tokens {
            scratch.update(repeating: 0, count: width)
            // Expert scale: the combine weight, times a_expert in a residual layer.
            let expertScale = residual.map { $0.coefficients[2 * token + 1] } ?? 1
            for r in 0..<plan.topK {
                let route = r * tokens + token
                let expert = plan.expert[route]
                guard expert >= 0 else { continue }
                let row = combined + (expertStart[expert] + plan.slot[route]) * width
                let weight = residual == nil ? plan.gate[route] : expertScale * plan.gate[route]
                accumulate(scratch, plus: weight, times: row, count: width)
            }
            if let residual {
                accumulate(scratch, plus: residual.coefficients[2 * token], times: residual.dense + token * width, count: width)
            }
            accumulate(hidden + token * width, plus: 1, times: scratch, count: width)
        }
    }

    /// `target[i] += scale * source[i]` for `count` floats, eight lanes at a time. Each element
    /// gets exactly the scalar operations (a multiply, then an add; no fused multiply-add), so
    /// the result is bitwise the reference's scalar loop.
    @inline(__always)
    nonisolated static func accumulate(_ target: UnsafeMutablePointer<Float>, plus scale: Float, times source: UnsafePointer<Float>, count: Int) {
        var index = 0
        let factor = SIMD8<Float>(repeating: scale)
        while index + 8 <= count {
            let raw = UnsafeMutableRawPointer(target + index)
            let product = factor * UnsafeRawPointer(source + index).loadUnaligned(as: SIMD8<Float>.self)
            raw.storeBytes(of: raw.loadUnaligned(as: SIMD8<Float>.self) + product, as: SIMD8<Float>.self)
            index += 8
        }
        while index < count {
            target[index] += scale * source[index]
            index += 1
        }
    }
}
