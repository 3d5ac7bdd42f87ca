import Exchange
import MessagePassing
import MoE

/// One expert-parallel MoE layer on one rank: the order of its phases and their timings.
///
///     gate (norm, `Gate`) → `TokenDispatcher.step`: counts, pack, dispatch (the residual
///     layer's dense MLP and the shared expert while it travels) → `LocalExperts.forward` per
///     chunk → combine (exchange back, weighted sum in original token order, added to the
///     residual stream)
///
/// A residual (PR-MoE) layer also runs its dense MLP on every local token and mixes the two by
/// the per-token coefficient (`ResidualMixture`). A shared expert runs on every local token and
/// is added after the routed sum; a dense layer has only its FFN (no gate, no exchange). The layer runs on its expert-parallel group's
/// communicator (the whole world unless the layer has fewer experts than ranks, see
/// `ExpertPlacement`); ranks below are ranks in that group.
@MainActor
package final class MoELayer {
    package let index: Int
    package let configuration: LayerConfiguration
    package let model: ModelConfiguration
    package let gate: Gate
    let dispatcher: TokenDispatcher
    let experts: LocalExperts
    private let norm: TokenNorm
    private let residual: ResidualWeights?
    private let hasShared: Bool
    /// Where the watchdog learns this rank's phase (nil: no watchdog).
    package var beacon: ProgressBeacon?
    /// How the dispatcher counts and chunks every step (given at construction).
    package var dispatchMode: DispatchMode { dispatcher.mode }
    /// Chunks per step: 1 runs dispatch, experts and combine in turn; N > 1 pipelines them.
    package var overlapDegree: Int { dispatcher.mode.degree }
    /// Rows each of this rank's slots received in the last step (its GEMM row counts), in
    /// slot order.
    package private(set) var receivedRowsPerExpert: [Int] = []

    // Reused buffers (row-major).
    private var normed: [Float] = []        // [T, dModel]
    private var logits: [Float] = []        // [T, E]
    private var denseOutput: [Float] = []   // [T, dModel]
    private var coefficients: [Float] = []  // [T, 2]: (a_mlp, a_expert)
    private var sharedOutput: [Float] = []  // [T, dModel]

    /// Which expert every slot of every rank of this rank's group holds.
    package var slots: ExpertSlots { dispatcher.slots }
    /// Plan-cache outcomes of this layer on this rank.
    package var planCacheTotals: PlanCacheTotals { dispatcher.planCache?.totals ?? PlanCacheTotals() }

    /// `exchange` runs on the group communicator; `slots` is the group's placement (the static
    /// one: `ExpertSlots(blocks)`), and `prepared` must hold exactly this rank's slots (and the
    /// residual weights for a residual layer), its FFNs in their backend's form;
    /// `maxSlotsPerRank` bounds any placement adopted later (default: the slots now). `gate`
    /// routes the layer (`Gate(layerIndex:model:weights:drift:)` by default); `mode` is how every
    /// step counts and chunks (the same on every group rank).
    package init(index: Int, configuration: LayerConfiguration, model: ModelConfiguration, prepared: PreparedLayerWeights,
                slots: ExpertSlots, maxSlotsPerRank: Int? = nil, exchange: any AllToAll, groupWorldRanks: [Int]? = nil, worldSize: Int? = nil,
                gate: Gate? = nil, mode: DispatchMode = .sequential,
                exchangePrecision: ExchangePrecision = .fp32, isa: CPUISA = .portable) {
        let weights = prepared.rest
        precondition(configuration.dense || weights.slotExperts == slots.slots[exchange.communicator.rank])
        precondition(configuration.residual == (weights.residual != nil))
        precondition(configuration.dense == (weights.dense != nil))
        self.index = index
        self.configuration = configuration
        self.model = model
        self.gate = gate ?? Gate(layerIndex: index, model: model, weights: weights)
        norm = weights.norm
        residual = weights.residual
        hasShared = weights.shared != nil
        experts = LocalExperts(weights: prepared, dModel: model.dModel)
        dispatcher = TokenDispatcher(layerIndex: index, layer: configuration, width: model.dModel, slots: slots,
                                     maxSlotsPerRank: maxSlotsPerRank ?? slots.slots.map(\.count).max() ?? 0, exchange: exchange,
                                     groupWorldRanks: groupWorldRanks ?? Array(0..<exchange.communicator.size),
                                     worldSize: worldSize ?? exchange.communicator.size, mode: mode, exchangePrecision: exchangePrecision, isa: isa)
    }

    /// The logical expert in each of this rank's slots, and their FFNs in the backend's form.
    package var slotExperts: [Int] { experts.slotExperts }
    package var slotFFNs: [any PreparedFFN] { experts.slotFFNs }
    /// The backend this layer's FFNs run on.
    package var kernels: any ExpertKernels { experts.kernels }
    /// Bytes of FFN weights this rank holds for the layer.
    package var expertBytesHeld: Int { experts.bytesHeld }
    /// How far this rank's expert outputs were from fp32 copies' (`--compare-fp32`), nil when
    /// the layer does not compare.
    package var expertErrorAgainstFP32: PrecisionError? { experts.comparesWithFP32 ? experts.errorAgainstFP32 : nil }

    /// Adopts a new placement of the group (`slots`) with this rank's FFNs for its slots in
    /// it, from the next step on. Every rank of the group must adopt it before that step.
    package func adopt(_ slots: ExpertSlots, experts ffns: [any PreparedFFN]) {
        let here = dispatcher.groupRank
        precondition(ffns.count == slots.slots[here].count)
        experts.adopt(slotExperts: slots.slots[here], experts: ffns)
        dispatcher.adopt(slots)
    }

    private static func grow(_ buffer: inout [Float], to count: Int) {
        if buffer.count < count { buffer = [Float](repeating: 0, count: count) }
    }

    /// Runs the layer on this rank's tokens: `hidden` (row-major `[T, dModel]`) becomes
    /// `hidden + MoE(LayerNorm(hidden))`. Collective over the layer's communicator. `step` is
    /// the step's number (the gate's drifting workload follows it), `capacity` this step's
    /// capacity plan for the layer.
    package func forward(
        _ hidden: inout [Float], taskIds: [Int], step: Int = 0, capacity: LayerCapacity = .configured, firstToken: Int = 0,
        sequenceLength: Int? = nil, times: inout PhaseTimes, volume: inout ExchangeVolume
    ) throws(MoELayerError) -> RoutingPlan {
        let d = model.dModel
        let tokens = hidden.count / d
        var clock = PhaseClock()

        beacon?.enter(layer: index, phase: "gate")
        Self.grow(&normed, to: tokens * d)
        hidden.withUnsafeBufferPointer { input in
            normed.withUnsafeMutableBufferPointer { output in
                if tokens > 0 { norm.apply(input.baseAddress!, rows: tokens, width: d, into: output.baseAddress!) }
            }
        }
        if configuration.dense {
            clock.charge(\.gate, to: &times)
            beacon?.enter(phase: "dense")
            experts.dense(input: normed, rows: tokens, into: &denseOutput)
            Self.add(denseOutput, count: tokens * d, to: &hidden)
            clock.charge(\.dense, to: &times)
            return RoutingPlan.denseLayer(tokenCount: tokens)
        }
        let routing = normed.withUnsafeBufferPointer { rows in
            Result { () throws(RoutingError) in
                try gate.route(normalized: rows, tokenCount: tokens, taskIds: taskIds, step: step, capacity: capacity, logits: &logits,
                               firstToken: firstToken, sequenceLength: sequenceLength)
            }
        }
        if let residual {
            coefficients = normed.withUnsafeBufferPointer { x in
                ResidualMixture.coefficients(normed: x.baseAddress!, rows: tokens, dModel: d, weights: residual)
            }
        }
        clock.charge(\.gate, to: &times)

        beacon?.enter(phase: overlapDegree > 1 ? "pipeline" : "dispatch")
        var denseSeconds = 0.0
        let progressBetweenGEMMs: Bool
        if case .counted(_, .chunks) = dispatchMode { progressBetweenGEMMs = false } else { progressBetweenGEMMs = true }
        let work = TokenDispatcher.LayerWork(
            whileDispatching: { progress in
                let start = MPIRuntime.wallTime()
                let between = progressBetweenGEMMs ? progress : nil
                if self.residual != nil { self.experts.dense(input: self.normed, rows: tokens, into: &self.denseOutput, between: between) }
                if self.hasShared { self.experts.shared(input: self.normed, rows: tokens, into: &self.sharedOutput, between: between) }
                denseSeconds += MPIRuntime.wallTime() - start
            },
            computeChunk: { rows, arrival, progress in
                self.beacon?.enter(phase: "experts")
                return self.experts.forward(received: rows, arrival: arrival, between: progressBetweenGEMMs ? progress : nil)
            })
        let (plan, rowsPerSlot) = try dispatcher.step(
            tokenRows: normed, tokenCount: tokens, routing: routing, capacity: capacity, sequenceLength: sequenceLength, work: work,
            residual: { self.residual == nil ? nil : (self.coefficients, self.denseOutput) }, into: &hidden, times: &times, volume: &volume)
        // The dense work ran while the dispatch travelled (charged to no exchange phase).
        times.dense += denseSeconds
        receivedRowsPerExpert = rowsPerSlot
        if hasShared {
            clock = PhaseClock()
            Self.add(sharedOutput, count: tokens * d, to: &hidden)
            clock.charge(\.dense, to: &times)
        }
        return plan
    }

    /// `hidden[i] += values[i]` for the first `count` values.
    private static func add(_ values: [Float], count: Int, to hidden: inout [Float]) {
        hidden.withUnsafeMutableBufferPointer { target in
            values.withUnsafeBufferPointer { source in
                for index in 0..<count { target[index] += source[index] }
            }
        }
    }
}
