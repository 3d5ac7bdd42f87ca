import ClusterTopology
import Exchange
import ExpertParallel
import JobControl
import MessagePassing
import MoE

/// How a run of the model goes, as one value: everything a `moe run`, a benchmark or a decoder
/// decides before the first step (the model file says what the model is; this says how to run
/// it). Every rank must hold the same value.
package struct RunConfiguration: Sendable {
    /// Exchange algorithms: each runs the same steps in turn; outputs must be bitwise equal.
    package var algorithms: [AllToAllAlgorithm] = [.linear]
    /// Forward steps per algorithm.
    package var steps = 1
    /// Tokens per rank per step (for the auto overlap degree's cost model).
    package var tokensPerRank = 0
    /// The plan cache (nil: the count exchange every step).
    package var planCache: PlanCacheMode?
    /// Chunks per layer step (1: sequential; auto: per layer from the cost model).
    package var overlap: OverlapDegree = .fixed(1)
    /// Where a pipelined step lets MPI progress.
    package var overlapProgress: OverlapProgress = .gemms
    /// The capacity policy the coordinator plans with, and the drifting workload, if any.
    package var capacityPolicy: CapacityPolicy = .staticFactor
    package var drift: RouterDrift?
    /// Expert placement (static blocks, or replicas re-placed between steps).
    package var placement: PlacementPolicy = .contiguous
    /// The rank that gathers statistics and plans (`Coordinator`).
    package var coordinatorRank = 0
    /// The stats log (JSON lines, first algorithm only), and the live table's period (0: never).
    package var statsPath: String?
    package var statsEvery = 0
    /// The precision every layer's experts compute in (nil: each layer's, from the model file).
    package var expertPrecision: ExpertPrecision?
    /// The instruction-set level SwiftMoE's own kernels may use (`--cpu-isa`); each rank
    /// resolves it on its own CPU (`resolvedISA`).
    package var cpuISA: CPUISA = .native
    /// The format token rows travel in between ranks (`--exchange-precision`).
    package var exchangePrecision: ExchangePrecision = .fp32
    /// How int8 experts quantise (`--int8-activations`, `--int8-group-size`, `--int8-outliers`).
    package var int8 = Int8Settings()
    /// Whether lower-precision experts are also run in fp32 for their error (`--compare-fp32`).
    package var compareWithFP32 = false
    /// Testing aids: this rank sends malformed statistics; a migration fails on (rank, step).
    package var corruptStatisticsRank: Int?
    package var failMigration: (@Sendable (_ step: Int, _ rank: Int) -> Bool)?

    package init() {}

    /// `cpuISA` on this rank's CPU; every rank stops (one line from the lowest failing rank,
    /// naming the missing flag, exit 2) when one CPU lacks it. Collective over `world`.
    @MainActor
    package func resolvedISA(world: Communicator) throws -> CPUISA { try Self.resolve(cpuISA, world: world) }

    /// `requested` on this rank's CPU, agreed as `resolvedISA` does. Collective over `world`.
    @MainActor
    package static func resolve(_ requested: CPUISA, world: Communicator) throws -> CPUISA {
        let resolution = requested.resolved()
        if let failed = try world.lowestFailingRank(failed: (try? resolution.get()) == nil) {
            let message: String
            if case let .failure(error) = resolution { message = "rank \(world.rank): \(error)" } else { message = "" }
            throw JobFailure(message: message, reportingRank: failed, exitCode: 2)
        }
        return try resolution.get()
    }

    /// How every layer's dispatcher runs, or why these settings do not go together.
    package func dispatch(topology: Topology) -> Result<DistributedModel.Dispatch, DispatchModeError> {
        switch overlap {
        case .auto:
            if planCache != nil { return .failure(.planCacheWithOverlap(overlap: "auto")) }
            return .success(.autoDegree(progress: overlapProgress, topology: topology, tokensPerRank: tokensPerRank))
        case let .fixed(degree):
            return DispatchMode.of(planCache: planCache, degree: degree, progress: overlapProgress).map { .fixed($0) }
        }
    }
}
