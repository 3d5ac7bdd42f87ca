/// Wall time of each phase of an MoE layer on one rank, in seconds (`MPI_Wtime`).
public struct PhaseTimes: Equatable, Sendable {
    /// LayerNorm, gate GEMM, softmax, top-k and capacity.
    public var gate = 0.0
    /// Copying kept rows into the send buffer, by destination rank and expert.
    public var pack = 0.0
    /// Count exchange and token exchange to the experts' ranks.
    public var dispatch = 0.0
    /// Gathering each expert's rows, the expert GEMMs, and scattering outputs back.
    public var experts = 0.0
    /// Exchange back to the tokens' ranks and the weighted sum in original token order.
    public var combine = 0.0
    /// The part of `experts` spent in the expert FFNs themselves (GEMMs, bias, activation);
    /// the rest of `experts` is gathering rows into per-expert buffers and scattering them back.
    public var expertCompute = 0.0

    public init() {}

    public var total: Double { gate + pack + dispatch + experts + combine }

    public static let names = ["gate", "pack", "dispatch", "experts", "combine"]
    public var values: [Double] { [gate, pack, dispatch, experts, combine] }

    public static func + (lhs: PhaseTimes, rhs: PhaseTimes) -> PhaseTimes {
        var sum = lhs
        sum.gate += rhs.gate
        sum.pack += rhs.pack
        sum.dispatch += rhs.dispatch
        sum.experts += rhs.experts
        sum.combine += rhs.combine
        sum.expertCompute += rhs.expertCompute
        return sum
    }
}

/// Bytes this rank moved in one layer's two exchanges (self-rows included, count messages not).
public struct ExchangeVolume: Equatable, Sendable {
    public var dispatchBytesSent = 0
    public var combineBytesSent = 0
    public init() {}
}
