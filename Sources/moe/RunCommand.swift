import ArgumentParsing
import ClusterTopology
import Coordination
import Exchange
import ExpertParallel
import FileFormats
import JobControl
import Foundation
import MessagePassing
import MoE
import Session

/// `moe run`: the distributed forward pass of an MoE model, timed per phase.
struct RunCommand: JobCommand {
    static let spec = CommandSpec(
        name: "run",
        summary: "Run the expert-parallel MoE model: route, dispatch, experts, combine; timed per phase.",
        discussion: """
            Every rank holds a contiguous block of each layer's experts and routes its own tokens
            (with --redundant-experts and --placement balanced, replicas of the hot experts, moved
            between steps from the coordinator's statistics).
            Each step prints the slowest rank's time per phase (gate, pack, dispatch, experts,
            combine), tokens/s over all ranks and the share of routes dropped. With several
            --exchange algorithms the same steps run once per algorithm and the outputs must be
            bitwise identical (the algorithm never changes the numbers).
            """,
        options: ModelOptions.specs + CapacityOptions.specs + PlacementOptions.specs + PrecisionOptions.specs + Options.specs + TopologyOptions.specs
            + BLASThreadOptions.specs
            + TestingAids.specs)

    let model: ModelOptions.Values
    let capacity: CapacityOptions.Values
    let placementPolicy: PlacementPolicy
    let topologyOptions: TopologyOptions.Values
    let blasThreads: Int?
    let timeoutSeconds: Double?
    let quiet: Bool
    let outputPath: String?, routingPath: String?, reportPath: String?, statsPath: String?
    let traceOutputPath: String?, traceWeightsOutputPath: String?
    let overlapDegree: OverlapDegree?
    /// Everything else about the run, as the session takes it (model-dependent parts are
    /// filled in by `run`).
    let runConfiguration: RunConfiguration
    let testingAids: TestingAids

    init(options: ParsedOptions) throws(UsageError) {
        model = try ModelOptions.read(options)
        capacity = try CapacityOptions.read(options, seed: model.seed)
        placementPolicy = try PlacementOptions.read(options)
        topologyOptions = try TopologyOptions.read(options)
        blasThreads = try options.value(BLASThreadOptions.blasThreads)
        timeoutSeconds = try options.value(Options.timeout)
        quiet = try options.value(Options.quiet)
        outputPath = try options.value(Options.output)
        routingPath = try options.value(Options.routingOutput)
        reportPath = try options.value(Options.report)
        statsPath = try options.value(Options.stats)
        traceOutputPath = try options.value(Options.routingTraceOutput)
        traceWeightsOutputPath = try options.value(Options.routingTraceWeightsOutput)
        if traceWeightsOutputPath != nil, traceOutputPath == nil {
            throw .conflict(command: "run", detail: "--routing-trace-weights-output records the weights of a --routing-trace-output; give both")
        }
        overlapDegree = try options.value(Options.overlapDegree)
        testingAids = try TestingAids(options: options)
        var run = RunConfiguration()
        run.algorithms = try options.value(Options.exchange)
        run.steps = try options.value(Options.steps)
        run.planCache = try options.value(Options.planCache)
        run.overlapProgress = try options.value(Options.overlapProgress)
        run.capacityPolicy = capacity.policy
        run.drift = capacity.drift
        run.placement = placementPolicy
        run.coordinatorRank = try options.value(Options.coordinator)
        run.statsPath = statsPath
        run.statsEvery = quiet ? 0 : try options.value(Options.statsEvery)
        let precision = try PrecisionOptions.read(options)
        (run.expertPrecision, run.cpuISA, run.exchangePrecision) = (precision.expertPrecision, precision.cpuISA, precision.exchangePrecision)
        run.int8 = precision.int8
        run.compareWithFP32 = try options.value(Options.compareFP32)
        run.corruptStatisticsRank = testingAids.corruptStatsRank
        let aids = testingAids
        run.failMigration = { step, rank in aids.failMigrationIsDue(step: step, rank: rank) }
        runConfiguration = run
    }

    func run(_ context: JobContext) throws {
        let world = try context.world()
        try context.checkPaths(outputs: [Options.output.naming(outputPath), Options.routingOutput.naming(routingPath), Options.report.naming(reportPath),
                                         Options.routingTraceOutput.naming(traceOutputPath), Options.routingTraceWeightsOutput.naming(traceWeightsOutputPath),
                                         Options.stats.naming(statsPath), Options.stats.naming(statsPath.map { $0 + ".partial" })],
                               inputs: model.inputPaths + [TopologyOptions.topology.naming(topologyOptions.topologyPath)])
        let (topology, links) = try context.topologyAndLinks(topologyOptions)
        try refuseInapplicableOptions(context, ranks: world.size)
        let isa = try runConfiguration.resolvedISA(world: world)
        let (threads, localRanks) = try context.configureBLASThreads(requested: blasThreads)
        var loaded = try loadModel(context, world: world, topology: topology)
        let configuration = try sessionConfiguration(for: loaded, ranks: world.size)
        // The FFNs in their backends' forms, once; the fp32 arrays go (a bf16 or int8 run holds less).
        let prepared = try InferenceSession.prepare(loaded.weights, configuration: configuration, model: loaded.configuration, world: world)
        loaded.weights = []
        if world.rank == 0 {
            printBanner(loaded.configuration, ranks: world.size, topology: topology, simulated: links != nil, threads: threads, localRanks: localRanks,
                        isa: isa)
        }
        let watchdog = try timeoutSeconds.map { try Watchdog(world: world, timeoutSeconds: $0) }
        defer { watchdog?.stop() }
        let console = ConsoleReporter(quiet: quiet, isRankZero: world.rank == 0, changeLines: PlacementReport.changeLines)
        let report = JSONRunReport()
        let recorder = traceOutputPath.map { _ in RoutingTraceRecorder(layers: loaded.configuration.layers.count,
                                                                       topK: loaded.configuration.layers.map(\.topK).max() ?? 1) }
        let aids = TestingAidsObserver(testingAids, rank: world.rank, beacon: watchdog?.beacon)
        let loop = StepLoop(configuration: configuration, model: loaded.configuration, weights: prepared, trace: loaded.trace,
                           world: world, topology: topology, links: links, input: inputs(context, model: loaded.configuration, rank: world.rank, ranks: world.size))
        let result = try loop.run(observers: [aids, console, report] + (recorder.map { [$0] } ?? []), beacon: watchdog?.beacon)

        if configuration.algorithms.count > 1, result.stopped == nil, world.rank == 0 {
            print("outputs identical across exchanges: \(configuration.algorithms.map(\.rawValue).joined(separator: ", "))")
        }
        try printMemory(world: world, afterFirstStep: console.memoryAfterFirstStep, lastStep: result.stopped?.afterStep ?? configuration.steps)
        try writeOutputs(context: context, world: world, configuration: loaded.configuration, batch: result.lastBatch, plans: result.lastPlans,
                         runs: report.runs, topology: topology, threads: threads)
        if let recorder, let traceOutputPath {
            try context.collectively {
                guard world.rank == 0 else { return }
                try recorder.write(experts: traceOutputPath, weights: traceWeightsOutputPath)
            }
        }
        if let stopped = result.stopped {
            throw JobFailure(message: "stopped by \(TerminationSignal.name(stopped.signal)) after step \(stopped.afterStep) of \(configuration.steps); the outputs hold step \(stopped.afterStep)",
                             reportingRank: 0, exitCode: 128 + stopped.signal)
        }
    }
}
