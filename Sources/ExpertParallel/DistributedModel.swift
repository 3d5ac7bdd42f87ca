import ClusterTopology
import Exchange
import MessagePassing
import MoE

/// The whole model on one rank: a stack of `MoELayer`s, each running on its expert-parallel
/// group's communicator (see `ExpertPlacement`) with the chosen exchange algorithm.
@MainActor
package final class DistributedModel {
    package let configuration: ModelConfiguration
    package let layers: [MoELayer]
    /// Each layer's groups over the world.
    package let placements: [ExpertPlacement]
    /// This rank's world rank.
    package let worldRank: Int

    /// One step's results on this rank.
    package struct StepResult {
        package var plans: [RoutingPlan]
        package var times: [PhaseTimes]
        package var volumes: [ExchangeVolume]
    }

    /// How every layer's dispatcher runs its steps.
    package enum Dispatch {
        /// Every layer in `mode`.
        case fixed(DispatchMode)
        /// Layer l in `modes[l]` (e.g. the degrees an earlier auto choice made).
        case perLayer([DispatchMode])
        /// A degree per layer chosen by the cost model (`OverlapPlanner`) for `tokensPerRank`
        /// tokens on `topology`, counted every step, progress at `progress`.
        case autoDegree(progress: OverlapProgress, topology: Topology, tokensPerRank: Int)
    }

    /// The auto degree's choice for every MoE layer (empty unless `Dispatch.autoDegree`).
    package let overlapChoices: [OverlapPlanner.Choice]

    /// Builds the layers. `weights[l]` (its FFNs in their backend's form, prepared once per run)
    /// must hold this rank's slots of layer l: those of
    /// `placement.slots[l][g]` for this rank's group g, or without a planner the static
    /// placement (`ExpertPlacement(experts: E_l, worldSize: world.size).heldExperts(ofRank:
    /// world.rank)`). Collective over `world`: layers whose
    /// experts are fewer than the ranks split it into groups (one `MPI_Comm_split` per distinct
    /// group size, shared by the layers of that size); `makeExchange` builds the exchange for each
    /// communicator. `drift`, when given, is the drifting workload every layer's gate adds to its
    /// logits; `dispatch` how every layer's steps count
    /// and chunk; `exchangePrecision` the rows' format on the wire (decoded at `isa`); `trace`,
    /// when given, replaces every gate's choices with recorded ones.
    package init(
        configuration: ModelConfiguration, weights: [PreparedLayerWeights], world: Communicator, drift: RouterDrift? = nil,
        dispatch: Dispatch = .fixed(.sequential), exchangePrecision: ExchangePrecision = .fp32,
        isa: CPUISA = .portable, trace: RoutingTrace? = nil,
        placement planner: PlacementPlanner? = nil, makeExchange: (Communicator) throws -> any AllToAll
    ) throws {
        self.configuration = configuration
        worldRank = world.rank
        precondition(weights.count == configuration.layers.count)
        let placements = configuration.layers.map { ExpertPlacement(experts: $0.experts, worldSize: world.size) }
        self.placements = placements
        var exchanges: [Int: any AllToAll] = [:]  // by group size
        for placement in placements where exchanges[placement.groupSize] == nil {
            let communicator = placement.groupCount == 1
                ? world : try world.split(color: placement.group(ofRank: world.rank), key: world.rank)!
            exchanges[placement.groupSize] = try makeExchange(communicator)
        }
        let slots = placements.indices.map { index in
            planner?.slots[index][placements[index].group(ofRank: world.rank)]
                ?? ExpertSlots(placements[index].blocks(ofGroup: placements[index].group(ofRank: world.rank)))
        }
        let modes: [DispatchMode]
        let overlapChoices: [OverlapPlanner.Choice]
        switch dispatch {
        case let .fixed(mode):
            modes = Array(repeating: mode, count: configuration.layers.count)
            overlapChoices = []
        case let .perLayer(given):
            precondition(given.count == configuration.layers.count)
            modes = given
            overlapChoices = []
        case let .autoDegree(progress, topology, tokensPerRank):
            let inputs = configuration.layers.indices.map { index in
                OverlapPlanner.LayerInput(
                    index: index, configuration: configuration.layers[index], sampleExpert: weights[index].experts.first,
                    maxSlotsPerRank: slots[index].slots.map(\.count).max() ?? 1, groupSize: placements[index].groupSize,
                    schedule: exchanges[placements[index].groupSize]!.modeledSchedule,
                    rowBytes: RowCodec(precision: exchangePrecision, width: configuration.dModel).rowBytes)
            }
            overlapChoices = try OverlapPlanner.choose(model: configuration, layers: inputs, world: world, topology: topology, tokensPerRank: tokensPerRank)
            var degrees = Array(repeating: 1, count: configuration.layers.count)
            for choice in overlapChoices { degrees[choice.layer] = choice.degree }
            modes = degrees.map { .counted(degree: $0, progress: progress) }
        }
        self.overlapChoices = overlapChoices
        layers = configuration.layers.indices.map { index in
            let placement = placements[index]
            let group = placement.group(ofRank: world.rank)
            return MoELayer(index: index, configuration: configuration.layers[index], model: configuration, prepared: weights[index],
                            slots: slots[index], maxSlotsPerRank: planner?.maxSlotsPerRank(layer: index, group: group),
                            exchange: exchanges[placement.groupSize]!,
                            groupWorldRanks: Array(placement.ranks(ofGroup: group)), worldSize: world.size,
                            gate: Gate(layerIndex: index, model: configuration, weights: weights[index].rest, drift: drift, trace: trace),
                            mode: modes[index], exchangePrecision: exchangePrecision, isa: isa)
        }
    }

    /// Reports every layer's phase to `beacon` (for the watchdog).
    package func attach(_ beacon: ProgressBeacon) {
        for layer in layers { layer.beacon = beacon }
    }

    /// Plan-cache outcomes over all layers on this rank.
    package var planCacheTotals: PlanCacheTotals { layers.reduce(PlanCacheTotals()) { $0 + $1.planCacheTotals } }

    /// Runs every layer on this rank's batch, in place, at `step` under `capacity` (the
    /// coordinator's plan for this step).
    /// `beforeLayer(l, &hidden)` runs on this rank's rows before layer l (a decoder's attention:
    /// data-parallel, no exchange).
    package func forward(
        _ batch: inout TokenBatch, capacity: CapacityPlan? = nil, step: Int = 0, beforeLayer: ((Int, inout [Float]) -> Void)? = nil
    ) throws(MoELayerError) -> StepResult {
        var result = StepResult(plans: [], times: [], volumes: [])
        for (index, layer) in layers.enumerated() {
            beforeLayer?(index, &batch.hidden)
            var times = PhaseTimes()
            var volume = ExchangeVolume()
            result.plans.append(try layer.forward(&batch.hidden, taskIds: batch.taskIds, step: step,
                                                  capacity: capacity?.layers[index] ?? .configured, firstToken: batch.firstToken, sequenceLength: batch.sequenceLength,
                                                  times: &times, volume: &volume))
            result.times.append(times)
            result.volumes.append(volume)
        }
        return result
    }
}
