import Exchange
import MessagePassing
import MoE

/// Why a distributed layer step failed. Every rank throws the same case (the ranks learn each
/// other's status in the count exchange), so no rank is left inside a collective.
package enum MoELayerError: AgreedFailure {
    /// Routing failed on `rank` (lowest failing rank); `detail` is the cause where this rank
    /// is the one that failed, nil elsewhere.
    case routingFailed(layer: Int, rank: Int, detail: RoutingError?)
    case exchange(layer: Int, ExchangeError)

    /// A failed router is agreed on (every rank learns it from the counts); an exchange error
    /// is one rank's MPI failure mid-exchange, which aborts the job.
    package var agreedReportingRank: Int? {
        if case let .routingFailed(_, rank, _) = self { return rank }
        return nil
    }

    package var description: String {
        switch self {
        case let .routingFailed(layer, rank, detail):
            return "layer \(layer): routing failed on rank \(rank)" + (detail.map { ": \($0)" } ?? "")
        case let .exchange(layer, error): return "layer \(layer): \(error)"
        }
    }
}

/// How a layer's dispatcher learns, each step, how many rows it will receive — and so how its
/// step runs. Given once, at construction: every rank of the group must hold the same mode.
package enum DispatchMode: Equatable, Sendable {
    /// The count exchange (`DispatchHeader` to every rank) every step, then the step as
    /// `degree` chunks (1 ... `OverlapDegree.limit`; 1: dispatch, experts and combine in turn),
    /// the exchanges moved on where `progress` says.
    case counted(degree: Int, progress: OverlapProgress)
    /// Block sizes from a cached plan (a header row at the front of each block); the count
    /// exchange only after a miss. One chunk: a cached step is never pipelined.
    case cached(PlanCacheMode)

    /// The plain sequential step.
    package static let sequential = DispatchMode.counted(degree: 1, progress: .betweenGEMMs)

    /// Chunks per step.
    package var degree: Int {
        if case let .counted(degree, _) = self { return degree }
        return 1
    }

    /// The mode for `planCache` (nil: none) and an overlap `degree`, or why they do not go together.
    package static func of(planCache: PlanCacheMode?, degree: Int, progress: OverlapProgress) -> Result<DispatchMode, DispatchModeError> {
        guard (1...OverlapDegree.limit).contains(degree) else { return .failure(.degreeOutOfRange(degree)) }
        guard let planCache else { return .success(.counted(degree: degree, progress: progress)) }
        return degree == 1 ? .success(.cached(planCache)) : .failure(.planCacheWithOverlap(overlap: String(degree)))
    }
}

/// Dispatch settings that cannot go together.
package enum DispatchModeError: Error, Equatable, CustomStringConvertible {
    case degreeOutOfRange(Int)
    /// `overlap` as the user gave it (a number or auto).
    case planCacheWithOverlap(overlap: String)

    package var description: String {
        switch self {
        case let .degreeOutOfRange(degree): return "overlap degree \(degree) is outside 1...\(OverlapDegree.limit)"
        case let .planCacheWithOverlap(degree):
            return "--plan-cache applies to the sequential layer; with --overlap-degree \(degree) every step runs the count exchange (give --overlap-degree 1 or drop --plan-cache)"
        }
    }
}

/// Where a pipelined step lets MPI move its exchanges on.
package enum OverlapProgress: String, CaseIterable, Sendable {
    /// Between every GEMM of the experts (the default).
    case gemms
    /// Only between chunks (for comparison).
    case chunks

    package static let betweenGEMMs = OverlapProgress.gemms
}

/// One layer's token path between ranks, as one driver (`step`) for every dispatch mode: learn
/// what every rank sends (count exchange or cached plan), pack the kept rows by destination,
/// dispatch them in `degree` chunks to the ranks that hold their experts, run the experts on
/// each chunk as it arrives, combine each chunk back, and add each token's weighted expert
/// outputs to its hidden state in original token order. Degree 1 is the one-chunk pipeline.
///
/// Wire layout, both exchanges: the block for rank d holds d's expert slots in slot order, each
/// slot's share of this rank's kept rows of its expert in slot order (`PackOrder`; with the
/// static placement, d's experts in order with all their kept rows); with N chunks, chunk-major
/// (`ChunkPlan`). Before the rows, every rank learns what it will receive either from a count
/// message (`DispatchHeader` to every rank: its size is known to both sides from the placement,
/// so it is itself a fixed-layout exchange) or, under a cached plan, from a header row at the
/// front of each block (`PlanCache`). The header's status word lets every rank learn that
/// another rank's router failed before anyone enters the token exchange.
///
/// The pure parts (pack, per-expert gather and scatter, weighted sum) are in
/// `TokenDispatcher+Kernels.swift`, the chunks in `TokenDispatcher+Chunks.swift`. Buffers are
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
    let mode: DispatchMode
    /// How rows travel (fp32: the float buffers themselves; else encoded into the wire buffers).
    let codec: RowCodec
    /// The ISA level decoding runs at.
    let isa: CPUISA
    var communicator: Communicator { exchange.communicator }
    /// This rank's rank in the layer's group.
    var groupRank: Int { communicator.rank }
    /// World rank of every rank of the layer's group, and the world size (for per-peer volumes).
    private let groupWorldRanks: [Int]
    private let worldSize: Int
    /// The cached plan (`DispatchMode.cached`), nil when every step counts.
    let planCache: PlanCache?
    /// A `DispatchHeader` for the destination with the most experts fits in one token row as
    /// it travels (`codec.rowBytes`), so a cached plan can carry it as the first row of each block.
    private let headerRowFits: Bool

    // Reused buffers, row-major `width` floats per row.
    var sendRows: [Float] = []      // dispatch send = combine receive layout
    var receiveRows: [Float] = []   // dispatch receive = combine send layout
    private var compactRows: [Float] = []   // a cached plan's padded blocks, compacted
    var combined: [Float] = []      // combine receive
    var scratchRow: [Float] = []    // one row of the weighted sum
    // Encoded rows (`codec`, when not fp32), `codec.rowBytes` per row, in the float buffers' row order.
    var wireSend: [UInt8] = []      // dispatch send
    var wireReceive: [UInt8] = []   // dispatch receive, then each chunk's combine send
    var wireBack: [UInt8] = []      // combine receive

    /// What a dispatch (or one chunk of it) delivered to this rank's experts.
    struct Arrival {
        /// `rowsFrom[s][j]`: rows source s sent local slot j.
        let rowsFrom: [[Int]]
        /// The exact dispatch layout (rows to and from every group rank).
        let layout: ExchangeLayout
        /// Rows each local slot received, in slot order (its GEMM row count).
        var rowsPerExpert: [Int] { Self.rowsPerSlot(rowsFrom) }

        static func rowsPerSlot(_ rowsFrom: [[Int]]) -> [Int] {
            rowsFrom.first.map { $0.indices.map { local in rowsFrom.reduce(0) { $0 + $1[local] } } } ?? []
        }
    }

    /// `exchange` runs on the layer's group communicator; `slots` is the group's placement now;
    /// `maxSlotsPerRank` bounds the slots of any placement the layer will adopt.
    init(layerIndex: Int, layer: LayerConfiguration, width: Int, slots: ExpertSlots, maxSlotsPerRank: Int, exchange: any AllToAll,
         groupWorldRanks: [Int], worldSize: Int, mode: DispatchMode, exchangePrecision: ExchangePrecision = .fp32, isa: CPUISA = .portable) {
        precondition(slots.ranks == exchange.communicator.size && slots.experts == layer.experts)
        precondition(groupWorldRanks.count == exchange.communicator.size)
        precondition(slots.slots.allSatisfy { $0.count <= maxSlotsPerRank })
        precondition((1...OverlapDegree.limit).contains(mode.degree))
        codec = RowCodec(precision: exchangePrecision, width: width)
        self.isa = isa
        self.layerIndex = layerIndex
        self.layer = layer
        self.width = width
        self.slots = slots
        self.exchange = exchange
        self.mode = mode
        self.groupWorldRanks = groupWorldRanks
        self.worldSize = worldSize
        if case let .cached(cacheMode) = mode { planCache = PlanCache(mode: cacheMode) } else { planCache = nil }
        headerRowFits = DispatchHeader.bytes(experts: maxSlotsPerRank) <= codec.rowBytes
    }

    /// Takes a new placement from the next dispatch on (every group rank at the same step).
    func adopt(_ slots: ExpertSlots) {
        precondition(slots.ranks == self.slots.ranks && slots.experts == self.slots.experts)
        self.slots = slots
    }

    /// Grows `buffer` to at least `count` zeroed elements (contents not kept); never shrinks.
    static func grow<Element: Numeric>(_ buffer: inout [Element], to count: Int) {
        if buffer.count < count { buffer = [Element](repeating: 0, count: count) }
    }

    var rowBytes: Int { width * MemoryLayout<Float>.stride }
    /// Bytes of one row on the wire.
    var wireRowBytes: Int { codec.rowBytes }

    func exchanging<T>(_ body: () throws(ExchangeError) -> T) throws(MoELayerError) -> T {
        do { return try body() } catch { throw .exchange(layer: layerIndex, error) }
    }

    /// What the layer computes while the step's exchanges are in flight.
    struct LayerWork {
        /// Runs once every dispatch chunk is posted: a residual layer's dense MLP, a shared
        /// expert. `progress` moves the exchanges on and should run between GEMMs.
        var whileDispatching: (_ progress: ProgressHook) -> Void
        /// Runs this rank's experts on one chunk's rows (the chunk's receive layout, `arrival`),
        /// replacing each row by its output; returns the seconds inside the FFNs.
        var computeChunk: (_ rows: UnsafeMutableBufferPointer<Float>, _ arrival: Arrival, _ progress: ProgressHook) -> Double
    }

    // MARK: The step

    /// A whole layer step after the gate. `tokenRows` is row-major `[tokenCount, width]` (the
    /// normalised hidden states); `routing` is this rank's routing outcome — a failure is
    /// announced to every rank, and every rank then throws `routingFailed` naming the lowest
    /// failing rank. The counts (count exchange, or the cached plan's header rows, which arrive
    /// with the rows), the pack, every chunk's dispatch posted at once (channels 1…N), `work`'s
    /// dense part while they travel, chunk c's experts as soon as its rows are in and its combine
    /// (channel N+1+c) posted right after; finally the weighted sum adds every token's outputs
    /// (a residual layer: mixed with `residual()`'s coefficients `[T, 2]` and dense outputs
    /// `[T, width]`) to `hidden`. Returns the plan and the rows each local slot received.
    ///
    /// Charges `dispatch` (counts and time blocked on dispatch chunks), `pack`, `experts` (the
    /// chunks' expert work), `combine` (blocked on combine chunks, and the sum); the layer's own
    /// work in `whileDispatching` is the caller's to charge. Collective over the group.
    func step(
        tokenRows: [Float], tokenCount: Int, routing: Result<RoutingPlan, RoutingError>, capacity: LayerCapacity, sequenceLength: Int? = nil,
        work: LayerWork, residual: () -> (coefficients: [Float], dense: [Float])?, into hidden: inout [Float],
        times: inout PhaseTimes, volume: inout ExchangeVolume
    ) throws(MoELayerError) -> (plan: RoutingPlan, rowsPerSlot: [Int]) {
        var clock = PhaseClock()
        let plan = try? routing.get()
        let order = packOrder(plan)
        let (rowsFrom, delivered) = try counts(tokenRows: tokenRows, tokenCount: tokenCount, routing: routing, order: order,
                                               capacity: capacity, sequenceLength: sequenceLength, clock: &clock, times: &times)
        guard let plan else { preconditionFailure("a failed router stops every rank in the counts") }
        let layout = ExchangeLayout(sendCounts: order.sendCounts, receiveCounts: rowsFrom.map { $0.reduce(0, +) })!
        let chunks = ChunkPlan(degree: delivered ? 1 : mode.degree, rowsPerSlotTo: order.rowsPerSlot, rowsFrom: rowsFrom)
        // At least one row each, so every chunk has a base address.
        Self.grow(&receiveRows, to: max(layout.receiveRows, 1) * width)
        Self.grow(&combined, to: max(layout.sendRows, 1) * width)
        var rowOfRoute = order.rowOfRoute
        if !delivered {
            Self.grow(&sendRows, to: max(layout.sendRows, 1) * width)
            rowOfRoute = pack(tokenRows: tokenRows, tokenCount: tokenCount, order: order, chunks: chunks)
            if codec.precision != .fp32 { encodeSendRows(count: layout.sendRows, receiveRows: layout.receiveRows) }
            clock.charge(\.pack, to: &times)
        } else if codec.precision != .fp32 {
            growWireBuffers(sendRows: layout.sendRows, receiveRows: layout.receiveRows)  // the combine's
        }
        var failure: MoELayerError?
        withChunkBuffers { buffers in
            do throws(MoELayerError) {
                try runChunks(chunks, delivered: delivered, buffers: buffers, work: work, times: &times)
            } catch { failure = error }
        }
        if let failure { throw failure }
        planCache?.record(layout: layout)
        account(layout: layout, volume: &volume)
        volume.combineBytesSent += layout.receiveRows * wireRowBytes
        clock = PhaseClock()
        if codec.precision != .fp32 {
            wireBack.withUnsafeBytes { wire in
                combined.withUnsafeMutableBufferPointer { floats in
                    codec.decode(wire.baseAddress!, rows: layout.sendRows, into: floats.baseAddress!, isa: isa)
                }
            }
        }
        weightedSum(plan: plan, rowOfRoute: rowOfRoute, residual: residual(), into: &hidden)
        clock.charge(\.combine, to: &times)
        return (plan, Arrival.rowsPerSlot(rowsFrom))
    }

    /// What every group rank sends this rank's slots (`rowsFrom[s][j]`), from the cached plan's
    /// header rows — then the rows have arrived too (`delivered`) — or from the count exchange.
    /// Throws `routingFailed` on every rank when any router failed.
    private func counts(
        tokenRows: [Float], tokenCount: Int, routing: Result<RoutingPlan, RoutingError>, order: PackOrder, capacity: LayerCapacity,
        sequenceLength: Int?, clock: inout PhaseClock, times: inout PhaseTimes
    ) throws(MoELayerError) -> (rowsFrom: [[Int]], delivered: Bool) {
        let routed = (try? routing.get()) != nil
        if let planCache, headerRowFits,
           let blocks = planCache.blocks(layer: layer, capacity: capacity, sequenceLength: sequenceLength, slots: slots, here: communicator.rank) {
            switch try dispatchUnderCachedPlan(tokenRows: tokenRows, tokenCount: tokenCount, routed: routed, order: order,
                                               blocks: blocks, clock: &clock, times: &times) {
            case let .hit(counts): return (counts, true)
            case let .failed(rank): throw routingFailure(rank: rank, routing: routing)
            case .miss: planCache.recordMiss()
            }
        }
        let (rowsFrom, failedRank) = try exchangeCounts(tokenCount: tokenCount, routed: routed, rowsPerSlot: order.rowsPerSlot)
        clock.charge(\.dispatch, to: &times)
        if let failedRank { throw routingFailure(rank: failedRank, routing: routing) }
        return (rowsFrom, false)
    }

    /// Packs this rank's kept rows into `sendRows`, chunk-major (`chunks`); returns where each
    /// route's row left (`rowOfRoute`, −1 for dropped routes), which the combine brings back.
    private func pack(tokenRows: [Float], tokenCount: Int, order: PackOrder, chunks: ChunkPlan) -> [Int] {
        // One chunk: the pack order itself (the chunk map is the identity).
        let routes: [Int], rowOfRoute: [Int]
        if chunks.degree == 1 {
            (routes, rowOfRoute) = (order.routes, order.rowOfRoute)
        } else {
            var chunkRoutes = [Int](repeating: 0, count: order.routes.count)
            for (packed, route) in order.routes.enumerated() { chunkRoutes[chunks.chunkRowOfPackedRow[packed]] = route }
            (routes, rowOfRoute) = (chunkRoutes, order.rowOfRoute.map { $0 < 0 ? $0 : chunks.chunkRowOfPackedRow[$0] })
        }
        tokenRows.withUnsafeBufferPointer { source in
            sendRows.withUnsafeMutableBufferPointer { destination in
                guard !routes.isEmpty else { return }
                _ = Self.pack(tokenRows: source.baseAddress!, width: width, tokenCount: tokenCount, routes: routes, into: destination.baseAddress!)
            }
        }
        return rowOfRoute
    }

    /// The wire buffers grown for a step of this many rows sent and received.
    private func growWireBuffers(sendRows count: Int, receiveRows: Int) {
        Self.grow(&wireSend, to: max(count, 1) * wireRowBytes)
        Self.grow(&wireReceive, to: max(receiveRows, 1) * wireRowBytes)
        Self.grow(&wireBack, to: max(count, 1) * wireRowBytes)
    }

    /// The packed rows encoded for the wire, and the wire buffers grown for this step.
    private func encodeSendRows(count: Int, receiveRows: Int) {
        growWireBuffers(sendRows: count, receiveRows: receiveRows)
        sendRows.withUnsafeBufferPointer { floats in
            wireSend.withUnsafeMutableBytes { wire in codec.encode(floats.baseAddress!, rows: count, into: wire.baseAddress!, isa: isa) }
        }
    }

    /// The step's buffers pinned for its chunks: the exchanges read and write the wire buffers
    /// (the float buffers themselves for fp32), the experts the float receive buffer.
    private func withChunkBuffers(_ body: (ChunkBuffers) -> Void) {
        receiveRows.withUnsafeMutableBufferPointer { received in
            guard codec.precision != .fp32 else {
                sendRows.withUnsafeBytes { send in
                    combined.withUnsafeMutableBytes { back in
                        body(ChunkBuffers(send: send.baseAddress!, receive: UnsafeMutableRawPointer(received.baseAddress!), back: back.baseAddress!,
                                          receivedRows: received.baseAddress!))
                    }
                }
                return
            }
            wireSend.withUnsafeBytes { send in
                wireReceive.withUnsafeMutableBytes { receive in
                    wireBack.withUnsafeMutableBytes { back in
                        body(ChunkBuffers(send: send.baseAddress!, receive: receive.baseAddress!, back: back.baseAddress!,
                                          receivedRows: received.baseAddress!))
                    }
                }
            }
        }
    }

    // MARK: Counts

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
        planCache?.record(tokensOf: headers.map(\.tokens))
        planCache?.recordCountExchange(seconds: MPIRuntime.wallTime() - start)
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
        if codec.precision != .fp32 {
            // The rows as they travel, each block's header row carried as raw bytes.
            encodeSendRows(count: layout.sendRows, receiveRows: layout.receiveRows)
            wireSend.withUnsafeMutableBytes { wire in
                for peer in 0..<ranks {
                    DispatchHeader(status: status, tokens: tokenCount, rowsPerExpert: order.rowsPerSlot[peer])
                        .write(to: wire.baseAddress! + layout.sendDisplacements[peer] * wireRowBytes)
                }
            }
        }
        clock.charge(\.pack, to: &times)
        let travelBytes = wireRowBytes
        try exchanging { () throws(ExchangeError) in
            if codec.precision == .fp32 {
                try exchange.exchange(sendRows, into: &receiveRows, layout: layout, rowBytes: rowBytes)
            } else {
                try exchange.exchange(wireSend, into: &wireReceive, layout: layout, rowBytes: travelBytes)
            }
        }
        let localCount = slots.slots[communicator.rank].count
        let readHeaders = { (raw: UnsafeRawBufferPointer) in
            (0..<ranks).map { DispatchHeader.read(from: raw.baseAddress! + layout.receiveDisplacements[$0] * travelBytes, experts: localCount) }
        }
        let headers = codec.precision == .fp32 ? receiveRows.withUnsafeBytes(readHeaders) : wireReceive.withUnsafeBytes(readHeaders)
        defer { clock.charge(\.dispatch, to: &times) }
        if let failed = headers.firstIndex(where: { $0.status == .routingFailed }) { return .failed(failed) }
        if headers.contains(where: { $0.status == .overflow }) { return .miss }
        planCache?.record(tokensOf: headers.map(\.tokens))
        let counts = headers.map(\.rowsPerExpert)
        let total = counts.reduce(0) { $0 + $1.reduce(0, +) }
        Self.grow(&compactRows, to: total * width)
        compactRows.withUnsafeMutableBufferPointer { exact in
            var cursor = 0
            for source in 0..<ranks {
                let rows = counts[source].reduce(0, +)
                guard rows > 0 else { continue }
                let first = layout.receiveDisplacements[source] + 1  // after the header row
                if codec.precision == .fp32 {
                    receiveRows.withUnsafeBufferPointer { padded in
                        (exact.baseAddress! + cursor * width).update(from: padded.baseAddress! + first * width, count: rows * width)
                    }
                } else {
                    wireReceive.withUnsafeBytes { padded in
                        codec.decode(padded.baseAddress! + first * travelBytes, rows: rows, into: exact.baseAddress! + cursor * width, isa: isa)
                    }
                }
                cursor += rows
            }
        }
        swap(&receiveRows, &compactRows)
        planCache?.recordHit(paddingBytes: (layout.sendRows - ranks - sendCounts.reduce(0, +)) * travelBytes)
        return .hit(counts)
    }

    /// Bytes of the dispatch, in total and per world rank.
    func account(layout: ExchangeLayout, volume: inout ExchangeVolume) {
        volume.dispatchBytesSent += layout.sendRows * wireRowBytes
        if volume.dispatchBytesSentTo.count != worldSize {
            volume.dispatchBytesSentTo = [Int](repeating: 0, count: worldSize)
            volume.dispatchBytesReceivedFrom = [Int](repeating: 0, count: worldSize)
        }
        for (peer, world) in groupWorldRanks.enumerated() {
            volume.dispatchBytesSentTo[world] += layout.sendCounts[peer] * wireRowBytes
            volume.dispatchBytesReceivedFrom[world] += layout.receiveCounts[peer] * wireRowBytes
        }
    }

    /// Adds every token's weighted expert outputs from the combine's receive buffer to `hidden`:
    /// `hidden[t] += Σ_r g_r · combined[rowOfRoute[r]]` (a residual layer: its mixture), in
    /// token order. The step's last phase.
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
