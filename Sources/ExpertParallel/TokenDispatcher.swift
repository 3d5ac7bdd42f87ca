import Exchange
import MessagePassing
import MoE

/// Why a distributed layer step failed. Every rank throws the same case (the ranks learn each
/// other's status in the count exchange), so no rank is left inside a collective.
package enum MoELayerError: Error, CustomStringConvertible {
    /// Routing failed on `rank` (lowest failing rank); `detail` is the cause where this rank
    /// is the one that failed, nil elsewhere.
    case routingFailed(layer: Int, rank: Int, detail: RoutingError?)
    case exchange(layer: Int, ExchangeError)

    package var description: String {
        switch self {
        case let .routingFailed(layer, rank, detail):
            return "layer \(layer): routing failed on rank \(rank)" + (detail.map { ": \($0)" } ?? "")
        case let .exchange(layer, error): return "layer \(layer): \(error)"
        }
    }
}

/// One layer's token path between ranks: pack the kept rows by destination, dispatch them to
/// the ranks that hold their experts, and after the experts combine them back and add each
/// token's weighted expert outputs to its hidden state in original token order.
///
/// Wire layout, both exchanges: the block for rank d holds d's expert slots in slot order, each
/// slot's share of this rank's kept rows of its expert in slot order (`PackOrder`; with the
/// static placement, d's experts in order with all their kept rows). Before the rows, every rank learns what it will receive
/// either from a count message (`DispatchHeader` to every rank: its size is known to both sides
/// from the placement, so it is itself a fixed-layout exchange) or, under a cached plan, from a
/// header row at the front of each block (`PlanCache`). The header's status word lets every rank
/// learn that another rank's router failed before anyone enters the token exchange.
///
/// The pure parts (pack, per-expert gather and scatter, weighted sum) are in
/// `TokenDispatcher+Kernels.swift`; this class only sequences them and communicates. Buffers are
/// owned here and reused every step (they grow to the largest step seen and never shrink).
@MainActor
package final class TokenDispatcher {
    package let layerIndex: Int
    let layer: LayerConfiguration
    /// Which logical expert every slot of every group rank holds (changed between steps by
    /// `adopt`, on every rank of the group at the same step).
    package private(set) var slots: ExpertSlots
    /// Floats per token row (d_model).
    let width: Int
    let exchange: any AllToAll
    var communicator: Communicator { exchange.communicator }
    /// This rank's rank in the layer's group.
    var groupRank: Int { communicator.rank }
    /// World rank of every rank of the layer's group, and the world size (for per-peer volumes).
    private let groupWorldRanks: [Int]
    private let worldSize: Int
    let planCache: PlanCache
    /// A `DispatchHeader` for the destination with the most experts fits in one token row, so
    /// a cached plan can carry it as the first row of each block.
    private let headerRowFits: Bool

    // Reused buffers, row-major `width` floats per row.
    var sendRows: [Float] = []      // dispatch send = combine receive layout
    var receiveRows: [Float] = []   // dispatch receive = combine send layout
    private var compactRows: [Float] = []   // a cached plan's padded blocks, compacted
    var combined: [Float] = []      // combine receive
    var scratchRow: [Float] = []    // one row of the weighted sum

    /// What a dispatch delivered to this rank's experts.
    struct Arrival {
        /// `rowsFrom[s][j]`: rows source s sent local slot j.
        let rowsFrom: [[Int]]
        /// The exact dispatch layout (rows to and from every group rank).
        let layout: ExchangeLayout
        /// Where each of this rank's routes left in the pack (`PackOrder.rowOfRoute`): the
        /// combine brings the outputs back in that order.
        let rowOfRoute: [Int]
        /// Rows each local slot received, in slot order (its GEMM row count).
        var rowsPerExpert: [Int] { rowsFrom.first.map { $0.indices.map { local in rowsFrom.reduce(0) { $0 + $1[local] } } } ?? [] }
    }

    /// `exchange` runs on the layer's group communicator; `slots` is the group's placement now;
    /// `maxSlotsPerRank` bounds the slots of any placement the layer will adopt.
    init(layerIndex: Int, layer: LayerConfiguration, width: Int, slots: ExpertSlots, maxSlotsPerRank: Int, exchange: any AllToAll,
         groupWorldRanks: [Int], worldSize: Int, planCache: PlanCacheMode) {
        precondition(slots.ranks == exchange.communicator.size && slots.experts == layer.experts)
        precondition(groupWorldRanks.count == exchange.communicator.size)
        precondition(slots.slots.allSatisfy { $0.count <= maxSlotsPerRank })
        self.layerIndex = layerIndex
        self.layer = layer
        self.width = width
        self.slots = slots
        self.exchange = exchange
        self.groupWorldRanks = groupWorldRanks
        self.worldSize = worldSize
        self.planCache = PlanCache(mode: planCache)
        headerRowFits = DispatchHeader.bytes(experts: maxSlotsPerRank) <= width * MemoryLayout<Float>.stride
    }

    /// Takes a new placement from the next dispatch on (every group rank at the same step).
    func adopt(_ slots: ExpertSlots) {
        precondition(slots.ranks == self.slots.ranks && slots.experts == self.slots.experts)
        self.slots = slots
    }

    static func grow(_ buffer: inout [Float], to count: Int) {
        if buffer.count < count { buffer = [Float](repeating: 0, count: count) }
    }

    var rowBytes: Int { width * MemoryLayout<Float>.stride }

    func exchanging<T>(_ body: () throws(ExchangeError) -> T) throws(MoELayerError) -> T {
        do { return try body() } catch { throw .exchange(layer: layerIndex, error) }
    }

    // MARK: Dispatch

    /// Sends this rank's kept rows to their experts' ranks and receives the rows for its own
    /// experts. `tokenRows` is row-major `[tokenCount, width]` (the normalised hidden states);
    /// `routing` is this rank's routing outcome — a failure is announced to every rank, and every
    /// rank then throws `routingFailed` naming the lowest failing rank. Charges `pack` and
    /// `dispatch` in `times` (the count exchange is part of dispatch). Collective over the group.
    func dispatch(
        tokenRows: [Float], tokenCount: Int, routing: Result<RoutingPlan, RoutingError>, capacity: LayerCapacity,
        times: inout PhaseTimes, volume: inout ExchangeVolume
    ) throws(MoELayerError) -> Arrival {
        var clock = PhaseClock()
        let here = communicator.rank
        let plan = try? routing.get()
        let order = packOrder(plan)
        let sendCounts = order.sendCounts

        var rowsFrom: [[Int]]?
        var failedRank: Int?
        var dispatched = false
        if headerRowFits, let blocks = planCache.blocks(layer: layer, capacity: capacity, slots: slots, here: here) {
            switch try dispatchUnderCachedPlan(tokenRows: tokenRows, tokenCount: tokenCount, routed: plan != nil, order: order,
                                               blocks: blocks, clock: &clock, times: &times) {
            case let .hit(counts):
                rowsFrom = counts
                dispatched = true
            case let .failed(rank): failedRank = rank
            case .miss: planCache.recordMiss()
            }
        }
        if rowsFrom == nil && failedRank == nil {
            (rowsFrom, failedRank) = try exchangeCounts(tokenCount: tokenCount, routed: plan != nil, rowsPerSlot: order.rowsPerSlot)
            clock.charge(\.dispatch, to: &times)
        }
        if let failedRank { throw routingFailure(rank: failedRank, routing: routing) }
        guard let rowsFrom else { preconditionFailure("no failure and no counts") }
        let layout = ExchangeLayout(sendCounts: sendCounts, receiveCounts: rowsFrom.map { $0.reduce(0, +) })!
        if !dispatched {
            Self.grow(&sendRows, to: layout.sendRows * width)
            tokenRows.withUnsafeBufferPointer { source in
                sendRows.withUnsafeMutableBufferPointer { destination in
                    guard layout.sendRows > 0 else { return }
                    Self.pack(tokenRows: source.baseAddress!, width: width, tokenCount: tokenCount, routes: order.routes,
                              into: destination.baseAddress!)
                }
            }
            clock.charge(\.pack, to: &times)
            Self.grow(&receiveRows, to: layout.receiveRows * width)
            try exchanging { () throws(ExchangeError) in try exchange.exchange(sendRows, into: &receiveRows, layout: layout, rowBytes: rowBytes) }
            clock.charge(\.dispatch, to: &times)
        }
        planCache.record(layout: layout)
        account(layout: layout, volume: &volume)
        return Arrival(rowsFrom: rowsFrom, layout: layout, rowOfRoute: order.rowOfRoute)
    }

    /// Where this rank's kept rows go under the current placement (no rows when routing failed).
    func packOrder(_ plan: RoutingPlan?) -> PackOrder {
        let kept = plan?.keptPerExpert ?? [Int](repeating: 0, count: layer.experts)
        return PackOrder(slotRoutes: plan?.slotRoutes() ?? [], kept: kept, slots: slots, routeCount: plan.map { $0.tokenCount * $0.topK } ?? 0)
    }

    /// The error every rank throws when the lowest failing router was `rank`'s (with the cause
    /// on that rank itself).
    func routingFailure(rank: Int, routing: Result<RoutingPlan, RoutingError>) -> MoELayerError {
        if case let .failure(error) = routing, rank == communicator.rank {
            return .routingFailed(layer: layerIndex, rank: rank, detail: error)
        }
        return .routingFailed(layer: layerIndex, rank: rank, detail: nil)
    }

    /// The count exchange: a `DispatchHeader` to every group rank. Returns what every source
    /// sends this rank's slots and the lowest rank whose router failed, if any.
    func exchangeCounts(tokenCount: Int, routed: Bool, rowsPerSlot: [[Int]]) throws(MoELayerError) -> ([[Int]], Int?) {
        let start = MPIRuntime.wallTime()
        let ranks = slots.ranks
        let localCount = slots.slots[communicator.rank].count
        let sendWords = (0..<ranks).map { DispatchHeader.words(experts: slots.slots[$0].count) }
        var message = [Int](repeating: 0, count: sendWords.reduce(0, +))
        message.withUnsafeMutableBytes { raw in
            var offset = 0
            for destination in 0..<ranks {
                DispatchHeader(status: routed ? .ready : .routingFailed, tokens: tokenCount, rowsPerExpert: rowsPerSlot[destination])
                    .write(to: raw.baseAddress! + offset * MemoryLayout<Int>.stride)
                offset += sendWords[destination]
            }
        }
        let receiveWords = [Int](repeating: DispatchHeader.words(experts: localCount), count: ranks)
        var reply = [Int](repeating: 0, count: receiveWords.reduce(0, +))
        let layout = ExchangeLayout(sendCounts: sendWords, receiveCounts: receiveWords)!
        try exchanging { () throws(ExchangeError) in
            try exchange.exchange(message, into: &reply, layout: layout, rowBytes: MemoryLayout<Int>.stride)
        }
        let headers = reply.withUnsafeBytes { raw in
            (0..<ranks).map { DispatchHeader.read(from: raw.baseAddress! + layout.receiveDisplacements[$0] * MemoryLayout<Int>.stride, experts: localCount) }
        }
        planCache.record(tokensOf: headers.map(\.tokens))
        planCache.recordCountExchange(seconds: MPIRuntime.wallTime() - start)
        return (headers.map(\.rowsPerExpert), headers.firstIndex { $0.status != .ready })
    }

    private enum CachedOutcome {
        case hit([[Int]])
        case miss
        case failed(Int)
    }

    /// The dispatch under the cached plan: to every peer one block of exactly the cached size,
    /// a header row, the rows, then padding. Every rank receives every rank's header, so all
    /// agree: any `routingFailed` ends the step, any `overflow` makes it a miss (the caller falls
    /// back to the count exchange), otherwise the rows are compacted into the exact layout and
    /// the count exchange is skipped.
    private func dispatchUnderCachedPlan(
        tokenRows: [Float], tokenCount: Int, routed: Bool, order: PackOrder,
        blocks: (to: [Int], from: [Int]), clock: inout PhaseClock, times: inout PhaseTimes
    ) throws(MoELayerError) -> CachedOutcome {
        let ranks = slots.ranks
        let sendCounts = order.sendCounts
        let overflow = routed && zip(sendCounts, blocks.to).contains { $0 > $1 }
        let status: DispatchStatus = !routed ? .routingFailed : (overflow ? .overflow : .ready)
        let layout = ExchangeLayout(sendCounts: blocks.to.map { $0 + 1 }, receiveCounts: blocks.from.map { $0 + 1 })!
        Self.grow(&sendRows, to: layout.sendRows * width)
        Self.grow(&receiveRows, to: layout.receiveRows * width)
        let rowBytes = rowBytes
        tokenRows.withUnsafeBufferPointer { source in
            sendRows.withUnsafeMutableBufferPointer { destination in
                var packed = 0  // rows of `order.routes` before this peer's
                for peer in 0..<ranks {
                    let base = layout.sendDisplacements[peer]
                    DispatchHeader(status: status, tokens: tokenCount, rowsPerExpert: order.rowsPerSlot[peer])
                        .write(to: UnsafeMutableRawPointer(destination.baseAddress!) + base * rowBytes)
                    defer { packed += sendCounts[peer] }
                    guard status == .ready, sendCounts[peer] > 0 else { continue }
                    Self.pack(tokenRows: source.baseAddress!, width: width, tokenCount: tokenCount,
                              routes: order.routes[packed..<packed + sendCounts[peer]], into: destination.baseAddress! + (base + 1) * width)
                }
            }
        }
        clock.charge(\.pack, to: &times)
        try exchanging { () throws(ExchangeError) in try exchange.exchange(sendRows, into: &receiveRows, layout: layout, rowBytes: rowBytes) }
        let localCount = slots.slots[communicator.rank].count
        let headers = receiveRows.withUnsafeBytes { raw in
            (0..<ranks).map { DispatchHeader.read(from: raw.baseAddress! + layout.receiveDisplacements[$0] * rowBytes, experts: localCount) }
        }
        defer { clock.charge(\.dispatch, to: &times) }
        if let failed = headers.firstIndex(where: { $0.status == .routingFailed }) { return .failed(failed) }
        if headers.contains(where: { $0.status == .overflow }) { return .miss }
        planCache.record(tokensOf: headers.map(\.tokens))
        let counts = headers.map(\.rowsPerExpert)
        let total = counts.reduce(0) { $0 + $1.reduce(0, +) }
        Self.grow(&compactRows, to: total * width)
        receiveRows.withUnsafeBufferPointer { padded in
            compactRows.withUnsafeMutableBufferPointer { exact in
                var cursor = 0
                for source in 0..<ranks {
                    let rows = counts[source].reduce(0, +)
                    guard rows > 0 else { continue }
                    (exact.baseAddress! + cursor * width).update(from: padded.baseAddress! + (layout.receiveDisplacements[source] + 1) * width,
                                                                 count: rows * width)
                    cursor += rows
                }
            }
        }
        swap(&receiveRows, &compactRows)
        planCache.recordHit(paddingBytes: (layout.sendRows - ranks - sendCounts.reduce(0, +)) * rowBytes)
        return .hit(counts)
    }

    /// Bytes of the dispatch, in total and per world rank.
    func account(layout: ExchangeLayout, volume: inout ExchangeVolume) {
        volume.dispatchBytesSent += layout.sendRows * rowBytes
        if volume.dispatchBytesSentTo.count != worldSize {
            volume.dispatchBytesSentTo = [Int](repeating: 0, count: worldSize)
            volume.dispatchBytesReceivedFrom = [Int](repeating: 0, count: worldSize)
        }
        for (peer, world) in groupWorldRanks.enumerated() {
            volume.dispatchBytesSentTo[world] += layout.sendCounts[peer] * rowBytes
            volume.dispatchBytesReceivedFrom[world] += layout.receiveCounts[peer] * rowBytes
        }
    }

    /// The rows the last dispatch delivered, in its receive layout; the experts overwrite them
    /// with their outputs (`scatter`) before the combine sends them back.
    func withReceivedRows<Result>(_ body: (UnsafeMutableBufferPointer<Float>) -> Result) -> Result {
        receiveRows.withUnsafeMutableBufferPointer { body($0) }
    }

    // MARK: Combine

    /// Sends the expert outputs back to the tokens' ranks (the dispatch's blocks, reversed) and
    /// adds each token's weighted sum to `hidden` (row-major `[plan.tokenCount, width]`).
    /// `residual` is a PR-MoE layer's coefficients `[T, 2]` and dense outputs `[T, width]`.
    /// Charges `combine`. Collective over the group.
    func combine(
        plan: RoutingPlan, arrival: Arrival, residual: (coefficients: [Float], dense: [Float])?, into hidden: inout [Float],
        times: inout PhaseTimes, volume: inout ExchangeVolume
    ) throws(MoELayerError) {
        var clock = PhaseClock()
        let layout = ExchangeLayout(sendCounts: arrival.layout.receiveCounts, receiveCounts: arrival.layout.sendCounts)!
        Self.grow(&combined, to: layout.receiveRows * width)
        try exchanging { () throws(ExchangeError) in try exchange.exchange(receiveRows, into: &combined, layout: layout, rowBytes: rowBytes) }
        volume.combineBytesSent += layout.sendRows * rowBytes
        weightedSum(plan: plan, rowOfRoute: arrival.rowOfRoute, residual: residual, into: &hidden)
        clock.charge(\.combine, to: &times)
    }

    /// Adds every token's weighted expert outputs from the combine's receive buffer to `hidden`:
    /// `hidden[t] += Σ_r g_r · combined[rowOfRoute[r]]` (a residual layer: its mixture), in
    /// token order. The sequential and the pipelined combine both end here.
    func weightedSum(plan: RoutingPlan, rowOfRoute: [Int], residual: (coefficients: [Float], dense: [Float])?, into hidden: inout [Float]) {
        Self.grow(&scratchRow, to: width)
        let coefficients = residual?.coefficients ?? []
        let dense = residual?.dense ?? []
        combined.withUnsafeBufferPointer { rows in
            scratchRow.withUnsafeMutableBufferPointer { scratch in
                hidden.withUnsafeMutableBufferPointer { output in
                    coefficients.withUnsafeBufferPointer { coefficients in
                        dense.withUnsafeBufferPointer { dense in
                            guard plan.tokenCount > 0 else { return }
                            let share = residual == nil ? nil : ResidualShare(coefficients: coefficients.baseAddress!, dense: dense.baseAddress!)
                            Self.weightedSum(combined: UnsafePointer(rows.baseAddress!), width: width, plan: plan,
                                             rowOfRoute: rowOfRoute, residual: share,
                                             scratch: scratch.baseAddress!, into: output.baseAddress!)
                        }
                    }
                }
            }
        }
    }
}
