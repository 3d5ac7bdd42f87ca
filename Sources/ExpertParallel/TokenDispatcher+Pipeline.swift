import Exchange
import Glibc
import MessagePassing
import MoE

/// How one layer step's rows split into the chunks of a pipelined layer (degree N).
///
/// **Whole experts first, rows when there are more chunks than experts.** On a rank with S
/// slots, slot j belongs to chunks lo ..< hi with lo = ⌊j·N/S⌋ and hi = max(lo + 1, ⌊(j+1)·N/S⌋),
/// and its rows (from every source) are split evenly over them: ⌊k·i/p⌋ ..< ⌊k·(i+1)/p⌋ of the
/// share's k rows go to the i-th of its p chunks. With N ≤ S every expert runs one GEMM on all
/// its rows, as in the sequential layer (bitwise equal, and each expert's weights are read once
/// per step); with N > S (E = ranks, one expert per rank, is the common case) each expert's rows
/// are cut into ≈ N/S parts — Tutel's split of the capacity dimension. Either way every chunk
/// reaches every rank with ≈ 1/N of its rows (a rank's slots are spread over all chunks).
/// Splitting every expert's rows N ways regardless re-reads every expert's weights N times per
/// step: measured here, degree 8 on a d_ff 4096 layer took 2.9× the sequential time. Splitting
/// by destination would idle every rank outside the chunk. Both sides compute the split from
/// the slot counts of the placement and the counts they already exchanged, so chunks need no
/// messages of their own. The send buffer (and the combine's receive buffer) is chunk-major:
/// chunk c's rows, by destination, by slot; the receive buffer likewise by chunk, source, slot.
struct ChunkPlan: Equatable {
    let degree: Int
    /// Chunk c's exchange layout (rows to and from every group rank).
    let layouts: [ExchangeLayout]
    /// First row of chunk c in the send buffer (= the combine's receive buffer).
    let sendBase: [Int]
    /// First row of chunk c in the receive buffer (= the combine's send buffer).
    let receiveBase: [Int]
    /// `rowsFrom[c][s][j]`: rows source s sends local slot j in chunk c.
    let rowsFrom: [[[Int]]]
    /// For each row of the sequential pack order (`PackOrder`), its row in the chunk-major send buffer.
    let chunkRowOfPackedRow: [Int]

    /// The rows of a share of `rows` rows to slot `slot` of a rank with `slotCount` slots that
    /// chunk `chunk` of `degree` carries (empty when the slot is not in the chunk).
    static func part(of rows: Int, slot: Int, slotCount: Int, chunk: Int, degree: Int) -> Range<Int> {
        let first = slot * degree / slotCount
        let end = max(first + 1, (slot + 1) * degree / slotCount)
        guard (first..<end).contains(chunk) else { return 0..<0 }
        let pieces = end - first, piece = chunk - first
        return (rows * piece / pieces)..<(rows * (piece + 1) / pieces)
    }

    /// `rowsPerSlotTo[d][j]`: rows this rank sends slot j of rank d; `rowsFrom[s][j]`: rows
    /// source s sends this rank's slot j (the count exchange's result).
    init(degree: Int, rowsPerSlotTo: [[Int]], rowsFrom: [[Int]]) {
        precondition(degree >= 1)
        self.degree = degree
        var packedStart: [[Int]] = []
        var cursor = 0
        for perSlot in rowsPerSlotTo {
            packedStart.append(perSlot.map { rows in
                defer { cursor += rows }
                return cursor
            })
        }
        var rowMap = [Int](repeating: 0, count: cursor)
        var layouts: [ExchangeLayout] = [], sendBase: [Int] = [], receiveBase: [Int] = [], chunkRowsFrom: [[[Int]]] = []
        var sendCursor = 0, receiveCursor = 0
        for chunk in 0..<degree {
            sendBase.append(sendCursor)
            receiveBase.append(receiveCursor)
            var sendCounts = [Int](repeating: 0, count: rowsPerSlotTo.count)
            for (destination, perSlot) in rowsPerSlotTo.enumerated() {
                for (slot, rows) in perSlot.enumerated() {
                    let part = Self.part(of: rows, slot: slot, slotCount: perSlot.count, chunk: chunk, degree: degree)
                    for (offset, row) in part.enumerated() { rowMap[packedStart[destination][slot] + row] = sendCursor + offset }
                    sendCursor += part.count
                    sendCounts[destination] += part.count
                }
            }
            let from = rowsFrom.map { perSlot in
                perSlot.enumerated().map { slot, rows in Self.part(of: rows, slot: slot, slotCount: perSlot.count, chunk: chunk, degree: degree).count }
            }
            let receiveCounts = from.map { $0.reduce(0, +) }
            receiveCursor += receiveCounts.reduce(0, +)
            layouts.append(ExchangeLayout(sendCounts: sendCounts, receiveCounts: receiveCounts)!)
            chunkRowsFrom.append(from)
        }
        self.layouts = layouts
        self.sendBase = sendBase
        self.receiveBase = receiveBase
        self.rowsFrom = chunkRowsFrom
        chunkRowOfPackedRow = rowMap
    }
}

extension TokenDispatcher {
    /// What the layer computes while a pipelined step's exchanges are in flight.
    struct PipelineWork {
        /// Runs once every dispatch chunk is posted: a residual layer's dense MLP, a shared
        /// expert. `progress` moves the exchanges on and should run between GEMMs.
        var whileDispatching: (_ progress: ProgressHook) -> Void
        /// Runs this rank's experts on one chunk's rows (the chunk's receive layout, `arrival`),
        /// replacing each row by its output; returns the seconds inside the FFNs.
        var computeChunk: (_ rows: UnsafeMutableBufferPointer<Float>, _ arrival: Arrival, _ progress: ProgressHook) -> Double
    }

    /// A whole layer step as a pipeline of `degree` chunks (`ChunkPlan`): the count exchange,
    /// then every chunk's dispatch posted at once (channels 1…N); chunk c's experts run as soon
    /// as its rows have arrived, and its combine (channel N+1+c) is posted right after, so it
    /// travels while chunk c+1 computes. Between GEMMs the experts call back to test every
    /// exchange in flight, which is when MPI moves their messages and multi-stage algorithms
    /// post their next stage. Finally the weighted sum adds every token's outputs to `hidden`,
    /// as `combine` does. The plan cache is not used (the count exchange always runs).
    ///
    /// Charges `dispatch` (count exchange and time blocked on dispatch chunks), `pack`,
    /// `experts` (the chunks' expert work), `combine` (blocked on combine chunks, and the sum);
    /// the layer's own work in `whileDispatching` is the caller's to charge. Collective over
    /// the group; every rank must use the same degree.
    func pipelinedStep(
        tokenRows: [Float], tokenCount: Int, routing: Result<RoutingPlan, RoutingError>, degree: Int, work: PipelineWork,
        residual: () -> (coefficients: [Float], dense: [Float])?, into hidden: inout [Float],
        times: inout PhaseTimes, volume: inout ExchangeVolume
    ) throws(MoELayerError) -> (plan: RoutingPlan, rowsPerSlot: [Int]) {
        var clock = PhaseClock()
        let plan = try? routing.get()
        let order = packOrder(plan)
        let (rowsFrom, failedRank) = try exchangeCounts(tokenCount: tokenCount, routed: plan != nil, rowsPerSlot: order.rowsPerSlot)
        clock.charge(\.dispatch, to: &times)
        if let failedRank { throw routingFailure(rank: failedRank, routing: routing) }
        guard let plan else { preconditionFailure("no failure and no plan") }
        let chunks = ChunkPlan(degree: degree, rowsPerSlotTo: order.rowsPerSlot, rowsFrom: rowsFrom)
        let layout = ExchangeLayout(sendCounts: order.sendCounts, receiveCounts: rowsFrom.map { $0.reduce(0, +) })!
        var chunkRoutes = [Int](repeating: 0, count: order.routes.count)
        for (packed, route) in order.routes.enumerated() { chunkRoutes[chunks.chunkRowOfPackedRow[packed]] = route }
        let rowOfRoute = order.rowOfRoute.map { $0 < 0 ? $0 : chunks.chunkRowOfPackedRow[$0] }
        // At least one row each, so every chunk has a base address.
        Self.grow(&sendRows, to: max(layout.sendRows, 1) * width)
        Self.grow(&receiveRows, to: max(layout.receiveRows, 1) * width)
        Self.grow(&combined, to: max(layout.sendRows, 1) * width)
        tokenRows.withUnsafeBufferPointer { source in
            sendRows.withUnsafeMutableBufferPointer { destination in
                guard layout.sendRows > 0 else { return }
                _ = Self.pack(tokenRows: source.baseAddress!, width: width, tokenCount: tokenCount, routes: chunkRoutes,
                              into: destination.baseAddress!)
            }
        }
        clock.charge(\.pack, to: &times)

        var failure: MoELayerError?
        sendRows.withUnsafeBytes { send in
            receiveRows.withUnsafeMutableBytes { received in
                combined.withUnsafeMutableBytes { back in
                    do throws(MoELayerError) {
                        try runChunks(chunks, send: send.baseAddress!, received: received.baseAddress!, back: back.baseAddress!,
                                      work: work, times: &times)
                    } catch { failure = error }
                }
            }
        }
        if let failure { throw failure }
        account(layout: layout, volume: &volume)
        volume.combineBytesSent += layout.receiveRows * rowBytes
        clock = PhaseClock()
        weightedSum(plan: plan, rowOfRoute: rowOfRoute, residual: residual(), into: &hidden)
        clock.charge(\.combine, to: &times)
        return (plan, rowsFrom.first.map { $0.indices.map { local in rowsFrom.reduce(0) { $0 + $1[local] } } } ?? [])
    }

    /// The pipeline proper over pinned buffers (see `pipelinedStep`).
    private func runChunks(
        _ chunks: ChunkPlan, send: UnsafeRawPointer, received: UnsafeMutableRawPointer, back: UnsafeMutableRawPointer,
        work: PipelineWork, times: inout PhaseTimes
    ) throws(MoELayerError) {
        let rowBytes = self.rowBytes
        let degree = chunks.degree
        var dispatches: [any PendingExchange] = []
        for chunk in 0..<degree {
            let layout = chunks.layouts[chunk]
            let pending = try exchanging { () throws(ExchangeError) in
                try exchange.post(send: UnsafeRawBufferPointer(start: send + chunks.sendBase[chunk] * rowBytes, count: layout.sendRows * rowBytes),
                                  receive: UnsafeMutableRawBufferPointer(start: received + chunks.receiveBase[chunk] * rowBytes,
                                                                         count: layout.receiveRows * rowBytes),
                                  layout: layout, rowBytes: rowBytes, channel: 1 + chunk)
            }
            dispatches.append(pending)
        }
        let inFlight = InFlightExchanges(dispatches: dispatches)
        let progress = ProgressHook { inFlight.progress() }
        work.whileDispatching(progress)
        for chunk in 0..<degree {
            var clock = PhaseClock()
            try inFlight.complete(dispatches[chunk], layer: layerIndex)
            clock.charge(\.dispatch, to: &times)
            let layout = chunks.layouts[chunk]
            let arrival = Arrival(rowsFrom: chunks.rowsFrom[chunk], layout: layout, rowOfRoute: [])
            let rows = UnsafeMutableBufferPointer(start: (received + chunks.receiveBase[chunk] * rowBytes).assumingMemoryBound(to: Float.self),
                                                  count: layout.receiveRows * width)
            times.expertCompute += work.computeChunk(rows, arrival, progress)
            clock.charge(\.experts, to: &times)
            try inFlight.rethrow(layer: layerIndex)
            let backLayout = ExchangeLayout(sendCounts: layout.receiveCounts, receiveCounts: layout.sendCounts)!
            let pending = try exchanging { () throws(ExchangeError) in
                try exchange.post(send: UnsafeRawBufferPointer(rows), 
                                  receive: UnsafeMutableRawBufferPointer(start: back + chunks.sendBase[chunk] * rowBytes, count: layout.sendRows * rowBytes),
                                  layout: backLayout, rowBytes: rowBytes, channel: 1 + degree + chunk)
            }
            inFlight.combines.append(pending)
        }
        var clock = PhaseClock()
        for pending in inFlight.combines { try inFlight.complete(pending, layer: layerIndex) }
        clock.charge(\.combine, to: &times)
    }
}

/// The exchanges of one pipelined step that are in flight, moved on together.
@MainActor
private final class InFlightExchanges {
    let dispatches: [any PendingExchange]
    var combines: [any PendingExchange] = []
    /// The first failure seen while moving exchanges on from inside the experts.
    private var failure: ExchangeError?

    init(dispatches: [any PendingExchange]) { self.dispatches = dispatches }

    /// Tests every exchange in flight once (no blocking).
    func progress() {
        guard failure == nil else { return }
        do throws(ExchangeError) {
            for pending in dispatches where !pending.isComplete { _ = try pending.test() }
            for pending in combines where !pending.isComplete { _ = try pending.test() }
        } catch { failure = error }
    }

    /// Moves everything on until `pending` completes, yielding the core between rounds — or,
    /// when every exchange in flight waits only for its simulated delivery (MPI has nothing left
    /// to do), sleeping until the earliest, so ranks sharing cores get them.
    func complete(_ pending: any PendingExchange, layer: Int) throws(MoELayerError) {
        try rethrow(layer: layer)
        do throws(ExchangeError) {
            while try !pending.test() {
                progress()
                if let failure { throw failure }
                var earliest = Double.infinity
                var onlyDeliveriesLeft = true
                for other in dispatches + combines where !other.isComplete {
                    guard let time = other.deliveredAt else {
                        onlyDeliveriesLeft = false
                        break
                    }
                    earliest = min(earliest, time)
                }
                if onlyDeliveriesLeft, earliest.isFinite { pending.sleep(until: earliest) } else { sched_yield() }
            }
        } catch { throw .exchange(layer: layer, error) }
    }

    func rethrow(layer: Int) throws(MoELayerError) {
        if let failure { throw .exchange(layer: layer, failure) }
    }
}
