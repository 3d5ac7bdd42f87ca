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
        summary: "Drop rate and buffer size of the capacity policies (static, adaptive-factor, reallocate) on a drifting workload.",
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
        options: [
            .value("layers", "N", default: "2", "MoE layers"),
            .value("d-model", "N", default: "256", "hidden size"),
            .value("d-ff", "N", default: "512", "expert FFN size"),
            .value("experts", "N", default: "8", "experts per layer"),
            .value("top-k", "K", default: "2", "routes per token"),
            .value("capacity-factor", "C", default: "1.0", "configured capacity factor"),
            .value("tokens", "N", default: "512", "tokens per rank per step"),
            .value("steps", "N", default: "64", "steps per policy"),
            .value("skip", "N", default: "8", "first steps left out of the figures"),
            .value("drift", "AMPLITUDE", default: "1.5", "drifting workload: peak router bias in logits"),
            .value("drift-period", "STEPS", default: "32", "drifting workload: steps per rotation"),
            .value("target-drop-rate", "R", default: "0.01", "adaptive-factor target"),
            .value("window", "STEPS", default: "4", "adaptive-factor window"),
            .value("floor", "F", default: "0.25", "reallocate floor share"),
            .value("smoothing", "A", default: "0.5", "reallocate load smoothing"),
            .value("seed", "N", default: "1", "seed of weights, inputs and drift"),
            .value("csv", "FILE", "write the table as CSV"),
            .value("json", "FILE", "write the table as JSON"),
        ])

    let layerCount: Int, dModel: Int, dFF: Int, experts: Int, topK: Int, factor: Double
    let tokens: Int, steps: Int, skip: Int
    let drift: RouterDrift
    let policies: [CapacityPolicy]
    let seed: UInt64
    let csvPath: String?, jsonPath: String?

    init(options: ParsedOptions) throws(UsageError) {
        layerCount = try options.integer("layers", in: 1...64) ?? 2
        dModel = try options.integer("d-model", in: 1...65536) ?? 256
        dFF = try options.integer("d-ff", in: 1...65536) ?? 512
        experts = try options.integer("experts", in: 1...4096) ?? 8
        topK = try options.integer("top-k", in: 1...4096) ?? 2
        guard topK <= experts else { throw .invalidValue(command: "capacity", option: "top-k", value: String(topK), expected: "at most --experts") }
        factor = try options.number("capacity-factor", in: 0.01...100) ?? 1.0
        tokens = try options.integer("tokens", in: 1...(1 << 20)) ?? 512
        steps = try options.integer("steps", in: 2...1_000_000) ?? 64
        skip = try options.integer("skip", in: 0...1_000_000) ?? 8
        guard skip < steps else { throw .invalidValue(command: "capacity", option: "skip", value: String(skip), expected: "fewer than --steps") }
        seed = UInt64(try options.integer("seed", in: 0...Int.max) ?? 1)
        drift = RouterDrift(amplitude: try options.number("drift", in: 0...100) ?? 1.5, period: try options.number("drift-period", in: 0.001...1e9) ?? 32, seed: seed)
        policies = [.staticFactor,
                    .adaptiveFactor(targetDropRate: try options.number("target-drop-rate", in: 0...1) ?? 0.01, window: try options.integer("window", in: 1...10_000) ?? 4),
                    .reallocate(floor: try options.number("floor", in: 0...1) ?? 0.25, smoothing: try options.number("smoothing", in: 0.000001...1) ?? 0.5)]
        csvPath = options.string("csv")
        jsonPath = options.string("json")
    }

    func run(_ context: JobContext) throws {
        let world = try context.world()
        let harness = BenchmarkHarness(world: world)
        let topology = try context.topology(path: nil)
        let layer = LayerConfiguration(experts: experts, topK: topK, capacityFactor: factor, minCapacity: 1)
        let model = ModelConfiguration(name: "capacity-bench", dModel: dModel, dFF: dFF, activation: .gelu,
                                       layers: Array(repeating: layer, count: layerCount))
        let weights = try ModelWeights.load(model, heldExperts: { ExpertPlacement(experts: model.layers[$0].experts, worldSize: world.size).heldExperts(ofRank: world.rank) },
                                            seed: seed, file: nil)
        let distributed = try DistributedModel(configuration: model, weights: weights, world: world, drift: drift) {
            try makeAllToAll(.linear, communicator: $0, worldRank: world.rank, topology: topology)
        }
        if world.rank == 0 {
            print("# moe-bench capacity: \(world.size) ranks, \(layerCount) layers × \(experts) experts, top-\(topK), C \(factor), \(tokens) tokens per rank, "
                  + "\(steps) steps (first \(skip) left out), drift \(drift.amplitude) logits / \(drift.period) steps")
        }
        var table = ResultTable(columns: ["policy", "dropped_routes", "drop_rate", "slots_per_step", "slots_vs_static", "mean_imbalance", "tokens_per_s"])
        var staticSlots: Double?
        for policy in policies {
            let coordinator = try Coordinator(world: world, root: 0, model: model, policy: policy, statsPath: nil, liveEvery: 0)
            var dropped = 0, routes = 0, slots = 0, seconds = 0.0, imbalance = 0.0, tokenCount = 0
            for step in 0..<steps {
                harness.progress("\(policy.name): step \(step + 1)/\(steps)")
                var batch = TokenBatch.seeded(range: world.rank * tokens..<(world.rank + 1) * tokens, dModel: dModel,
                                              seed: seed &+ UInt64(step) &* 0x9E37_79B9, tasks: [])
                try world.barrier()
                let start = MPIRuntime.wallTime()
                let result = try distributed.forward(&batch, capacity: coordinator.plan, step: step)
                let elapsed = try world.allReduce(MPIRuntime.wallTime() - start, .maximum)
                _ = try coordinator.finishStep(step, result: result, tokens: tokens)
                guard step >= skip, let report = coordinator.lastReport else { continue }
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
                          format(slotsPerStep / (staticSlots ?? slotsPerStep)), format(imbalance / measured), format(Double(tokenCount) / seconds, 0)])
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
