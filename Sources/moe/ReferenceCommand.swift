import ArgumentParsing
import ClusterTopology
import FileFormats
import JobControl
import Foundation
import MoE
import MoEReference

/// `moe reference`: the single-process oracle, for comparing with `moe run`.
struct ReferenceCommand: JobCommand {
    static let spec = CommandSpec(
        name: "reference",
        summary: "Run the single-process reference model (no MPI) as a job of N ranks would see it.",
        discussion: """
            Routes each of the --ranks ranks' tokens separately (capacity is per source rank) and
            runs every expert in this process. Its --output and --routing-output match those of
            'moe run' with the same model, weights, inputs, seed, rank count, capacity policy, drift
            and --steps (the last step of each). Between steps it replays the coordinator's
            capacity policy on the same statistics, and its placement policy: it prints the same
            'placement change' lines as 'moe run' (placement never changes the numbers). For
            --placement balanced-node give the job's --topology. With --expert-precision bf16 or
            int8 (or a model file that asks for them) it computes in that precision, as 'moe run'
            does, and also runs fp32 on the same inputs: it prints each layer's max and mean
            relative error against fp32 (hidden states after the layer, the last step).
            """,
        options: ModelOptions.specs + CapacityOptions.specs + PlacementOptions.specs + PrecisionOptions.specs + [TopologyOptions.topology.spec]
            + [Options.ranks, Options.steps].map(\.spec)
            + [Options.output, Options.routingOutput, Options.inputOutput].map(\.spec))

    enum Options {
        static let ranks = TypedOption<Int>.integer("ranks", default: 1, in: 1...4096, "number of ranks of the job to reproduce")
        static let steps = TypedOption<Int>.integer(
            "steps", default: 1, in: 1...1_000_000,
            "steps to run (capacity plans and the drifting workload evolve over them); outputs are the last step's")
        static let output = TypedOption<String?>.string("output", "FILE", "write the output hidden states as float32 .npy [tokens, d_model]")
        static let routingOutput = TypedOption<String?>.string("routing-output", "FILE", "write the routing decisions as JSON")
        static let inputOutput = TypedOption<String?>.string(
            "input-output", "FILE", "write the last step's input hidden states (seeded or --input) as float32 .npy [tokens, d_model], to feed another framework")
    }

    let model: ModelOptions.Values
    let capacity: CapacityOptions.Values
    let placementPolicy: PlacementPolicy
    let topologyPath: String?
    let steps: Int
    let ranks: Int
    let outputPath: String?
    let routingPath: String?
    let inputOutputPath: String?
    let precision: PrecisionOptions.Values

    init(options: ParsedOptions) throws(UsageError) {
        model = try ModelOptions.read(options)
        capacity = try CapacityOptions.read(options, seed: model.seed)
        placementPolicy = try PlacementOptions.read(options)
        topologyPath = try options.value(TopologyOptions.topology)
        if placementPolicy.kind == .balancedNode, topologyPath == nil {
            throw .conflict(command: "reference", detail: "--placement balanced-node packs by node: give the job's --topology")
        }
        steps = try options.value(Options.steps)
        ranks = try options.value(Options.ranks)
        outputPath = try options.value(Options.output)
        routingPath = try options.value(Options.routingOutput)
        inputOutputPath = try options.value(Options.inputOutput)
        precision = try PrecisionOptions.read(options)
    }

    func run(_ context: JobContext) throws {
        try context.checkPaths(outputs: [Options.output.naming(outputPath), Options.routingOutput.naming(routingPath),
                                         Options.inputOutput.naming(inputOutputPath)], inputs: model.inputPaths + [TopologyOptions.topology.naming(topologyPath)])
        do {
            let configuration = try model.loadModel()
            if let problem = model.problem(with: configuration) ?? placementPolicy.problem(layers: configuration.layers, worldSize: ranks) {
                throw JobFailure(message: "reference: \(problem)", reportingRank: 0, exitCode: 2)
            }
            let nodeOfRank = try topologyPath.map { path throws in try Topology.load(path: path).nodeOfRank }
            if let nodeOfRank, nodeOfRank.count != ranks {
                throw JobFailure(message: "reference: --topology \(topologyPath!) describes \(nodeOfRank.count) ranks, not --ranks \(ranks)", reportingRank: 0, exitCode: 2)
            }
            let placement = PlacementPlanner(policy: placementPolicy, layers: configuration.layers, worldSize: ranks, nodeOfRank: nodeOfRank)
            let estimate = MemoryEstimate.of(model: configuration, expertSlots: { configuration.layers[$0].experts },
                                             tokens: ranks * (try model.tokensPerRank(ranks: ranks)), sourceRanks: 1, capacityPlanCache: false)
            if let problem = estimate.problem(processes: 1) { throw InputError(description: problem) }
            let weights = try ModelWeights.load(configuration, heldExperts: { Array(0..<configuration.layers[$0].experts) },
                                                seed: model.seed, file: try model.openWeights())
            let trace = try model.loadTrace(model: configuration, ranks: ranks, steps: steps)
            if trace != nil, !configuration.taskExperts.isEmpty {
                throw JobFailure(message: "reference: --routing-trace replaces a gate's choices, but the model '\(configuration.name)' routes by task", reportingRank: 0, exitCode: 2)
            }
            let isa: CPUISA
            switch precision.cpuISA.resolved() {
            case let .success(resolved): isa = resolved
            case let .failure(error): throw JobFailure(message: "reference: \(error)", reportingRank: 0, exitCode: 2)
            }
            let precisions = configuration.precisions(override: precision.expertPrecision)
            let reference = ReferenceModel(model: configuration, layers: weights, drift: capacity.drift, trace: trace,
                                           kernels: configuration.kernels(isa: isa, override: precision.expertPrecision,
                                                                          int8: precision.int8),
                                           exchangePrecision: precision.exchangePrecision, isa: isa)
            // The same model in fp32, for the error of a lower precision (the last step's inputs).
            let fp32 = precisions.allSatisfy { $0 == .fp32 } && precision.exchangePrecision == .fp32 ? nil
                : ReferenceModel(model: configuration, layers: weights, drift: capacity.drift, trace: trace)
            // The coordinator's decisions between steps, replayed on the same counts.
            var decider = StepDecider(capacity: CapacityPlanner(policy: capacity.policy, layers: configuration.layers), placement: placement)
            var plan = CapacityPlan.configured(layers: configuration.layers.count)
            var batches: [TokenBatch] = []
            var outputs: [[Float]] = []
            var plans: [[RoutingPlan]] = []
            var previousPlan = plan
            for step in 0..<steps {
                previousPlan = plan
                batches = try (0..<ranks).map { try model.batch(model: configuration, rank: $0, ranks: ranks, step: step) }
                (outputs, plans) = try reference.forward(batches, capacity: plan, step: step)
                let counts = plans.map { layerPlans in
                    LayerRoutingCounts(tokens: layerPlans.map(\.tokenCount), routed: layerPlans.map(\.routedPerExpert),
                                       kept: layerPlans.map(\.keptPerExpert))
                }
                let decision = decider.decide(step: step, counts, lastStep: step == steps - 1)
                plan = decision.plan
                for line in PlacementReport.changeLines(decision.changes, afterStep: step) { print(line) }
            }
            if let outputPath {
                let values = outputs.flatMap { $0 }
                try NpyArray(float32: values, shape: [values.count / configuration.dModel, configuration.dModel]).write(to: outputPath)
            }
            if let fp32 {
                print(RunCommand.expertLine(configuration, override: precision.expertPrecision, isa: isa, int8: precision.int8))
                for line in try Self.errorLines(reference, against: fp32, batches: batches, plan: previousPlan, step: steps - 1) { print(line) }
            }
            if let inputOutputPath {
                let values = batches.flatMap(\.hidden)
                try NpyArray(float32: values, shape: [values.count / configuration.dModel, configuration.dModel]).write(to: inputOutputPath)
            }
            if let routingPath {
                let entries = plans.map { $0.map(RoutingReport.rankEntry) }
                try AtomicFileWriter.write(RoutingReport.document(entries).serialized() + "\n", to: routingPath)
            }
            let routes = plans.flatMap { $0 }.reduce(0) { $0 + $1.expert.count }
            let dropped = plans.flatMap { $0 }.reduce(0) { $0 + $1.droppedRoutes }
            print("reference: \(configuration.name), \(plural(ranks, "rank")), \(batches.reduce(0) { $0 + $1.tokenCount }) tokens, dropped \(dropped) of \(routes) routes")
        } catch let failure as JobFailure {
            throw failure
        } catch {
            throw JobFailure(message: "\(error)", reportingRank: 0)
        }
    }

    /// Per layer, the max and mean relative error of `model`'s hidden states after the layer
    /// against `fp32`'s on the same batches (max|a − b| / max|b| and Σ|a − b| / Σ|b|), and the
    /// share of routes whose expert differs: a route that flips (a near tie, a capacity slot
    /// taken by another token) moves a whole token's output, which is what the max error shows.
    static func errorLines(_ model: ReferenceModel, against fp32: ReferenceModel, batches: [TokenBatch], plan: CapacityPlan, step: Int) throws -> [String] {
        var low: [[Float]] = [], exact: [[Float]] = []
        let lowPlans = try model.forward(batches, capacity: plan, step: step) { _, hidden in low.append(hidden.flatMap { $0 }) }.plans
        let exactPlans = try fp32.forward(batches, capacity: plan, step: step) { _, hidden in exact.append(hidden.flatMap { $0 }) }.plans
        return zip(low, exact).enumerated().map { layer, pair in
            var error = PrecisionError()
            error.add(pair.0, reference: pair.1, rows: batches.reduce(0) { $0 + $1.tokenCount })
            let routes = zip(lowPlans[layer], exactPlans[layer]).flatMap { zip($0.expert, $1.expert) }
            let flipped = routes.filter { $0 != $1 }.count
            return String(format: "layer %d: error against fp32 after the layer: max %.3e, mean %.3e (relative); %d of %d routes routed differently",
                          layer, error.maxRelative, error.meanRelative, flipped, routes.count)
        }
    }
}
