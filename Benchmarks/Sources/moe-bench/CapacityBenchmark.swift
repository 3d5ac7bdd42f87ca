import ArgumentParsing
import ClusterTopology
import Coordination
import Exchange
import ExpertParallel
import FileFormats
import Foundation
import JobControl
import MessagePassing
import MoE

/// `moe-bench capacity`: the capacity policies on the same drifting workload, in one run.
struct CapacityBenchmark: JobCommand {
    static let spec = CommandSpec(
        name: "capacity",
        summary: "Drop rate and buffer size of the capacity policies (static, adaptive-factor, reallocate, dynamoe) on a drifting workload.",
        discussion: """
            Builds one model (--layers layers of --experts experts, top --top-k, capacity factor
            --capacity-factor, seeded weights) and runs --steps steps of the drifting workload (router
            bias --drift logits rotating once every --drift-period steps; docs/CAPACITY.md) once per
            policy, with the coordinator gathering statistics and re-planning capacity between steps
            exactly as 'moe run --policy' does. Reported per policy: dropped routes (all steps),
            mean slots per step (the buffer budget: Σ over experts and source ranks of the capacity),
            mean imbalance, tokens/s (slowest rank per step, medianless: total tokens / total time).
            The first --skip steps are excluded (policies need history).
            """,
        options: Options.specs + TableOutputOptions.specs)

    /// Its own drift and policy parameters: the benchmark runs every policy on one workload, with
    /// defaults (a drifting workload on) that differ from `moe run`'s.
    enum Options {
        static let layers = TypedOption<Int>.integer("layers", default: 2, in: 1...64, "MoE layers")
        static let dModel = TypedOption<Int>.integer("d-model", default: 256, in: 1...65536, "hidden size")
        static let dFF = TypedOption<Int>.integer("d-ff", default: 512, in: 1...65536, "expert FFN size")
        static let experts = TypedOption<Int>.integer("experts", default: 8, in: 1...4096, "experts per layer")
        static let topK = TypedOption<Int>.integer("top-k", "K", default: 2, in: 1...4096, "routes per token")
        static let capacityFactor = TypedOption<Double>.number("capacity-factor", "C", default: 1.0, in: 0.01...100, "configured capacity factor")
        static let tokens = TypedOption<Int>.integer("tokens", default: 512, in: 1...(1 << 20), "tokens per rank per step")
        static let steps = TypedOption<Int>.integer("steps", default: 64, in: 2...1_000_000, "steps per policy")
        static let skip = TypedOption<Int>.integer("skip", default: 8, in: 0...1_000_000, "first steps left out of the figures")
        static let drift = TypedOption<Double>.number("drift", "AMPLITUDE", default: 1.5, in: 0...100, "drifting workload: peak router bias in logits")
        static let driftPeriod = TypedOption<Double>.number("drift-period", "STEPS", default: 32, in: 0.001...1e9, "drifting workload: steps per rotation")
        static let targetDropRate = TypedOption<Double>.number("target-drop-rate", "R", default: 0.01, in: 0...1, "adaptive-factor target")
        static let window = TypedOption<Int>.integer("window", "STEPS", default: 4, in: 1...10_000, "adaptive-factor window")
        static let floor = TypedOption<Double>.number("floor", "F", default: 0.25, in: 0...1, "reallocate floor share")
        static let smoothing = TypedOption<Double>.number("smoothing", "A", default: 0.5, in: 0.000001...1, "reallocate and dynamoe: weight of the newest step in their moving averages")
        static let seed = TypedOption<UInt64>.seed(default: 1, "seed of weights, inputs and drift")
        static let specs = [layers.spec, dModel.spec, dFF.spec, experts.spec, topK.spec, capacityFactor.spec, tokens.spec, steps.spec, skip.spec,
                            drift.spec, driftPeriod.spec, targetDropRate.spec, window.spec, floor.spec, smoothing.spec, seed.spec]
    }

    let layerCount: Int, dModel: Int, dFF: Int, experts: Int, topK: Int, factor: Double
    let tokens: Int, steps: Int, skip: Int
    let drift: RouterDrift
    let policies: [CapacityPolicy]
    let seed: UInt64
    let csvPath: String?, jsonPath: String?

    init(options: ParsedOptions) throws(UsageError) {
        layerCount = try options.value(Options.layers)
        dModel = try options.value(Options.dModel)
        dFF = try options.value(Options.dFF)
        experts = try options.value(Options.experts)
        topK = try options.value(Options.topK)
        guard topK <= experts else { throw .invalidValue(command: "capacity", option: "top-k", value: String(topK), expected: "at most --experts") }
        factor = try options.value(Options.capacityFactor)
        tokens = try options.value(Options.tokens)
        steps = try options.value(Options.steps)
        skip = try options.value(Options.skip)
        guard skip < steps else { throw .invalidValue(command: "capacity", option: "skip", value: String(skip), expected: "fewer than --steps") }
        seed = try options.value(Options.seed)
        drift = RouterDrift(amplitude: try options.value(Options.drift), period: try options.value(Options.driftPeriod), seed: seed)
        policies = [.staticFactor,
                    .adaptiveFactor(targetDropRate: try options.value(Options.targetDropRate), window: try options.value(Options.window)),
                    .reallocate(floor: try options.value(Options.floor), smoothing: try options.value(Options.smoothing)),
                    .dynamoe(smoothing: try options.value(Options.smoothing))]
        let output = try TableOutputOptions.read(options)
        (csvPath, jsonPath) = (output.csvPath, output.jsonPath)
    }

    func run(_ context: JobContext) throws {
        let harness = try BenchmarkHarness.start(context, outputs: [TableOutputOptions.csv.naming(csvPath), TableOutputOptions.json.naming(jsonPath)])
        let world = harness.world
        let topology = try context.topology(path: nil)
        let layer = LayerConfiguration(experts: experts, topK: topK, capacityFactor: factor, minCapacity: 1)
        let model = ModelConfiguration(name: "capacity-bench", dModel: dModel, dFF: dFF, activation: .gelu,
                                       layers: Array(repeating: layer, count: layerCount))
        let weights = try ModelWeights.load(model, heldExperts: { Array(ExpertPlacement(experts: model.layers[$0].experts, worldSize: world.size).heldExperts(ofRank: world.rank)) },
                                            seed: seed, file: nil)
        let prepared = PreparedLayerWeights.prepare(weights, model: model, kernels: model.kernels(isa: .portable))
        let distributed = try DistributedModel(configuration: model, weights: prepared, world: world, drift: drift) {
            try makeAllToAll(.linear, communicator: $0, worldRank: world.rank, topology: topology)
        }
        if world.rank == 0 {
            print("# moe-bench capacity: \(world.size) ranks, \(layerCount) layers × \(experts) experts, top-\(topK), C \(factor), \(tokens) tokens per rank, "
                  + "\(steps) steps (first \(skip) left out), drift \(drift.amplitude) logits / \(drift.period) steps")
        }
        var table = ResultTable(columns: ["policy", "dropped_routes", "drop_rate", "slots_per_step", "slots_vs_static", "mean_imbalance", "tokens_per_s",
                                          "layer_plan_changes"])
        var staticSlots: Double?
        for policy in policies {
            let coordinator = try Coordinator(world: world, root: 0, model: model, policy: policy, statsPath: nil, liveEvery: 0)
            var dropped = 0, routes = 0, slots = 0, seconds = 0.0, imbalance = 0.0, tokenCount = 0
            // Buffer resizes (DynaMoE's "recompilations"): layer plans that differ from the step before's.
            var planChanges = 0
            for step in 0..<steps {
                harness.progress("\(policy.name): step \(step + 1)/\(steps)")
                var batch = TokenBatch.seeded(range: world.rank * tokens..<(world.rank + 1) * tokens, dModel: dModel,
                                              seed: seed &+ UInt64(step) &* 0x9E37_79B9, tasks: [])
                try world.barrier()
                let start = MPIRuntime.wallTime()
                let result = try distributed.forward(&batch, capacity: coordinator.plan, step: step)
                let elapsed = try world.allReduce(MPIRuntime.wallTime() - start, .maximum)
                let planBefore = coordinator.plan
                _ = try coordinator.finishStep(step, result: result, tokens: tokens)
                guard step >= skip, let report = coordinator.lastReport else { continue }
                planChanges += zip(planBefore.layers, coordinator.plan.layers).filter { $0 != $1 }.count
                dropped += report.layers.reduce(0) { $0 + $1.dropped.reduce(0, +) }
                routes += report.layers.reduce(0) { $0 + $1.routes }
                slots += report.layers.reduce(0) { $0 + ($1.slots ?? 0) }
                imbalance += report.layers.reduce(0) { $0 + $1.imbalance } / Double(report.layers.count)
                seconds += elapsed
                tokenCount += tokens * world.size
            }
            guard world.rank == 0 else { continue }
            let measured = Double(steps - skip)
            let slotsPerStep = Double(slots) / measured
            if policy == .staticFactor { staticSlots = slotsPerStep }
            table.append([policy.name, String(dropped), format(Double(dropped) / Double(max(1, routes)), 4), format(slotsPerStep, 1),
                          format(slotsPerStep / (staticSlots ?? slotsPerStep)), format(imbalance / measured), format(Double(tokenCount) / seconds, 0),
                          String(planChanges)])
        }
        harness.endProgress()
        guard world.rank == 0 else { return }
        print(table.aligned)
        let metadata: [(String, JSONValue)] = [
            ("benchmark", .string("capacity")), ("ranks", .number(Double(world.size))), ("layers", .number(Double(layerCount))),
            ("experts", .number(Double(experts))), ("top_k", .number(Double(topK))), ("capacity_factor", .number(factor)),
            ("tokens_per_rank", .number(Double(tokens))), ("steps", .number(Double(steps))), ("skipped_steps", .number(Double(skip))),
            ("drift_amplitude", .number(drift.amplitude)), ("drift_period", .number(drift.period)),
        ]
        if let csvPath { try AtomicFileWriter.write(table.csv, to: csvPath) }
        if let jsonPath { try AtomicFileWriter.write(table.json(metadata: metadata), to: jsonPath) }
    }
}
