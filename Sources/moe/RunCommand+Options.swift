import ArgumentParsing
import Exchange
import ExpertParallel
import MoE

extension RunCommand {
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
        static let planCache = TypedOption<PlanCacheMode?>(spec: .value(
            "plan-cache", "MODE", default: "off",
            "skip the count exchange with block sizes known from the last step: capacity, observed or off (docs/CAPACITY.md)")
        ) { (options) throws(UsageError) in
            switch options.string("plan-cache") ?? "off" {
            case "off": return nil
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
        static let overlapProgress = TypedOption<OverlapProgress>.choice(
            "overlap-progress", "WHERE", default: .gemms,
            "when a pipelined layer lets MPI move its exchanges: gemms (between every GEMM, the default) or chunks (only between chunks; for comparison)")
        static let quiet = TypedOption<Bool>.flag("quiet", "print only the summary")
        static let compareFP32 = TypedOption<Bool>.flag(
            "compare-fp32", "with bf16 or int8 experts, also run each expert in fp32 on the same rows and report every layer's error "
                + "against it in the summary and --report (keeps fp32 copies: more memory and expert time)")
        static let specs = [compareFP32.spec, stats.spec, statsEvery.spec, coordinator.spec, planCache.spec, planCacheHeadroom.spec, timeout.spec,
                            steps.spec, exchange.spec, output.spec, routingOutput.spec, report.spec, routingTraceOutput.spec,
                            routingTraceWeightsOutput.spec, overlapDegree.spec, overlapProgress.spec, quiet.spec]
    }
}
