import Exchange
import MessagePassing
import MoE

/// Why a distributed layer step failed. Every rank throws the same case (the ranks learn each
/// other's status in the count exchange), so no rank is left inside a collective.
public enum MoELayerError: Error, CustomStringConvertible {
    /// Routing failed on `rank` (lowest failing rank); `detail` is the cause where this rank
    /// is the one that failed, nil elsewhere.
    case routingFailed(layer: Int, rank: Int, detail: RoutingError?)
    case exchange(layer: Int, ExchangeError)

    public var description: String {
        switch self {
        case let .routingFailed(layer, rank, detail):
            return "layer \(layer): routing failed on rank \(rank)" + (detail.map { ": \($0)" } ?? "")
        case let .exchange(layer, error): return "layer \(layer): \(error)"
        }
    }
}

/// How a layer sizes its dispatch blocks when it skips the count exchange (plan caching).
public enum PlanCacheMode: Equatable, Sendable {
    /// Blocks as large as the senders' capacities allow (from last step's token counts and
    /// this step's capacity plan): never overflows while token counts stay the same, at the
    /// price of padding up to capacity.
    case capacity
    /// Blocks of last step's rows × (1 + headroom) + 1: less padding, but a step whose rows
    /// grow past that falls back to the count exchange.
    case observed(headroom: Double)
}

/// One expert-parallel MoE layer on one rank: router → pack by destination → dispatch → expert
/// FFNs → combine → weighted sum in original token order, added to the residual stream. A
/// residual (PR-MoE) layer also runs its dense MLP on every local token and mixes the two by the
/// per-token coefficient (`ResidualMixture`).
///
/// The layer runs on its expert-parallel group's communicator (the whole world unless the layer
/// has fewer experts than ranks, see `ExpertPlacement`); ranks below are ranks in that group.
///
/// Buffers are owned here and reused every step (they grow to the largest step seen and never
/// shrink). Wire layout, both exchanges: the block for rank d holds d's local experts in order,
/// each expert's kept rows in slot order. Before the tokens, a count message to every rank d
/// carries `[status, kept rows for each of d's experts]` — its size is known to both sides from
/// the placement, so it needs no count exchange of its own, and the status word lets every rank
/// learn that another rank's router failed before anyone enters the token exchange.
@MainActor
public final class MoELayer {
    public let index: Int
    public let configuration: LayerConfiguration
    public let model: ModelConfiguration
    public let weights: LayerWeights
    /// How this rank's group spreads the layer's experts over the group's ranks.
    public let placement: ExpertBlocks
    private let exchange: any AllToAll
    private let communicator: Communicator
    /// World rank of every rank of the layer's group, and the world size (for per-peer volumes).
    private let groupWorldRanks: [Int]
    private let worldSize: Int
    private let workspace = ExpertWorkspace()
    /// Rows each of this rank's experts received in the last step (its GEMM row counts), in
    /// expert order.
    public private(set) var receivedRowsPerExpert: [Int] = []

    /// Plan caching: when set, a step's dispatch reuses block sizes known from the previous step
    /// and carries the counts in a header row of each block, skipping the separate count
    /// exchange; a step whose rows do not fit falls back to the count exchange.
    public var planCache: PlanCacheMode?
    /// Where the watchdog learns this rank's phase (nil: no watchdog).
    public var beacon: ProgressBeacon?
    /// Rows this rank may send each group peer / receive from it under the cached plan
    /// (observed mode), and every group rank's token count last step (capacity mode).
    private var cachedRowsTo: [Int]?
    private var cachedRowsFrom: [Int]?
    private var lastTokensOf: [Int]?
    /// Plan-cache outcomes and the count exchanges' cost (for reports).
    public private(set) var planCacheHits = 0
    public private(set) var planCacheMisses = 0
    public private(set) var countExchanges = 0
    public private(set) var countExchangeSeconds = 0.0
    /// Padding rows sent under the cached plan (bytes).
    public private(set) var planCachePaddingBytes = 0
    private var compactRows: [Float] = []
    /// A block header `[status, tokens, rows for each of the destination's experts]` (Ints) fits in one row.
    private var headerRowFits: Bool {
        let most = (0..<communicator.size).map { placement.experts(of: $0).count }.max() ?? 0
        return (2 + most) * MemoryLayout<Int>.stride <= model.dModel * MemoryLayout<Float>.stride
    }

    /// Block sizes (rows, without the header) to and from every group rank under the cached
    /// plan, or nil when there is none yet. Capacity mode: source s can send expert e at most
    /// its capacity for s's token count, so the block s → d is Σ over d's experts of that
    /// capacity — computed alike on both sides from s's last token count and this step's
    /// capacity plan, and never exceeded unless s's token count changed. Observed mode: last
    /// step's rows with headroom. Dropless layers have no bound and use observed sizes.
    private func cachedBlocks(capacity: LayerCapacity) -> (to: [Int], from: [Int])? {
        guard let planCache else { return nil }
        if case .capacity = planCache, let lastTokensOf, !configuration.isDropless {
            let here = communicator.rank
            func block(source: Int, destination: Int) -> Int {
                let capacities = Router.capacities(tokenCount: lastTokensOf[source], layer: configuration, plan: capacity) ?? []
                return placement.experts(of: destination).reduce(0) { $0 + capacities[$1] }
            }
            return ((0..<communicator.size).map { block(source: here, destination: $0) },
                    (0..<communicator.size).map { block(source: $0, destination: here) })
        }
        guard let cachedRowsTo, let cachedRowsFrom else { return nil }
        return (cachedRowsTo, cachedRowsFrom)
    }

    private enum SpeculativeOutcome {
        case hit([[Int]])
        case miss
        case failed(Int)
    }

    /// The dispatch under the cached plan: to every peer one block of exactly the cached size,
    /// a header row `[status, tokens, kept rows for each of the peer's experts]`, the rows, then
    /// padding. Status 0 = fits, 1 = this rank's router failed, 2 = some block of this rank
    /// overflowed its cached size. Every rank receives every rank's header, so all agree: any 1
    /// ends the step as a routing failure, any 2 makes it a miss (the caller falls back to the
    /// count exchange), otherwise the rows are compacted into the exact layout and the count
    /// exchange is skipped.
    private func dispatchSpeculatively(
        plan: RoutingPlan?, slotRoutes: [[Int]], kept: [Int], sendCounts: [Int], rowsTo: [Int], rowsFrom cached: [Int],
        tokens: Int
    ) throws(MoELayerError) -> SpeculativeOutcome {
        let d = model.dModel
        let ranks = communicator.size
        let rowBytes = d * MemoryLayout<Float>.stride
        let intBytes = MemoryLayout<Int>.stride
        let overflow = plan != nil && zip(sendCounts, rowsTo).contains { $0 > $1 }
        let status = plan == nil ? 1 : (overflow ? 2 : 0)
        let layout = ExchangeLayout(sendCounts: rowsTo.map { $0 + 1 }, receiveCounts: cached.map { $0 + 1 })!
        Self.grow(&sendRows, to: layout.sendRows * d)
        Self.grow(&receiveRows, to: layout.receiveRows * d)
        normed.withUnsafeBufferPointer { source in
            sendRows.withUnsafeMutableBufferPointer { destination in
                let raw = UnsafeMutableRawPointer(destination.baseAddress!)
                for peer in 0..<ranks {
                    let base = layout.sendDisplacements[peer]
                    raw.storeBytes(of: status, toByteOffset: base * rowBytes, as: Int.self)
                    raw.storeBytes(of: tokens, toByteOffset: base * rowBytes + intBytes, as: Int.self)
                    for (position, expert) in placement.experts(of: peer).enumerated() {
                        raw.storeBytes(of: kept[expert], toByteOffset: base * rowBytes + (2 + position) * intBytes, as: Int.self)
                    }
                    guard status == 0 else { continue }
                    var row = base + 1
                    for expert in placement.experts(of: peer) {
                        for route in slotRoutes[expert] {
                            (destination.baseAddress! + row * d).update(from: source.baseAddress! + (route % tokens) * d, count: d)
                            row += 1
                        }
                    }
                }
            }
        }
        do { try exchange.exchange(sendRows, into: &receiveRows, layout: layout, rowBytes: rowBytes) } catch {
            throw .exchange(layer: index, error)
        }
        let localCount = placement.experts(of: communicator.rank).count
        var counts = [[Int]](repeating: [], count: ranks)
        var tokensOf = [Int](repeating: 0, count: ranks)
        var failed: Int?
        var anyOverflow = false
        receiveRows.withUnsafeBytes { raw in
            for source in 0..<ranks {
                let offset = layout.receiveDisplacements[source] * rowBytes
                switch raw.loadUnaligned(fromByteOffset: offset, as: Int.self) {
                case 0: break
                case 1: if failed == nil { failed = source }
                default: anyOverflow = true
                }
                tokensOf[source] = raw.loadUnaligned(fromByteOffset: offset + intBytes, as: Int.self)
                counts[source] = (0..<localCount).map { raw.loadUnaligned(fromByteOffset: offset + (2 + $0) * intBytes, as: Int.self) }
            }
        }
        if let failed { return .failed(failed) }
        if anyOverflow { return .miss }
        lastTokensOf = tokensOf
        let total = counts.reduce(0) { $0 + $1.reduce(0, +) }
        Self.grow(&compactRows, to: total * d)
        receiveRows.withUnsafeBufferPointer { padded in
            compactRows.withUnsafeMutableBufferPointer { exact in
                var cursor = 0
                for source in 0..<ranks {
                    let rows = counts[source].reduce(0, +)
                    guard rows > 0 else { continue }
                    (exact.baseAddress! + cursor * d).update(from: padded.baseAddress! + (layout.receiveDisplacements[source] + 1) * d, count: rows * d)
                    cursor += rows
                }
            }
        }
        swap(&receiveRows, &compactRows)
        planCachePaddingBytes += (layout.sendRows - ranks - sendCounts.reduce(0, +)) * rowBytes
        return .hit(counts)
    }

    // Reused buffers (row-major, dModel floats per row unless noted).
    private var normed: [Float] = []
    private var logits: [Float] = []        // [T, E]
    private var sendRows: [Float] = []      // dispatch send = combine receive layout
    private var receiveRows: [Float] = []   // dispatch receive = combine send layout
    private var combined: [Float] = []      // combine receive
    private var expertInput: [Float] = []
    private var expertOutput: [Float] = []
    private var mixture: [Float] = []
    private var denseOutput: [Float] = []
    private var coefficients: [Float] = []    // [T, 2]: (a_mlp, a_expert)

    /// `exchange` runs on the group communicator; `placement` is the group's blocks, and
    /// `weights` must hold exactly this rank's block (and the residual weights for a residual layer).
    public init(index: Int, configuration: LayerConfiguration, model: ModelConfiguration, weights: LayerWeights,
                placement: ExpertBlocks, exchange: any AllToAll, groupWorldRanks: [Int]? = nil, worldSize: Int? = nil) {
        precondition(weights.heldExperts == placement.experts(of: exchange.communicator.rank))
        precondition(placement.ranks == exchange.communicator.size && placement.experts == configuration.experts)
        precondition(configuration.residual == (weights.residual != nil))
        self.index = index
        self.configuration = configuration
        self.model = model
        self.weights = weights
        self.placement = placement
        self.exchange = exchange
        self.communicator = exchange.communicator
        self.groupWorldRanks = groupWorldRanks ?? Array(0..<exchange.communicator.size)
        self.worldSize = worldSize ?? exchange.communicator.size
        precondition(self.groupWorldRanks.count == exchange.communicator.size)
    }

    /// `target[i] += scale * source[i]` for `count` floats, eight lanes at a time. Each element
    /// gets exactly the scalar operations (a multiply, then an add; no fused multiply-add), so
    /// the result is bitwise the reference's scalar loop.
    @inline(__always)
    static func accumulate(_ target: UnsafeMutablePointer<Float>, plus scale: Float, times source: UnsafePointer<Float>, count: Int) {
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

    private static func grow(_ buffer: inout [Float], to count: Int) {
        if buffer.count < count { buffer = [Float](repeating: 0, count: count) }
    }

    /// Runs the layer on this rank's tokens: `hidden` (row-major `[T, dModel]`) becomes
    /// `hidden + MoE(LayerNorm(hidden))`. Collective over the layer's communicator. `capacity`
    /// is this step's capacity plan for the layer, `bias` the drifting workload's gate bias.
    public func forward(
        _ hidden: inout [Float], taskIds: [Int], capacity: LayerCapacity = .configured, bias: [Float]? = nil,
        times: inout PhaseTimes, volume: inout ExchangeVolume
    ) throws(MoELayerError) -> RoutingPlan {
        let d = model.dModel
        let tokens = hidden.count / d
        let experts = configuration.experts
        let ranks = communicator.size
        let rowBytes = d * MemoryLayout<Float>.stride

        // Gate: norm, logits, routing.
        beacon?.enter(layer: index, phase: "gate")
        var clock = MPIRuntime.wallTime()
        Self.grow(&normed, to: tokens * d)
        hidden.withUnsafeBufferPointer { input in
            normed.withUnsafeMutableBufferPointer { output in
                if tokens > 0 { weights.norm.apply(input.baseAddress!, rows: tokens, into: output.baseAddress!) }
            }
        }
        var routing: Result<RoutingPlan, RoutingError>
        if !model.taskExperts.isEmpty {
            routing = Result { () throws(RoutingError) in
                try Router.route(taskIds: taskIds, taskExperts: model.taskExperts, layer: configuration, capacity: capacity)
            }
        } else {
            Self.grow(&logits, to: tokens * experts)
            if tokens > 0 {
                normed.withUnsafeBufferPointer { x in
                    weights.gate.withUnsafeBufferPointer { gate in
                        logits.withUnsafeMutableBufferPointer { out in
                            BLAS.multiply(rows: tokens, columns: experts, inner: d, x.baseAddress!, gate.baseAddress!, into: out.baseAddress!)
                        }
                    }
                }
            }
            routing = logits.withUnsafeBufferPointer { buffer in
                Result { () throws(RoutingError) in
                    try Router.route(logits: UnsafeBufferPointer(rebasing: buffer[0..<tokens * experts]), tokenCount: tokens, layer: configuration,
                                     capacity: capacity, bias: bias)
                }
            }
        }
        if let residual = weights.residual {
            coefficients = normed.withUnsafeBufferPointer { x in
                ResidualMixture.coefficients(normed: x.baseAddress!, rows: tokens, dModel: d, weights: residual)
            }
        }
        var now = MPIRuntime.wallTime()
        times.gate += now - clock
        clock = now
        beacon?.enter(phase: "dispatch")

        let plan = try? routing.get()
        let kept = plan?.keptPerExpert ?? [Int](repeating: 0, count: experts)
        let localExperts = placement.experts(of: communicator.rank)
        let sendCounts = (0..<ranks).map { destination in placement.experts(of: destination).reduce(0) { $0 + kept[$1] } }
        let slotRoutes = plan?.slotRoutes() ?? []

        // rowsFrom[s][j]: rows source s sends for local expert j.
        var rowsFrom = [[Int]](repeating: [], count: ranks)
        var failedRank: Int?
        var dispatched = false
        if let blocks = cachedBlocks(capacity: capacity), headerRowFits {
            switch try dispatchSpeculatively(plan: plan, slotRoutes: slotRoutes, kept: kept, sendCounts: sendCounts,
                                             rowsTo: blocks.to, rowsFrom: blocks.from, tokens: tokens) {
            case let .hit(counts):
                rowsFrom = counts
                dispatched = true
                planCacheHits += 1
            case let .failed(rank):
                failedRank = rank
            case .miss:
                planCacheMisses += 1
            }
        }
        if !dispatched && failedRank == nil {
            // Count message: [status, kept rows for each of d's experts] to every rank d.
            let countStart = MPIRuntime.wallTime()
            var countMessage: [Int] = []
            countMessage.reserveCapacity(experts + ranks)
            var countSendRows: [Int] = []
            for destination in 0..<ranks {
                countMessage += [plan == nil ? 1 : 0, tokens]
                for expert in placement.experts(of: destination) { countMessage.append(kept[expert]) }
                countSendRows.append(2 + placement.experts(of: destination).count)
            }
            let countReceiveRows = [Int](repeating: 2 + localExperts.count, count: ranks)
            var countReply = [Int](repeating: 0, count: countReceiveRows.reduce(0, +))
            let countLayout = ExchangeLayout(sendCounts: countSendRows, receiveCounts: countReceiveRows)!
            do { try exchange.exchange(countMessage, into: &countReply, layout: countLayout, rowBytes: MemoryLayout<Int>.stride) } catch {
                throw .exchange(layer: index, error)
            }
            var tokensOf = [Int](repeating: 0, count: ranks)
            for source in 0..<ranks {
                let base = source * (2 + localExperts.count)
                if countReply[base] != 0, failedRank == nil { failedRank = source }
                tokensOf[source] = countReply[base + 1]
                rowsFrom[source] = Array(countReply[base + 2..<base + 2 + localExperts.count])
            }
            lastTokensOf = tokensOf
            countExchanges += 1
            countExchangeSeconds += MPIRuntime.wallTime() - countStart
        }
        if let failedRank {
            if case let .failure(error) = routing, failedRank == communicator.rank {
                throw .routingFailed(layer: index, rank: failedRank, detail: error)
            }
            throw .routingFailed(layer: index, rank: failedRank, detail: nil)
        }
        guard let plan else { preconditionFailure("a failed router reports status 1") }
        now = MPIRuntime.wallTime()
        times.dispatch += now - clock
        clock = now
        receivedRowsPerExpert = (0..<localExperts.count).map { local in rowsFrom.reduce(0) { $0 + $1[local] } }

        // Residual layer: the dense MLP over every local token, one GEMM pair.
        if let residual = weights.residual, tokens > 0 {
            Self.grow(&denseOutput, to: tokens * d)
            normed.withUnsafeBufferPointer { input in
                denseOutput.withUnsafeMutableBufferPointer { output in
                    ExpertFFN.forward(residual.dense, activation: model.activation, dModel: d, dFF: model.dFF,
                                      input: input.baseAddress!, rows: tokens, output: output.baseAddress!, workspace: workspace)
                }
            }
            now = MPIRuntime.wallTime()
            times.dense += now - clock
            clock = now
        }

        // Pack: kept rows by destination rank, expert, slot.
        let receiveCounts = rowsFrom.map { $0.reduce(0, +) }
        let layout = ExchangeLayout(sendCounts: sendCounts, receiveCounts: receiveCounts)!
        if !dispatched {
            Self.grow(&sendRows, to: layout.sendRows * d)
            normed.withUnsafeBufferPointer { source in
                sendRows.withUnsafeMutableBufferPointer { destination in
                    // Blocks are in destination order and experts are placed contiguously, so the
                    // send buffer is simply every expert's slots in expert order.
                    var row = 0
                    for expert in 0..<experts {
                        for route in slotRoutes[expert] {
                            let token = route % tokens
                            (destination.baseAddress! + row * d).update(from: source.baseAddress! + token * d, count: d)
                            row += 1
                        }
                    }
                }
            }
            now = MPIRuntime.wallTime()
            times.pack += now - clock
            clock = now

            // Dispatch.
            Self.grow(&receiveRows, to: layout.receiveRows * d)
            do { try exchange.exchange(sendRows, into: &receiveRows, layout: layout, rowBytes: rowBytes) } catch {
                throw .exchange(layer: index, error)
            }
        }
        // The next step's cached plan: this step's rows plus headroom; both sides of every pair
        // compute it from the same numbers (what one sent is what the other received).
        if case let .observed(headroom) = planCache {
            func allowance(_ rows: Int) -> Int { Int((Double(rows) * (1 + headroom)).rounded(.up)) + 1 }
            cachedRowsTo = layout.sendCounts.map(allowance)
            cachedRowsFrom = layout.receiveCounts.map(allowance)
        }
        volume.dispatchBytesSent += layout.sendRows * rowBytes
        if volume.dispatchBytesSentTo.count != worldSize {
            volume.dispatchBytesSentTo = [Int](repeating: 0, count: worldSize)
            volume.dispatchBytesReceivedFrom = [Int](repeating: 0, count: worldSize)
        }
        for (peer, world) in groupWorldRanks.enumerated() {
            volume.dispatchBytesSentTo[world] += layout.sendCounts[peer] * rowBytes
            volume.dispatchBytesReceivedFrom[world] += layout.receiveCounts[peer] * rowBytes
        }
        now = MPIRuntime.wallTime()
        times.dispatch += now - clock
        clock = now
        beacon?.enter(phase: "experts")

        // Experts: gather each local expert's rows (source by source) into one contiguous
        // buffer, run the FFN, scatter the outputs back to the received positions.
        receiveRows.withUnsafeMutableBufferPointer { received in
            for (local, expert) in localExperts.enumerated() {
                let rows = rowsFrom.reduce(0) { $0 + $1[local] }
                guard rows > 0 else { continue }
                Self.grow(&expertInput, to: rows * d)
                Self.grow(&expertOutput, to: rows * d)
                expertInput.withUnsafeMutableBufferPointer { input in
                    var cursor = 0
                    for source in 0..<ranks where rowsFrom[source][local] > 0 {
                        let offset = layout.receiveDisplacements[source] + rowsFrom[source][..<local].reduce(0, +)
                        (input.baseAddress! + cursor * d).update(from: received.baseAddress! + offset * d, count: rowsFrom[source][local] * d)
                        cursor += rowsFrom[source][local]
                    }
                }
                let computeStart = MPIRuntime.wallTime()
                expertInput.withUnsafeBufferPointer { input in
                    expertOutput.withUnsafeMutableBufferPointer { output in
                        ExpertFFN.forward(weights.expert(expert), activation: model.activation, dModel: d, dFF: model.dFF,
                                          input: input.baseAddress!, rows: rows, output: output.baseAddress!, workspace: workspace)
                    }
                }
                times.expertCompute += MPIRuntime.wallTime() - computeStart
                expertOutput.withUnsafeBufferPointer { output in
                    var cursor = 0
                    for source in 0..<ranks where rowsFrom[source][local] > 0 {
                        let offset = layout.receiveDisplacements[source] + rowsFrom[source][..<local].reduce(0, +)
                        (received.baseAddress! + offset * d).update(from: output.baseAddress! + cursor * d, count: rowsFrom[source][local] * d)
                        cursor += rowsFrom[source][local]
                    }
                }
            }
        }
        now = MPIRuntime.wallTime()
        times.experts += now - clock
        clock = now
        beacon?.enter(phase: "combine")

        // Combine: the same blocks travel back; each route finds its row at the position it was
        // packed at, and the token's routes are summed in choice order.
        let combineLayout = ExchangeLayout(sendCounts: receiveCounts, receiveCounts: sendCounts)!
        Self.grow(&combined, to: layout.sendRows * d)
        do { try exchange.exchange(receiveRows, into: &combined, layout: combineLayout, rowBytes: rowBytes) } catch {
            throw .exchange(layer: index, error)
        }
        volume.combineBytesSent += layout.receiveRows * rowBytes
        var expertStart = [Int](repeating: 0, count: experts)  // first packed row of each expert
        for expert in 1..<max(experts, 1) { expertStart[expert] = expertStart[expert - 1] + kept[expert - 1] }
        Self.grow(&mixture, to: d)
        let residual = weights.residual != nil
        combined.withUnsafeBufferPointer { rows in
            mixture.withUnsafeMutableBufferPointer { sum in
                hidden.withUnsafeMutableBufferPointer { output in
                    denseOutput.withUnsafeBufferPointer { dense in
                        for token in 0..<tokens {
                            sum.update(repeating: 0)
                            // Expert scale: the combine weight, times a_expert in a residual layer.
                            let expertScale = residual ? coefficients[2 * token + 1] : 1
                            for r in 0..<plan.topK {
                                let route = r * tokens + token
                                let expert = plan.expert[route]
                                guard expert >= 0 else { continue }
                                let row = rows.baseAddress! + (expertStart[expert] + plan.slot[route]) * d
                                let weight = residual ? expertScale * plan.gate[route] : plan.gate[route]
                                Self.accumulate(sum.baseAddress!, plus: weight, times: row, count: d)
                            }
                            if residual {
                                Self.accumulate(sum.baseAddress!, plus: coefficients[2 * token], times: dense.baseAddress! + token * d, count: d)
                            }
                            Self.accumulate(output.baseAddress! + token * d, plus: 1, times: sum.baseAddress!, count: d)
                        }
                    }
                }
            }
        }
        times.combine += MPIRuntime.wallTime() - clock
        return plan
    }
}
