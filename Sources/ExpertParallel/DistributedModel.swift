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

    /// Builds the layers. `weights[l]` must hold this rank's slots of layer l: those of
    /// `placement.slots[l][g]` for this rank's group g, or without a planner the static
    /// placement (`ExpertPlacement(experts: E_l, worldSize: world.size).heldExperts(ofRank:
    /// world.rank)`). Collective over `world`: layers whose
    /// experts are fewer than the ranks split it into groups (one `MPI_Comm_split` per distinct
    /// group size, shared by the layers of that size); `makeExchange` builds the exchange for each
    /// communicator. `drift`, when given, is the drifting workload every layer's gate adds to its
    /// logits; `planCache` the plan-caching strategy of every layer's dispatcher; `trace`, when
    /// given, replaces every gate's choices with recorded ones.
    package init(
        configuration: ModelConfiguration, weights: [LayerWeights], world: Communicator, drift: RouterDrift? = nil,
        planCache: PlanCacheMode = .off, trace: RoutingTrace? = nil, placement planner: PlacementPlanner? = nil,
        makeExchange: (Communicator) throws -> any AllToAll
    ) throws {
        self.configuration = configuration
        worldRank = world.rank
        placements = configuration.layers.map { ExpertPlacement(experts: $0.experts, worldSize: world.size) }
        var exchanges: [Int: any AllToAll] = [:]  // by group size
        var layers: [MoELayer] = []
        for (index, layer) in configuration.layers.enumerated() {
            let placement = placements[index]
            let group = placement.group(ofRank: world.rank)
            if exchanges[placement.groupSize] == nil {
                let communicator = placement.groupCount == 1
                    ? world : try world.split(color: group, key: world.rank)!
                exchanges[placement.groupSize] = try makeExchange(communicator)
            }
            let slots = planner?.slots[index][group] ?? ExpertSlots(placement.blocks(ofGroup: group))
            layers.append(MoELayer(index: index, configuration: layer, model: configuration, weights: weights[index],
                                   slots: slots, maxSlotsPerRank: planner?.maxSlotsPerRank(layer: index, group: group),
                                   exchange: exchanges[placement.groupSize]!,
                                   groupWorldRanks: Array(placement.ranks(ofGroup: group)), worldSize: world.size,
                                   gate: Gate(layerIndex: index, model: configuration, weights: weights[index], drift: drift, trace: trace),
                                   planCache: planCache))
        }
        self.layers = layers
    }

    /// Sets every MoE layer's overlap degree (`degrees[l]` for layer l; dense layers ignore it).
    package func setOverlapDegrees(_ degrees: [Int]) {
        for (layer, degree) in zip(layers, degrees) { layer.overlapDegree = degree }
    }

    /// Reports every layer's phase to `beacon` (for the watchdog).
    package func attach(_ beacon: ProgressBeacon) {
        for layer in layers { layer.beacon = beacon }
    }

    /// Plan-cache outcomes over all layers on this rank.
    package var planCacheTotals: PlanCacheTotals { layers.reduce(PlanCacheTotals()) { $0 + $1.planCacheTotals } }

    /// Runs every layer on this rank's batch, in place, at `step` under `capacity` (the
    /// coordinator's plan for this step).
    package func forward(
        _ batch: inout TokenBatch, capacity: CapacityPlan? = nil, step: Int = 0
    ) throws(MoELayerError) -> StepResult {
        var result = StepResult(plans: [], times: [], volumes: [])
        for (index, layer) in layers.enumerated() {
            var times = PhaseTimes()
            var volume = ExchangeVolume()
            result.plans.append(try layer.forward(&batch.hidden, taskIds: batch.taskIds, step: step,
                                                  capacity: capacity?.layers[index] ?? .configured, firstToken: batch.firstToken,
                                                  times: &times, volume: &volume))
            result.times.append(times)
            result.volumes.append(volume)
        }
        return result
    }
}
