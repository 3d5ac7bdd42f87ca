import ClusterTopology
import Coordination
import Exchange
import ExpertParallel
import JobControl
import MessagePassing
import MoE

/// One forward pass's results, reduced over the job (what every observer reads).
package struct StepOutcome {
    /// 0-based step number.
    package var step: Int
    /// This rank's per-layer plans, phase times and exchange volumes.
    package var result: DistributedModel.StepResult
    /// The slowest rank's time per phase, summed over layers, and its wall time (seconds).
    package var slowestPhases: PhaseTimes
    package var wallSeconds: Double
    /// The slowest rank's seconds inside the expert FFNs (GEMMs, bias, activation), all layers.
    package var slowestExpertComputeSeconds: Double
    /// Tokens over all ranks; kept and dropped routes and dispatch bytes per layer, over all ranks.
    package var tokens: Int
    package var keptByLayer: [Int]
    package var droppedByLayer: [Int]
    package var dispatchBytesByLayer: [Int]
    /// Placement changes decided after this step and the migration that applied them.
    package var placementChanges: [PlacementChange]
    package var migration: MigrationOutcome?

    package var keptRoutes: Int { keptByLayer.reduce(0, +) }
    package var droppedRoutes: Int { droppedByLayer.reduce(0, +) }
}

/// The library session: one model on one exchange algorithm, its coordinator, and the step
/// that every caller — `moe run`, `moe-bench layer`, a decoder — runs once per forward pass:
/// the layers, the non-finite check, the coordinator's statistics and plans, the migration of
/// moved experts, and the job-wide sums. Collective over `world`; every rank builds the same
/// session and calls `forward` with the same step numbers.
///
/// Errors that every rank has agreed on are `AgreedFailure`s (one rank reports them).
@MainActor
package final class InferenceSession {
    package let configuration: RunConfiguration
    package let model: ModelConfiguration
    package let algorithm: AllToAllAlgorithm
    package let world: Communicator
    package let coordinator: Coordinator
    package let distributed: DistributedModel
    /// The instruction-set level this rank's kernels run at, and each layer's expert backend.
    package let isa: CPUISA
    package let kernels: [any ExpertKernels]

    /// This rank's `weights` with every FFN in the backend `configuration` and `model` choose
    /// for its layer (`--expert-precision`, `"expert_precision"`, at the resolved `--cpu-isa`):
    /// what `init` takes, prepared once for all of a run's sessions. Collective over `world`
    /// (the ISA is agreed).
    package static func prepare(_ weights: [LayerWeights], configuration: RunConfiguration, model: ModelConfiguration,
                                world: Communicator) throws -> [PreparedLayerWeights] {
        let isa = try configuration.resolvedISA(world: world)
        let kernels = model.kernels(isa: isa, override: configuration.expertPrecision, int8: configuration.int8)
        return PreparedLayerWeights.prepare(weights, model: model, kernels: kernels, compareWithFP32: configuration.compareWithFP32)
    }

    /// Builds the coordinator and the layers for `algorithm` (this rank's `weights`, holding the
    /// first placement's slots, prepared by `prepare`). `statsPath` is written only when `logStatistics`; `liveEvery`
    /// prints the coordinator's live table. `dispatchModes`, when given, replaces the
    /// configuration's dispatch with one mode per layer (a run's later algorithms reuse the
    /// first one's auto degrees). Collective over `world`.
    package init(
        configuration: RunConfiguration, model: ModelConfiguration, weights: [PreparedLayerWeights], trace: RoutingTrace?,
        algorithm: AllToAllAlgorithm, world: Communicator, topology: Topology, links: SimulatedLinks?,
        logStatistics: Bool = true, liveEvery: Int? = nil, dispatchModes: [DispatchMode]? = nil
    ) throws {
        self.configuration = configuration
        self.model = model
        self.algorithm = algorithm
        self.world = world
        coordinator = try Coordinator(world: world, root: configuration.coordinatorRank, model: model, policy: configuration.capacityPolicy,
                                      placement: configuration.placement, nodeOfRank: topology.nodeOfRank,
                                      statsPath: logStatistics ? configuration.statsPath : nil, liveEvery: liveEvery ?? configuration.statsEvery,
                                      corruptStatistics: configuration.corruptStatisticsRank == world.rank,
                                      exchangeRowBytes: RowCodec(precision: configuration.exchangePrecision, width: model.dModel).rowBytes,
                                      expertWireBytes: weights.enumerated().map { layer, prepared in
                                          prepared.kernels.wireByteCount(form: model.form(.expert, layer: layer), dModel: model.dModel) })
        let dispatch: DistributedModel.Dispatch
        switch dispatchModes.map({ .success(.perLayer($0)) }) ?? configuration.dispatch(topology: topology) {
        case let .success(value): dispatch = value
        case let .failure(error): throw JobFailure(message: "run: \(error)", reportingRank: 0, exitCode: 2)
        }
        let here = world.rank
        isa = try configuration.resolvedISA(world: world)
        kernels = weights.map(\.kernels)
        distributed = try DistributedModel(configuration: model, weights: weights, world: world, drift: configuration.drift,
                                           dispatch: dispatch, exchangePrecision: configuration.exchangePrecision, isa: isa,
                                           trace: trace,
                                           placement: coordinator.placementPlanner) {
            try makeAllToAll(algorithm, communicator: $0, worldRank: here, topology: topology, links: links)
        }
    }

    /// Runs every layer on `batch` in place at `step` under the coordinator's plan, then checks
    /// the outputs, gathers statistics, applies placement changes and reduces the step over the
    /// job. `lastStep`: no step follows (no placement change is planned). `beacon` learns the
    /// phases between the layers'. `beforeLayer(l, &hidden)` runs on this rank's rows before
    /// layer l (a decoder's attention). Collective over `world`.
    package func forward(_ batch: inout TokenBatch, step: Int, lastStep: Bool, beacon: ProgressBeacon? = nil,
                         beforeLayer: ((Int, inout [Float]) -> Void)? = nil) throws -> StepOutcome {
        let start = MPIRuntime.wallTime()
        let result = try distributed.forward(&batch, capacity: coordinator.plan, step: step, beforeLayer: beforeLayer)
        let elapsed = MPIRuntime.wallTime() - start
        try checkFinite(batch, step: step)
        beacon?.enter(phase: "statistics")
        _ = try coordinator.finishStep(step, result: result, tokens: batch.tokenCount, lastStep: lastStep)
        let changes = coordinator.placementChanges
        var migration: MigrationOutcome?
        if !changes.isEmpty {
            beacon?.enter(phase: "expert migration")
            migration = try distributed.migrate(changes, world: world, step: step,
                                                failHere: configuration.failMigration?(step, world.rank) ?? false)
        }
        return try reduce(result, step: step, elapsed: elapsed, tokens: batch.tokenCount, changes: changes, migration: migration)
    }

    /// Hidden states that overflowed inside the model end the job on every rank.
    private func checkFinite(_ batch: TokenBatch, step: Int) throws {
        let nonFinite = batch.firstNonFinite()
        if let badRank = try world.lowestFailingRank(failed: nonFinite != nil) {
            let detail = nonFinite.map { ": rank-local token \($0.0) feature \($0.1) is \(batch.hidden[$0.0 * model.dModel + $0.1])" } ?? ""
            throw JobFailure(message: "step \(step + 1): the model's output on rank \(badRank) is not finite\(detail) [rank \(badRank)]", reportingRank: badRank)
        }
    }

    /// The slowest rank per phase; tokens, routes and bytes summed over ranks.
    private func reduce(
        _ result: DistributedModel.StepResult, step: Int, elapsed: Double, tokens: Int, changes: [PlacementChange], migration: MigrationOutcome?
    ) throws -> StepOutcome {
        let stepTimes = result.times.reduce(PhaseTimes(), +)
        let slowest = try world.allReduce(stepTimes.values + [elapsed, stepTimes.expertCompute], .maximum)
        let kept = result.plans.map { $0.keptPerExpert.reduce(0, +) }
        let dropped = result.plans.map(\.droppedRoutes)
        let bytes = result.volumes.map(\.dispatchBytesSent)
        let sums = try world.allReduce([tokens] + kept + dropped + bytes, .sum)
        let layers = model.layers.count
        return StepOutcome(
            step: step, result: result, slowestPhases: PhaseTimes(values: Array(slowest[..<PhaseTimes.names.count])),
            wallSeconds: slowest[PhaseTimes.names.count], slowestExpertComputeSeconds: slowest[PhaseTimes.names.count + 1], tokens: sums[0],
            keptByLayer: Array(sums[1...layers]), droppedByLayer: Array(sums[1 + layers...2 * layers]),
            dispatchBytesByLayer: Array(sums[1 + 2 * layers...3 * layers]), placementChanges: changes, migration: migration)
    }

    /// Plan-cache outcomes over the job: hits and misses per rank, count exchanges, their mean
    /// seconds, padding bytes. Collective over `world`.
    package func planCacheSummary() throws -> (hitsPerRank: Double, missesPerRank: Double, meanCountExchangeSeconds: Double, paddingBytes: Double) {
        let cache = distributed.planCacheTotals
        let sums = try world.allReduce([Double(cache.hits), Double(cache.misses), Double(cache.countExchanges), cache.countExchangeSeconds,
                                        Double(cache.paddingBytes)], .sum)
        let ranks = Double(world.size)
        return (sums[0] / ranks, sums[1] / ranks, sums[2] > 0 ? sums[3] / sums[2] : 0, sums[4])
    }

    /// The coordinator's closing lines, once `finish` ran.
    package private(set) var closingLines: [String] = []

    /// With `compareWithFP32`, each layer's expert outputs against their fp32 copies' over every
    /// rank and step (nil for layers in fp32 or without experts), once `finish` ran.
    package private(set) var expertErrorAgainstFP32: [PrecisionError?] = []

    /// Ends the session: the coordinator's closing lines, the stats log renamed into place, the
    /// error against fp32 summed over the job. Collective over `world`.
    package func finish() throws {
        closingLines = try coordinator.finish()
        guard configuration.compareWithFP32 else { return }
        let local = distributed.layers.map { $0.expertErrorAgainstFP32 ?? PrecisionError() }
        let maxima = try world.allReduce(local.flatMap { [$0.largestDifference, $0.largestReference] }, .maximum)
        let sums = try world.allReduce(local.flatMap { [$0.differences, $0.magnitudes, Double($0.rows)] }, .sum)
        expertErrorAgainstFP32 = local.indices.map { layer in
            guard kernels[layer].precision != .fp32, !model.layers[layer].dense else { return nil }
            var error = PrecisionError()
            (error.largestDifference, error.largestReference) = (maxima[2 * layer], maxima[2 * layer + 1])
            (error.differences, error.magnitudes, error.rows) = (sums[3 * layer], sums[3 * layer + 1], Int(sums[3 * layer + 2]))
            return error
        }
    }
}
