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
        options: ModelOptions.specs + CapacityOptions.specs + PlacementOptions.specs + Options.specs + TopologyOptions.specs + BLASThreadOptions.specs
            + TestingAids.specs)

    /// `moe run`'s own options (the shared groups are declared in ModelOptions, CapacityOptions,
    /// TopologyOptions and BLASThreadOptions).
    enum Options {
        static let stats = TypedOption<String?>.string(
            "stats", "FILE", "write the coordinator's routing statistics, one JSON line per step (see 'moe stats')")
        static let statsEvery = TypedOption<Int>.integer("stats-every", default: 10, in: 0...1_000_000,
                                                         "print the coordinator's live table every N steps (0: never)")
        static let coordinator = TypedOption<Int>.integer("coordinator", "RANK", default: 0, in: 0...1_000_000,
                                                          "rank that gathers statistics and plans capacity")
        static let planCacheHeadroom = TypedOption<Double>.number("plan-cache-headroom", "H", default: 0.25, in: 0...100,
                                                                  "observed mode: blocks are last step's rows × (1 + H) + 1")
        static let planCache = TypedOption<PlanCacheMode>(spec: .value(
            "plan-cache", "MODE", default: "off",
            "skip the count exchange with block sizes known from the last step: capacity, observed or off (docs/CAPACITY.md)")
        ) { (options) throws(UsageError) in
            switch options.string("plan-cache") ?? "off" {
            case "off": return .off
            case "capacity": return .capacity
            case "observed": return .observed(headroom: try options.value(planCacheHeadroom))
            case let other: throw .invalidValue(command: options.command, option: "plan-cache", value: other, expected: "capacity, observed or off")
            }
        }
        static let timeout = TypedOption<Double?>.number(
            "timeout-s", "S", in: 0.5...1e7,
            "watchdog: end the job when a step makes no progress for S seconds, naming the phase and the ranks that had not arrived")
        static let steps = TypedOption<Int>.integer("steps", default: 3, in: 1...10_000_000, "forward steps (generated inputs change every step)")
        static let exchange = TypedOption<[AllToAllAlgorithm]>.choices(
            "exchange", "LIST", default: [.linear],
            "all-to-all algorithm(s): " + AllToAllAlgorithm.allCases.map(\.rawValue).joined(separator: ",") + " or all")
        static let output = TypedOption<String?>.string(
            "output", "FILE", "write the last step's output hidden states as float32 .npy [tokens, d_model] (rank 0 gathers)")
        static let routingOutput = TypedOption<String?>.string(
            "routing-output", "FILE", "write the last step's routing decisions as JSON (rank 0 gathers)")
        static let report = TypedOption<String?>.string("report", "FILE", "write a JSON report of every step (rank 0)")
        static let routingTraceOutput = TypedOption<String?>.string(
            "routing-trace-output", "FILE", "record every step's routing as a trace for --routing-trace: int32 .npy [steps, layers, tokens, k]")
        static let routingTraceWeightsOutput = TypedOption<String?>.string(
            "routing-trace-weights-output", "FILE", "record the routes' weights before normalisation for --routing-trace-weights (float32 .npy)")
        static let overlapDegree = TypedOption<OverlapDegree?>(spec: .value(
            "overlap-degree", "N|auto",
            "split each layer step into N chunks so exchanges overlap the experts (1: sequential; auto: from the cost model); default: the model's overlap_degree, else 1")
        ) { (options) throws(UsageError) in
            guard let text = options.string("overlap-degree") else { return nil }
            switch OverlapDegree.parse(text) {
            case let .success(degree): return degree
            case let .failure(error):
                throw .invalidValue(command: options.command, option: "overlap-degree", value: text, expected: "an integer in 1...\(OverlapDegree.limit) or auto (\(error.detail))")
            }
        }
        static let overlapProgress = TypedOption<Bool>(spec: .value(
            "overlap-progress", "WHERE", default: "gemms",
            "when a pipelined layer lets MPI move its exchanges: gemms (between every GEMM, the default) or chunks (only between chunks; for comparison)")
        ) { (options) throws(UsageError) in
            switch options.string("overlap-progress") ?? "gemms" {
            case "gemms": return true
            case "chunks": return false
            case let other: throw .invalidValue(command: options.command, option: "overlap-progress", value: other, expected: "gemms or chunks")
            }
        }
        static let quiet = TypedOption<Bool>.flag("quiet", "print only the summary")
        static let specs = [stats.spec, statsEvery.spec, coordinator.spec, planCache.spec, planCacheHeadroom.spec, timeout.spec,
                            steps.spec, exchange.spec, output.spec, routingOutput.spec, report.spec, routingTraceOutput.spec,
                            routingTraceWeightsOutput.spec, overlapDegree.spec, overlapProgress.spec, quiet.spec]
    }

    let model: ModelOptions.Values
    let capacity: CapacityOptions.Values
    let placementPolicy: PlacementPolicy
    let statsPath: String?
    let statsEvery: Int
    let coordinatorRank: Int
    let planCache: PlanCacheMode
    let timeoutSeconds: Double?
    let topologyOptions: TopologyOptions.Values
    let steps: Int
    let algorithms: [AllToAllAlgorithm]
    let blasThreads: Int?
    let outputPath: String?
    let routingPath: String?
    let reportPath: String?
    let traceOutputPath: String?
    let traceWeightsOutputPath: String?
    let quiet: Bool
    let overlapDegree: OverlapDegree?
    let progressBetweenGEMMs: Bool
    let testingAids: TestingAids

    init(options: ParsedOptions) throws(UsageError) {
        model = try ModelOptions.read(options)
        capacity = try CapacityOptions.read(options, seed: model.seed)
        placementPolicy = try PlacementOptions.read(options)
        statsPath = try options.value(Options.stats)
        statsEvery = try options.value(Options.statsEvery)
        coordinatorRank = try options.value(Options.coordinator)
        planCache = try options.value(Options.planCache)
        timeoutSeconds = try options.value(Options.timeout)
        topologyOptions = try TopologyOptions.read(options)
        steps = try options.value(Options.steps)
        algorithms = try options.value(Options.exchange)
        blasThreads = try options.value(BLASThreadOptions.blasThreads)
        outputPath = try options.value(Options.output)
        routingPath = try options.value(Options.routingOutput)
        reportPath = try options.value(Options.report)
        traceOutputPath = try options.value(Options.routingTraceOutput)
        traceWeightsOutputPath = try options.value(Options.routingTraceWeightsOutput)
        if traceWeightsOutputPath != nil, traceOutputPath == nil {
            throw .conflict(command: "run", detail: "--routing-trace-weights-output records the weights of a --routing-trace-output; give both")
        }
        quiet = try options.value(Options.quiet)
        overlapDegree = try options.value(Options.overlapDegree)
        progressBetweenGEMMs = try options.value(Options.overlapProgress)
        testingAids = try TestingAids(options: options)
    }

    func run(_ context: JobContext) throws {
        let world = try context.world()
        try context.checkPaths(outputs: [Options.output.naming(outputPath), Options.routingOutput.naming(routingPath), Options.report.naming(reportPath),
                                         Options.routingTraceOutput.naming(traceOutputPath), Options.routingTraceWeightsOutput.naming(traceWeightsOutputPath),
                                         Options.stats.naming(statsPath), Options.stats.naming(statsPath.map { $0 + ".partial" })],
                               inputs: model.inputPaths + [TopologyOptions.topology.naming(topologyOptions.topologyPath)])
        let (topology, links) = try context.topologyAndLinks(topologyOptions)
        let ranks = world.size
        // Options that cannot apply to this job are refused, not ignored (every rank reaches the
        // same verdict from the same numbers; usage errors exit 2).
        if let problem = testingAids.problem(ranks: ranks, steps: steps) {
            throw JobFailure(message: "run: \(problem)", reportingRank: 0, exitCode: 2)
        }
        try context.collectively {
            guard coordinatorRank < ranks else {
                throw InputError(description: "--coordinator \(coordinatorRank): the job has ranks 0...\(ranks - 1)")
            }
        }
        let here = world.rank

        // Everything a rank reads is checked before the first exchange, and the ranks agree.
        let (threads, localRanks) = try context.configureBLASThreads(requested: blasThreads)
        let configuration = try context.collectively { try model.loadModel() }
        if let problem = placementPolicy.problem(layers: configuration.layers, worldSize: ranks) {
            throw JobFailure(message: "run: \(problem)", reportingRank: 0, exitCode: 2)
        }
        // The first placement (the same on every rank and in every coordinator: it depends on
        // the policy alone) says which experts this rank loads.
        let firstPlacement = PlacementPlanner(policy: placementPolicy, layers: configuration.layers, worldSize: ranks, nodeOfRank: topology.nodeOfRank)
        func slotExperts(_ layer: Int) -> [Int] {
            let placement = firstPlacement.placements[layer]
            return firstPlacement.slots[layer][placement.group(ofRank: here)].slots[placement.rankInGroup(here)]
        }
        let (weights, weightsIdentity) = try context.collectively { () throws -> ([LayerWeights], String) in
            // Before any weight or buffer is allocated: does this fit the node?
            let estimate = MemoryEstimate.of(
                model: configuration,
                expertSlots: { firstPlacement.maxSlotsPerRank(layer: $0, group: firstPlacement.placements[$0].group(ofRank: here)) },
                tokens: try model.tokensPerRank(ranks: ranks), sourceRanks: ranks, capacityPlanCache: planCache == .capacity)
            if let problem = estimate.problem(processes: localRanks) { throw InputError(description: problem) }
            let file = try model.openWeights()
            let weights = try ModelWeights.load(configuration, heldExperts: slotExperts, seed: model.seed, file: file)
            return (weights, file.map(ModelOptions.identity) ?? "seeded from \(model.seed)")
        }
        // Every rank must run the same model: the same command line can still name files that
        // differ between hosts.
        try context.agree(on: [("model", ModelOptions.canonical(configuration)), ("weights", weightsIdentity)], what: "model")
        if let problem = model.problem(with: configuration) { throw JobFailure(message: "run: \(problem)", reportingRank: 0, exitCode: 2) }
        let trace = try context.collectively { try model.loadTrace(model: configuration, ranks: ranks, steps: steps) }
        if trace != nil, !configuration.taskExperts.isEmpty {
            throw JobFailure(message: "run: --routing-trace replaces a gate's choices, but the model '\(configuration.name)' routes by task", reportingRank: 0, exitCode: 2)
        }
        let overlap = overlapDegree ?? configuration.overlapDegree
        let tokensPerRank = try model.tokensPerRank(ranks: ranks)
        if case let .fixed(degree) = overlap, degree > max(tokensPerRank, 1) {
            throw JobFailure(message: "run: --overlap-degree \(degree) is larger than the rows allow: each rank has \(tokensPerRank) tokens per step, so at most \(max(tokensPerRank, 1)) chunks", reportingRank: 0, exitCode: 2)
        }
        if overlap != .fixed(1), planCache != .off {
            throw JobFailure(message: "run: --plan-cache applies to the sequential layer; with --overlap-degree \(overlap) every step runs the count exchange (give --overlap-degree 1 or drop --plan-cache)", reportingRank: 0, exitCode: 2)
        }
        var recorder = traceOutputPath.map { _ in RoutingTraceRecorder(layers: configuration.layers.count, topK: configuration.layers.map(\.topK).max() ?? 1) }

        if here == 0 {
            let tokens = model.inputPath == nil ? "\(model.tokensPerRank) tokens per rank (seeded)" : "inputs from \(model.inputPath!)"
            print("model \(configuration.name): \(configuration.layers.count) layers, d_model \(configuration.dModel), d_ff \(configuration.dFF), \(configuration.activation.rawValue); experts per layer \(configuration.layers.map { $0.dense ? "dense" : String($0.experts) }.joined(separator: ","))")
            for line in Self.placementSummary(configuration, ranks: ranks) { print(line) }
            if let line = PlacementReport.policyLine(placementPolicy, planner: firstPlacement) { print(line) }
            if links != nil {
                print("simulated inter-node links: \(topology.interNode.latencyMicroseconds) µs + bytes at \(topology.interNode.bandwidthGigabytesPerSecond) GB/s per node uplink/downlink")
            }
            if capacity.policy != .staticFactor || capacity.drift != nil {
                print("capacity policy \(capacity.policy.name)" + (capacity.drift.map { ", drifting workload: bias \($0.amplitude) logits, period \($0.period) steps" } ?? ""))
            }
            print("job: \(plural(ranks, "rank")) on \(plural(topology.nodes.count, "node")) (\(topology.name)), \(tokens), \(plural(steps, "step")), OpenBLAS \(BLAS.coreName) × \(threads) thread\(threads == 1 ? "" : "s") per rank (\(localRanks) ranks share this node's \(ProcessInfo.processInfo.activeProcessorCount) cores)")
        }

        let hasLocalFFNs = configuration.layers.contains { $0.residual || $0.dense || $0.sharedDFF > 0 }
        let watchdog = try timeoutSeconds.map { try Watchdog(world: world, timeoutSeconds: $0) }
        defer { watchdog?.stop() }
        var memoryAfterFirstStep = 0.0
        var reportRuns: [JSONValue] = []
        var referenceOutput: [Float]?
        var lastBatch: TokenBatch?
        var lastPlans: [RoutingPlan] = []
        var fileBatch: TokenBatch?
        // SIGTERM (Slurm's time limit, scancel, mpirun passing one on) ends the run after the
        // step in flight: every rank agrees at the step's end, the outputs hold that step.
        TerminationSignal.install()
        var stopped: (signal: Int32, afterStep: Int)?
        for algorithm in algorithms {
            let coordinator: Coordinator
            do {
                coordinator = try Coordinator(world: world, root: coordinatorRank, model: configuration, policy: capacity.policy,
                                              placement: placementPolicy, nodeOfRank: topology.nodeOfRank,
                                              statsPath: algorithm == algorithms[0] ? statsPath : nil, liveEvery: quiet ? 0 : statsEvery,
                                              corruptStatistics: testingAids.corruptStatsRank == here)
            } catch let error as CoordinatorError {
                throw JobFailure(message: error.message, reportingRank: error.reportingRank)
            }
            let distributed = try DistributedModel(configuration: configuration, weights: weights, world: world, drift: capacity.drift,
                                                   planCache: planCache, trace: trace, placement: coordinator.placementPlanner) {
                try makeAllToAll(algorithm, communicator: $0, worldRank: here, topology: topology, links: links)
            }
            if let watchdog { distributed.attach(watchdog.beacon) }
            for layer in distributed.layers { layer.progressBetweenGEMMs = progressBetweenGEMMs }
            switch overlap {
            case let .fixed(degree):
                distributed.setOverlapDegrees(Array(repeating: degree, count: configuration.layers.count))
                if degree > 1, here == 0, algorithm == algorithms[0] {
                    print("overlap degree \(degree): each layer step runs as \(degree) chunks, exchanges overlapping the experts")
                }
            case .auto:
                let choices = try OverlapPlanner.choose(model: configuration, layers: distributed.layers, world: world, topology: topology,
                                                        tokensPerRank: tokensPerRank)
                var degrees = Array(repeating: 1, count: configuration.layers.count)
                for choice in choices { degrees[choice.layer] = choice.degree }
                distributed.setOverlapDegrees(degrees)
                if here == 0 { for choice in choices { print("\(algorithm): " + choice.reason) } }
            }
            var migrations = MigrationOutcome()
            var migrationCount = 0
            var stepReports: [JSONValue] = []
            var totals = PhaseTimes()
            var totalTokens = 0
            var totalSeconds = 0.0
            var keptRoutes = 0
            var droppedRoutes = 0
            var completedSteps = 0
            for step in 0..<steps {
                watchdog?.beacon.enter(step: step, layer: 0, phase: "reading inputs")
                testingAids.killIfDue(step: step, rank: here)
                // Inputs from a file are the same every step: read this rank's slice once.
                var batch: TokenBatch
                if let fileBatch {
                    batch = fileBatch
                } else {
                    batch = try context.collectively { try model.batch(model: configuration, rank: here, ranks: ranks, step: step) }
                    if model.inputPath != nil { fileBatch = batch }
                }
                watchdog?.beacon.enter(phase: "barrier before the step")
                try world.barrier()
                testingAids.hangIfDue(step: step, rank: here, beacon: watchdog?.beacon)
                let start = MPIRuntime.wallTime()
                let result: DistributedModel.StepResult
                do { result = try distributed.forward(&batch, capacity: coordinator.plan, step: step) } catch {
                    if case let .routingFailed(_, rank, _) = error {
                        throw JobFailure(message: "\(error)", reportingRank: rank)
                    }
                    throw error
                }
                let elapsed = MPIRuntime.wallTime() - start
                // Hidden states that overflowed inside the model end the job on every rank.
                let nonFinite = batch.firstNonFinite()
                if let badRank = try world.lowestFailingRank(failed: nonFinite != nil) {
                    let detail = nonFinite.map { ": rank-local token \($0.0) feature \($0.1) is \(batch.hidden[$0.0 * configuration.dModel + $0.1])" } ?? ""
                    throw JobFailure(message: "step \(step + 1): the model's output on rank \(badRank) is not finite\(detail) [rank \(badRank)]", reportingRank: badRank)
                }
                watchdog?.beacon.enter(phase: "statistics")
                do { _ = try coordinator.finishStep(step, result: result, tokens: batch.tokenCount, lastStep: step == steps - 1) } catch let error as CoordinatorError {
                    throw JobFailure(message: error.message, reportingRank: error.reportingRank)
                }
                var migration: MigrationOutcome?
                let changes = coordinator.placementChanges
                if !changes.isEmpty {
                    watchdog?.beacon.enter(phase: "expert migration")
                    do {
                        migration = try distributed.migrate(changes, world: world, step: step, failHere: testingAids.failMigrationIsDue(step: step, rank: here))
                    } catch let error as MigrationError {
                        throw JobFailure(message: "\(error)", reportingRank: error.rank)
                    }
                    migrations.experts += migration!.experts
                    migrations.bytes += migration!.bytes
                    migrations.seconds += migration!.seconds
                    migrationCount += 1
                }
                let stepTimes = result.times.reduce(PhaseTimes(), +)
                // Slowest rank per phase; tokens and routes summed over ranks.
                let slowest = try world.allReduce(stepTimes.values + [elapsed], .maximum)
                let kept = result.plans.map { $0.keptPerExpert.reduce(0, +) }
                let dropped = result.plans.map(\.droppedRoutes)
                let bytes = result.volumes.map(\.dispatchBytesSent)
                let sums = try world.allReduce([batch.tokenCount] + kept + dropped + bytes, .sum)
                let tokens = sums[0]
                let layerCount = configuration.layers.count
                let keptByLayer = Array(sums[1...layerCount])
                let droppedByLayer = Array(sums[1 + layerCount...2 * layerCount])
                let bytesByLayer = Array(sums[1 + 2 * layerCount...3 * layerCount])
                let wall = slowest[PhaseTimes.names.count]
                let phase = PhaseTimes(values: Array(slowest[..<PhaseTimes.names.count]))
                totals = totals + phase
                totalTokens += tokens
                totalSeconds += wall
                keptRoutes += keptByLayer.reduce(0, +)
                droppedRoutes += droppedByLayer.reduce(0, +)
                let routes = keptByLayer.reduce(0, +) + droppedByLayer.reduce(0, +)
                if here == 0 && !quiet {
                    let phases = zip(PhaseTimes.names, phase.values).filter { $0.0 != "dense" || hasLocalFFNs }.map { "\($0) \(Self.milliseconds($1))" }.joined(separator: "  ")
                    print("[\(algorithm.rawValue)] step \(step + 1)/\(steps): \(Self.milliseconds(wall)) ms  (\(phases) ms)  \(Self.rate(Double(tokens) / wall)) tokens/s  dropped \(Self.percent(droppedByLayer.reduce(0, +), of: routes))")
                }
                if reportPath != nil { stepReports.append(.object([
                    ("step", .number(Double(step))), ("seconds", .number(wall)), ("tokens", .number(Double(tokens))),
                    ("tokens_per_second", .number(Double(tokens) / wall)),
                    ("phase_seconds_slowest_rank", .object(zip(PhaseTimes.names, phase.values).map { ($0, .number($1)) })),
                    ("kept_routes_by_layer", .array(keptByLayer.map { .number(Double($0)) })),
                    ("dropped_routes_by_layer", .array(droppedByLayer.map { .number(Double($0)) })),
                    ("dispatch_bytes_by_layer", .array(bytesByLayer.map { .number(Double($0)) })),
                    ("migration", migration.map { .object([("experts", .number(Double($0.experts))), ("bytes", .number(Double($0.bytes))),
                                                           ("seconds", .number($0.seconds))]) } ?? .null),
                ])) }
                if here == 0, let migration {
                    for line in PlacementReport.changeLines(changes, afterStep: step) { print("[\(algorithm.rawValue)] " + line) }
                    print("[\(algorithm.rawValue)] migration after step \(step + 1): \(plural(migration.experts, "expert")) copied, "
                          + String(format: "%.2f MiB in %.1f ms", Double(migration.bytes) / 1_048_576, migration.seconds * 1000)
                          + "; every rank switched to the new placement at step \(step + 2)")
                }
                if algorithm == algorithms[0], recorder != nil { try recorder!.record(result.plans, world: world) }
                completedSteps = step + 1
                if step == 0 && algorithm == algorithms[0] { memoryAfterFirstStep = Self.residentMebibytes() }
                let signal = try world.allReduce(TerminationSignal.pending, .maximum)
                if step == steps - 1 || signal != 0 { lastBatch = batch; lastPlans = result.plans }
                if signal != 0 {
                    stopped = (signal, step + 1)
                    break
                }
            }
            // The exchange algorithm must never change the numbers.
            if stopped == nil, let referenceOutput, let lastBatch {
                let same = lastBatch.hidden.withUnsafeBytes { a in referenceOutput.withUnsafeBytes { b in a.elementsEqual(b) } }
                if let differing = try world.lowestFailingRank(failed: !same) {
                    throw JobFailure(message: "exchange \(algorithm.rawValue) produced other outputs than \(algorithms[0].rawValue) on rank \(differing)", reportingRank: 0)
                }
            } else {
                referenceOutput = lastBatch?.hidden
            }
            for line in try coordinator.finish() { print("[\(algorithm.rawValue)] " + line) }
            if here == 0, placementPolicy.kind != .static {
                print("[\(algorithm.rawValue)] placement: \(plural(migrationCount, "migration")), \(plural(migrations.experts, "expert")) copied, "
                      + String(format: "%.2f MiB, %.1f ms in all", Double(migrations.bytes) / 1_048_576, migrations.seconds * 1000))
            }
            if planCache != .off {
                let cache = distributed.planCacheTotals
                let sums = try world.allReduce([Double(cache.hits), Double(cache.misses), Double(cache.countExchanges), cache.countExchangeSeconds,
                                                Double(cache.paddingBytes)], .sum)
                if here == 0 {
                    let perExchange = sums[2] > 0 ? sums[3] / sums[2] : 0  // mean seconds of one count exchange on one rank
                    let hitsPerRank = sums[0] / Double(ranks)
                    print("[\(algorithm.rawValue)] plan cache: \(Int(hitsPerRank)) hits, \(Int(sums[1] / Double(ranks))) misses of \(configuration.layers.count * completedSteps) layer-steps; "
                          + "count exchange avoided \(Int(hitsPerRank)) times, ≈ \(Self.milliseconds(hitsPerRank * perExchange)) ms saved "
                          + "(mean count exchange \(String(format: "%.1f", perExchange * 1e6)) µs); padding sent \(String(format: "%.2f", sums[4] / 1_048_576)) MiB")
                }
            }
            if here == 0 {
                let routes = keptRoutes + droppedRoutes
                print("[\(algorithm.rawValue)] summary: \(plural(completedSteps, "step")), \(Self.rate(Double(totalTokens) / totalSeconds)) tokens/s, mean step \(Self.milliseconds(totalSeconds / Double(completedSteps))) ms; time share: " +
                      zip(PhaseTimes.names, totals.values).filter { $0.0 != "dense" || hasLocalFFNs }.map { "\($0) \(Self.percent($1, of: totals.total))" }.joined(separator: ", ") +
                      "; dropped \(Self.percent(droppedRoutes, of: routes)) of \(routes) routes")
            }
            reportRuns.append(.object([("exchange", .string(algorithm.rawValue)),
                                       ("overlap_degree_by_layer", .array(distributed.layers.map { .number(Double($0.overlapDegree)) })),
                                       ("steps", .array(stepReports)),
                                       ("tokens_per_second", .number(Double(totalTokens) / totalSeconds))]))
            if stopped != nil { break }
        }
        if algorithms.count > 1, stopped == nil, here == 0 {
            print("outputs identical across exchanges: \(algorithms.map(\.rawValue).joined(separator: ", "))")
        }
        let memory = try world.allReduce([memoryAfterFirstStep, Self.residentMebibytes(), Self.peakResidentMebibytes()], .maximum)
        if here == 0 {
            let lastStep = stopped?.afterStep ?? steps
            print((lastStep > 1 ? String(format: "memory: resident %.1f MiB after step 1, %.1f MiB after step %d", memory[0], memory[1], lastStep)
                             : String(format: "memory: resident %.1f MiB after the step", memory[0]))
                  + String(format: ", peak %.1f MiB (largest rank)", memory[2]))
        }
        try writeOutputs(context: context, world: world, configuration: configuration, batch: lastBatch!, plans: lastPlans,
                         runs: reportRuns, topology: topology, threads: threads)
        if let recorder, let traceOutputPath {
            try context.collectively {
                guard world.rank == 0 else { return }
                try recorder.write(experts: traceOutputPath, weights: traceWeightsOutputPath)
            }
        }
        if let stopped {
            throw JobFailure(message: "stopped by \(TerminationSignal.name(stopped.signal)) after step \(stopped.afterStep) of \(steps); the outputs hold step \(stopped.afterStep)",
                             reportingRank: 0, exitCode: 128 + stopped.signal)
        }
    }

    private func writeOutputs(
        context: JobContext, world: Communicator, configuration: ModelConfiguration, batch: TokenBatch, plans: [RoutingPlan],
        runs: [JSONValue], topology: Topology, threads: Int
    ) throws {
        if let outputPath {
            let gathered = try world.gatherBytes(batch.hidden.withUnsafeBytes { Array($0) }, root: 0)
            try context.collectively {
                guard let gathered else { return }
                let bytes = gathered.flatMap { $0 }
                try NpyArray(shape: [bytes.count / 4 / configuration.dModel, configuration.dModel], elementType: .float32, data: bytes)
                    .write(to: outputPath)
            }
        }
        if let routingPath {
            var perLayer: [[JSONValue]] = []
            for plan in plans {
                let text = RoutingReport.rankEntry(plan).serialized(pretty: false)
                let gathered = try world.gatherBytes(Array(text.utf8), root: 0)
                perLayer.append(try gathered.map { try $0.map { try JSONParser.parse($0) } } ?? [])
            }
            try context.writeOnRankZero(RoutingReport.document(perLayer).serialized() + "\n", to: routingPath)
        }
        if let reportPath {
            let document = JSONValue.object([
                ("model", .string(configuration.name)), ("ranks", .number(Double(world.size))),
                ("topology", .string(topology.name)), ("nodes", .number(Double(topology.nodes.count))),
                ("blas_threads_per_rank", .number(Double(threads))), ("blas_core", .string(BLAS.coreName)),
                ("runs", .array(runs)),
            ])
            try context.writeOnRankZero(document.serialized() + "\n", to: reportPath)
        }
    }

    /// One line per run of layers whose placement is not plain expert parallelism (fewer
    /// experts than ranks), and one for residual layers.
    static func placementSummary(_ configuration: ModelConfiguration, ranks: Int) -> [String] {
        var lines: [String] = []
        var start = 0
        let layers = configuration.layers
        while start < layers.count {
            var end = start + 1
            while end < layers.count && layers[end].experts == layers[start].experts && layers[end].dense == layers[start].dense { end += 1 }
            let placement = ExpertPlacement(experts: layers[start].experts, worldSize: ranks)
            if placement.groupCount > 1, !layers[start].dense {
                let last = placement.ranks(ofGroup: placement.groupCount - 1).count
                let shape = last == placement.groupSize
                    ? "\(placement.groupCount) replica groups of \(placement.groupSize) ranks"
                    : "\(placement.groupCount - 1) replica groups of \(placement.groupSize) ranks and one of \(last)"
                let span = end - start == 1 ? "layer \(start)" : "layers \(start)-\(end - 1)"
                lines.append("\(span): \(layers[start].experts) experts < \(ranks) ranks: \(shape); tokens are dispatched inside their rank's group")
            }
            start = end
        }
        let residual = layers.indices.filter { layers[$0].residual }
        if !residual.isEmpty {
            lines.append("residual (PR-MoE) layers: \(residual.map(String.init).joined(separator: ",")): dense MLP + top-1 expert, mixed per token")
        }
        let dense = layers.indices.filter { layers[$0].dense }
        if !dense.isEmpty {
            lines.append("dense layers: \(dense.map(String.init).joined(separator: ",")): one FFN on every rank, no gate, no exchange")
        }
        let shared = layers.indices.filter { layers[$0].sharedDFF > 0 }
        if !shared.isEmpty {
            lines.append("shared experts in layers \(shared.map(String.init).joined(separator: ",")): computed on each token's own rank, added to the routed sum")
        }
        return lines
    }

    /// This process's resident set size in MiB (`/proc/self/statm`), 0 where unavailable.
    static func residentMebibytes() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = text.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) else { return 0 }
        return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
    }

    /// This process's peak resident set size in MiB (`VmHWM` in `/proc/self/status`), 0 where
    /// unavailable.
    static func peakResidentMebibytes() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kibibytes = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) else { return 0 }
        return kibibytes / 1024
    }

    static func milliseconds(_ seconds: Double) -> String { String(format: "%.2f", seconds * 1000) }
    static func rate(_ value: Double) -> String { value >= 1e6 ? String(format: "%.2fM", value / 1e6) : String(format: "%.0f", value) }
    static func percent(_ part: Int, of whole: Int) -> String { whole == 0 ? "0%" : String(format: "%.1f%%", 100 * Double(part) / Double(whole)) }
    static func percent(_ part: Double, of whole: Double) -> String { whole == 0 ? "0%" : String(format: "%.1f%%", 100 * part / whole) }
}
