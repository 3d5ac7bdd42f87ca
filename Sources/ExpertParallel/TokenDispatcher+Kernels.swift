import MoE

// The token dispatcher's pure parts: functions over buffers, no communication, no state.
// `Tests/ExpertParallelTests` checks each against plain loops; `moe-bench pack` times `pack`.
//
// Layouts (all row-major Float32, `width` = d_model floats per row):
// - token rows: `[tokenCount, width]`, the rank's normalised hidden states;
// - a pack: the token row of each kept route in `PackOrder` (by destination, slot, then the
//   source's share of the slot's expert in slot order);
// - received rows: blocks by source rank at `receiveDisplacements[source]`; inside a block, the
//   source's rows for each local slot in slot order (`rowsFrom[source][localSlot]` rows);
// - a slot's gathered rows: its rows from every source, source by source, slot order.
extension TokenDispatcher {
    /// Where this rank's kept routes go and in which order they leave: destination by
    /// destination (group ranks ascending), inside a destination slot by slot, inside a slot the
    /// source's share of that expert's slots in slot order (`ExpertSlots.share`). With one
    /// replica per expert in contiguous blocks this is expert order, slot order — the layout
    /// before expert slots existed.
    struct PackOrder: Equatable {
        /// The route (`r · tokenCount + t`) of each packed row, in pack order.
        var routes: [Int]
        /// Rows to each group rank.
        var sendCounts: [Int]
        /// `rowsPerSlot[d][j]`: rows to slot j of group rank d (what d's header says).
        var rowsPerSlot: [[Int]]
        /// The packed row of each route (indexed `r · tokenCount + t`), -1 for a dropped route.
        var rowOfRoute: [Int]

        /// `slotRoutes[e]` and `kept[e]` as `RoutingPlan.slotRoutes()` and `keptPerExpert` give
        /// them (empty and zeros when routing failed); `routeCount` = tokens · k.
        init(slotRoutes: [[Int]], kept: [Int], slots: ExpertSlots, routeCount: Int) {
            routes = []
            routes.reserveCapacity(kept.reduce(0, +))
            rowOfRoute = [Int](repeating: -1, count: routeCount)
            sendCounts = []
            rowsPerSlot = []
            for destination in 0..<slots.ranks {
                let first = routes.count
                var perSlot: [Int] = []
                for (slot, expert) in slots.slots[destination].enumerated() {
                    let replica = slots.replicaIndex(rank: destination, slot: slot)
                    let share = ExpertSlots.share(replica: replica, of: slots.replicas[expert].count, rows: kept[expert])
                    for route in slotRoutes.isEmpty ? [] : slotRoutes[expert][share] {
                        rowOfRoute[route] = routes.count
                        routes.append(route)
                    }
                    perSlot.append(share.count)
                }
                sendCounts.append(routes.count - first)
                rowsPerSlot.append(perSlot)
            }
        }
    }

    /// Copies the token row of each route of `routes` (`r · tokenCount + t` → row t) to
    /// consecutive rows of `destination`. Returns the rows written.
    @discardableResult
    package nonisolated static func pack<Routes: Sequence<Int>>(
        tokenRows source: UnsafePointer<Float>, width: Int, tokenCount: Int, routes: Routes,
        into destination: UnsafeMutablePointer<Float>
    ) -> Int {
        var row = 0
        for route in routes {
            (destination + row * width).update(from: source + (route % tokenCount) * width, count: width)
            row += 1
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
    /// result in pack order, so route (t, r) is at row `rowOfRoute[r · T + t]` (`PackOrder`).
    /// `scratch` holds `width` floats.
    ///
    /// The sum is accumulated in `scratch` and added once, with the scalar operation order of
    /// the reference (`accumulate`), so the result is bitwise the reference's.
    nonisolated static func weightedSum(
        combined: UnsafePointer<Float>, width: Int, plan: RoutingPlan, rowOfRoute: [Int], residual: ResidualShare?,
        scratch: UnsafeMutablePointer<Float>, into hidden: UnsafeMutablePointer<Float>
    ) {
        let tokens = plan.tokenCount
        for token in 0..<tokens {
            scratch.update(repeating: 0, count: width)
            // Expert scale: the combine weight, times a_expert in a residual layer.
            let expertScale = residual.map { $0.coefficients[2 * token + 1] } ?? 1
            for r in 0..<plan.topK {
                let route = r * tokens + token
                guard plan.expert[route] >= 0 else { continue }
                let row = combined + rowOfRoute[route] * width
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
