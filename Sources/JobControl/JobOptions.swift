import ArgumentParsing
import MoE

/// Options shared by every command that exchanges over a topology: declared once here.
package enum TopologyOptions {
    package static let topology = TypedOption<String?>.string("topology", "FILE", "topology JSON file; default: nodes from MPI")
    package static let simulateLinks = TypedOption<Bool?>.onOff(
        "simulate-links",
        "hold inter-node messages back by the topology's link cost (one machine only); default: the topology's links.simulate")
    package static let specs = [topology.spec, simulateLinks.spec]

    package struct Values: Sendable {
        package let topologyPath: String?
        package let simulateLinks: Bool?
    }

    package static func read(_ options: ParsedOptions) throws(UsageError) -> Values {
        Values(topologyPath: try options.value(topology), simulateLinks: try options.value(simulateLinks))
    }
}

/// `--blas-threads N`, shared by the commands that run GEMMs (`JobContext.configureBLASThreads`).
package enum BLASThreadOptions {
    package static let blasThreads = TypedOption<Int?>.integer(
        "blas-threads", in: 1...1024, "OpenBLAS threads per rank (default: Slurm's --cpus-per-task, else cores / ranks on this host, at least 1)")
    package static let specs = [blasThreads.spec]
}

/// Options of the capacity policy and the drifting workload, shared by `moe run` and `moe
/// reference` (which replays the policy's plans).
package enum CapacityOptions {
    package enum PolicyName: String, CaseIterable, Sendable { case `static`, adaptiveFactor = "adaptive-factor", reallocate, dynamoe }

    package static let policy = TypedOption<PolicyName>.choice(
        "policy", "NAME", default: .static, "capacity policy between steps: static, adaptive-factor, reallocate, dynamoe (docs/CAPACITY.md)")
    package static let targetDropRate = TypedOption<Double>.number("target-drop-rate", "R", default: 0.01, in: 0...1,
                                                                  "adaptive-factor: drop rate to stay under")
    package static let window = TypedOption<Int>.integer("window", "STEPS", default: 4, in: 1...10_000, "adaptive-factor: steps of history")
    package static let floor = TypedOption<Double>.number("floor", "F", default: 0.25, in: 0...1,
                                                         "reallocate: each expert keeps at least this share of the uniform capacity")
    package static let smoothing = TypedOption<Double>.number("smoothing", "A", default: 0.5, in: 0.000001...1,
                                                             "reallocate, dynamoe: weight of the newest step in the moving average")
    package static let drift = TypedOption<Double>.number("drift", "AMPLITUDE", default: 0, in: 0...100,
                                                         "drifting workload: peak router bias in logits (0 = off)")
    package static let driftPeriod = TypedOption<Double>.number("drift-period", "STEPS", default: 16, in: 0.001...1e9,
                                                               "drifting workload: steps for the hot experts to go once around")
    package static let specs = [policy.spec, targetDropRate.spec, window.spec, floor.spec, smoothing.spec, drift.spec, driftPeriod.spec]

    package struct Values: Sendable {
        package let policy: CapacityPolicy
        package let drift: RouterDrift?

        /// The banner's line for a policy other than the static one or a drifting workload, else nil.
        package var summaryLine: String? {
            guard policy != .staticFactor || drift != nil else { return nil }
            return "capacity policy \(policy.name)" + (drift.map { ", drifting workload: bias \($0.amplitude) logits, period \($0.period) steps" } ?? "")
        }
    }

    /// `seed` seeds the drift's per-layer phases.
    package static func read(_ options: ParsedOptions, seed: UInt64) throws(UsageError) -> Values {
        let chosen: CapacityPolicy
        switch try options.value(policy) {
        case .static: chosen = .staticFactor
        case .adaptiveFactor: chosen = .adaptiveFactor(targetDropRate: try options.value(targetDropRate), window: try options.value(window))
        case .reallocate: chosen = .reallocate(floor: try options.value(floor), smoothing: try options.value(smoothing))
        case .dynamoe: chosen = .dynamoe(smoothing: try options.value(smoothing))
        }
        let amplitude = try options.value(drift)
        return Values(policy: chosen,
                      drift: amplitude > 0 ? RouterDrift(amplitude: amplitude, period: try options.value(driftPeriod), seed: seed) : nil)
    }
}

/// Options of expert placement (redundant slots and rebalancing), shared by `moe run` and `moe
/// reference` (which replays the placement decisions).
package enum PlacementOptions {
    package static let placement = TypedOption<PlacementPolicy.Kind>.choice(
        "placement", "POLICY", default: .static,
        "expert placement: static, balanced (EPLB from the moving-average load every --rebalance-every steps) or balanced-node (docs/CAPACITY.md)")
    package static let redundantExperts = TypedOption<Int>.integer(
        "redundant-experts", "R", default: 0, in: 0...4096, "redundant expert slots per rank, filled with replicas of the hottest experts")
    package static let rebalanceEvery = TypedOption<Int>.integer(
        "rebalance-every", "K", default: 10, in: 1...10_000_000, "balanced placement: re-plan after every K-th step")
    package static let rebalanceThreshold = TypedOption<Double>.number(
        "rebalance-threshold", "X", default: 0.05, in: 0...100,
        "balanced placement: move experts only when the predicted max/mean rank load improves by more than this fraction")
    package static let specs = [placement.spec, redundantExperts.spec, rebalanceEvery.spec, rebalanceThreshold.spec]

    package static func read(_ options: ParsedOptions) throws(UsageError) -> PlacementPolicy {
        let kind = try options.value(placement)
        if kind == .static {
            for option in [rebalanceEvery.spec.name, rebalanceThreshold.spec.name] where options.isGiven(option) {
                throw .conflict(command: options.command, detail: "--\(option) applies to --placement balanced or balanced-node; the static placement never moves")
            }
        }
        return PlacementPolicy(kind: kind, redundant: try options.value(redundantExperts), rebalanceEvery: try options.value(rebalanceEvery),
                               threshold: try options.value(rebalanceThreshold))
    }
}

/// The expert precision and the instruction-set cap, shared by `moe run`, `moe reference` and
/// `moe-bench layer`.
package enum PrecisionOptions {
    package static let expertPrecision = TypedOption<ExpertPrecision?>(spec: .value(
        "expert-precision", "P", "the number format every layer's experts compute in: " + ExpertPrecision.allCases.map(\.rawValue).joined(separator: ", ")
            + "; default: the model file's (expert_precision), else fp32")
    ) { (options) throws(UsageError) in try options.choice("expert-precision", as: ExpertPrecision.self) }
    package static let cpuISA = TypedOption<CPUISA>.choice(
        "cpu-isa", "ISA", default: .native,
        "cap the instruction set SwiftMoE's kernels use: portable, avx2, avx512 or native (the CPU's best); refused when the CPU lacks it")
    package static let exchangePrecision = TypedOption<ExchangePrecision>.choice(
        "exchange-precision", "P", default: .fp32,
        "the format token rows travel in between ranks: fp32, bf16 (2 bytes a value) or int8 (1 byte a value + a scale per row)")
    package static let int8Activations = TypedOption<Int8Activations>.choice(
        "int8-activations", "BITS", default: .auto,
        "int8 experts' activation codes: 8 (127 levels), 7 (63 levels: every kernel sums them exactly, so every CPU gives the same bits) "
            + "or auto (8 where oneDNN's int8 kernel is exact over u8, i.e. VNNI; else 7)")
    package static let int8GroupSize = TypedOption<Int?>.integer(
        "int8-group-size", "G", in: 8...65_536,
        "int8 weights: one scale per G inputs of each output channel (ZeroQuant's groups, e.g. 32–128) instead of one per channel; runs SwiftMoE's own int8 kernel")
    package static let int8Outliers = TypedOption<Double?>.number(
        "int8-outliers", "X", in: 0.001...1e30,
        "int8 experts: activations of magnitude ≥ X stay fp32 (LLM.int8()'s decomposition, per element; e.g. 6); default: none")
    package static let specs = [expertPrecision.spec, cpuISA.spec, exchangePrecision.spec, int8Activations.spec, int8GroupSize.spec, int8Outliers.spec]

    package struct Values: Sendable {
        package let expertPrecision: ExpertPrecision?
        package let cpuISA: CPUISA
        package let exchangePrecision: ExchangePrecision
        package let int8: Int8Settings
    }

    package static func read(_ options: ParsedOptions) throws(UsageError) -> Values {
        let int8 = Int8Settings(activations: try options.value(int8Activations), groupSize: try options.value(int8GroupSize),
                                outlierThreshold: try options.value(int8Outliers).map { Float($0) })
        return Values(expertPrecision: try options.value(expertPrecision), cpuISA: try options.value(cpuISA),
                      exchangePrecision: try options.value(exchangePrecision), int8: int8)
    }
}
