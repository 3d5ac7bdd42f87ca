import Exchange
import MessagePassing
import MoE

/// The whole model on one rank: a stack of `MoELayer`s sharing one exchange algorithm.
@MainActor
public final class DistributedModel {
    public let configuration: ModelConfiguration
    public let layers: [MoELayer]

    /// One step's results on this rank.
    public struct StepResult {
        public var plans: [RoutingPlan]
        public var times: [PhaseTimes]
        public var volumes: [ExchangeVolume]
    }

    public init(configuration: ModelConfiguration, weights: [LayerWeights], exchange: any AllToAll) {
        self.configuration = configuration
        let ranks = exchange.communicator.size
        layers = configuration.layers.enumerated().map { index, layer in
            MoELayer(index: index, configuration: layer, model: configuration, weights: weights[index],
                     placement: ExpertPlacement(experts: layer.experts, ranks: ranks)!, exchange: exchange)
        }
    }

    /// Runs every layer on this rank's batch, in place.
    public func forward(_ batch: inout TokenBatch) throws(MoELayerError) -> StepResult {
        var result = StepResult(plans: [], times: [], volumes: [])
        for layer in layers {
            var times = PhaseTimes()
            var volume = ExchangeVolume()
            result.plans.append(try layer.forward(&batch.hidden, taskIds: batch.taskIds, times: &times, volume: &volume))
            result.times.append(times)
            result.volumes.append(volume)
        }
        return result
    }
}
