import MessagePassing

/// The phases of an MoE layer step, in the order a layer runs them (`expertCompute` is part of
/// `experts`, not a phase of its own).
package enum Phase: String, CaseIterable, Sendable {
    case gate, dense, pack, dispatch, experts, combine

    /// Its position in `PhaseTimes.values` and every per-phase array.
    package var index: Int { Self.allCases.firstIndex(of: self)! }
}

/// Wall time of each phase of an MoE layer on one rank, in seconds (`MPI_Wtime`).
package struct PhaseTimes: Equatable, Sendable {
    /// LayerNorm, gate GEMM, softmax, top-k and capacity (and a residual layer's coefficient).
    package var gate = 0.0
    /// The FFNs every local token goes through on its own rank: a residual layer's dense MLP, a
    /// shared expert, a dense layer's FFN (zero for plain MoE layers).
    package var dense = 0.0
    /// Copying kept rows into the send buffer, by destination rank and expert.
    package var pack = 0.0
    /// Count exchange and token exchange to the experts' ranks.
    package var dispatch = 0.0
    /// Gathering each expert's rows, the expert GEMMs, and scattering outputs back.
    package var experts = 0.0
    /// Exchange back to the tokens' ranks and the weighted sum in original token order.
    package var combine = 0.0
    /// The part of `experts` spent in the expert FFNs themselves (GEMMs, bias, activation);
    /// the rest of `experts` is gathering rows into per-expert buffers and scattering them back.
    package var expertCompute = 0.0

    package init() {}

    /// From `values` in `names` order.
    package init(values: [Double]) {
        precondition(values.count == Self.names.count)
        (gate, dense, pack, dispatch, experts, combine) = (values[0], values[1], values[2], values[3], values[4], values[5])
    }

    package var total: Double { gate + dense + pack + dispatch + experts + combine }

    /// The phases' names in the order a layer runs them (`Phase`).
    package static let names = Phase.allCases.map(\.rawValue)
    package var values: [Double] { [gate, dense, pack, dispatch, experts, combine] }

    package static func + (lhs: PhaseTimes, rhs: PhaseTimes) -> PhaseTimes {
        var sum = lhs
        sum.gate += rhs.gate
        sum.dense += rhs.dense
        sum.pack += rhs.pack
        sum.dispatch += rhs.dispatch
        sum.experts += rhs.experts
        sum.combine += rhs.combine
        sum.expertCompute += rhs.expertCompute
        return sum
    }
}

/// Bytes this rank moved in one layer's two exchanges (self-rows included, count messages not).
/// The combine sends back exactly what the dispatch received, so per peer:
/// combine bytes sent to p = `dispatchBytesReceivedFrom[p]`, received from p = `dispatchBytesSentTo[p]`.
package struct ExchangeVolume: Equatable, Sendable {
    package var dispatchBytesSent = 0
    package var combineBytesSent = 0
    /// Dispatch bytes to / from every world rank (`[worldSize]`; zero outside the layer's group).
    package var dispatchBytesSentTo: [Int] = []
    package var dispatchBytesReceivedFrom: [Int] = []
    package init() {}
}

/// Charges the time since the last charge to one phase: each phase of a layer is timed in one
/// place, by the room that runs it.
struct PhaseClock {
    private var last = MPIRuntime.wallTime()

    mutating func charge(_ phase: WritableKeyPath<PhaseTimes, Double>, to times: inout PhaseTimes) {
        let now = MPIRuntime.wallTime()
        times[keyPath: phase] += now - last
        last = now
    }
}
