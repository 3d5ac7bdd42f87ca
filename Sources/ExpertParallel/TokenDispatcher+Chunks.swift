import Exchange
import Glibc
import MessagePassing
import MoE

/// How one layer step's rows split into the chunks of a step of degree N (1: one chunk, every row).
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
    /// Where a step's rows are while its chunks run: the exchanges' buffers (`send`, `receive`,
    /// `back`, rows of `wireRowBytes`: the float buffers themselves for fp32 exchanges) and the
    /// float rows the experts work on (`receivedRows`, `[rows, width]`).
    struct ChunkBuffers {
        let send: UnsafeRawPointer
        let receive: UnsafeMutableRawPointer
        let back: UnsafeMutableRawPointer
        let receivedRows: UnsafeMutablePointer<Float>
    }

    /// The chunks of a step over pinned buffers (see `step`). `delivered`: the rows have
    /// arrived already (a cached plan's dispatch, one chunk), so nothing is posted for them.
    /// With a narrower exchange precision each chunk's rows are decoded on arrival (charged to
    /// `dispatch`; a cached plan decodes its padded blocks itself) and the experts' outputs encoded before their combine is posted (`experts`).
    func runChunks(_ chunks: ChunkPlan, delivered: Bool, buffers: ChunkBuffers, work: LayerWork, times: inout PhaseTimes) throws(MoELayerError) {
        let rowBytes = wireRowBytes
        let degree = chunks.degree
        let encoded = codec.precision != .fp32
        var dispatches: [any PendingExchange] = []
        if delivered { dispatches.append(ArrivedExchange()) }
        for chunk in dispatches.count..<degree {
            let layout = chunks.layouts[chunk]
            let pending = try exchanging { () throws(ExchangeError) in
                try exchange.post(send: UnsafeRawBufferPointer(start: buffers.send + chunks.sendBase[chunk] * rowBytes, count: layout.sendRows * rowBytes),
                                  receive: UnsafeMutableRawBufferPointer(start: buffers.receive + chunks.receiveBase[chunk] * rowBytes,
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
            let layout = chunks.layouts[chunk]
            let wire = buffers.receive + chunks.receiveBase[chunk] * rowBytes
            let rows = UnsafeMutableBufferPointer(start: buffers.receivedRows + chunks.receiveBase[chunk] * width, count: layout.receiveRows * width)
            // A cached plan's rows arrived padded and were decoded into place already.
            if encoded, !delivered { codec.decode(UnsafeRawPointer(wire), rows: layout.receiveRows, into: rows.baseAddress!, isa: isa) }
            clock.charge(\.dispatch, to: &times)
            times.expertCompute += work.computeChunk(rows, Arrival(rowsFrom: chunks.rowsFrom[chunk], layout: layout), progress)
            if encoded { codec.encode(UnsafePointer(rows.baseAddress!), rows: layout.receiveRows, into: wire, isa: isa) }
            clock.charge(\.experts, to: &times)
            try inFlight.rethrow(layer: layerIndex)
            let backLayout = ExchangeLayout(sendCounts: layout.receiveCounts, receiveCounts: layout.sendCounts)!
            let pending = try exchanging { () throws(ExchangeError) in
                try exchange.post(send: UnsafeRawBufferPointer(start: UnsafeRawPointer(wire), count: layout.receiveRows * rowBytes),
                                  receive: UnsafeMutableRawBufferPointer(start: buffers.back + chunks.sendBase[chunk] * rowBytes, count: layout.sendRows * rowBytes),
                                  layout: backLayout, rowBytes: rowBytes, channel: 1 + degree + chunk)
            }
            inFlight.combines.append(pending)
        }
        var clock = PhaseClock()
        for pending in inFlight.combines { try inFlight.complete(pending, layer: layerIndex) }
        clock.charge(\.combine, to: &times)
    }
}

/// An exchange whose rows are already in place (a cached plan's dispatch).
private final class ArrivedExchange: PendingExchange {
    var isComplete: Bool { true }
    func test() throws(ExchangeError) -> Bool { true }
    func wait() throws(ExchangeError) {}
    var deliveredAt: Double? { nil }
    func sleep(until deadline: Double) {}
}

/// The exchanges of one step that are in flight, moved on together.
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
