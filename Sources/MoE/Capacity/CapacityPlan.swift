import Foundation

/// One layer's capacity for one step, as the coordinator's policy decided it.
package enum LayerCapacity: Equatable, Sendable {
    /// The configured capacity `max(min_capacity, ceil(k·T·C/E))` for every expert.
    case configured
    /// The same formula with another capacity factor (adaptive-factor policy).
    case factor(Double)
    /// The configured slot budget re-divided among experts in proportion to these shares
    /// (Σ = E; reallocate policy). See `Router.capacities`.
    case shares([Double])
}

/// Every layer's capacity for one step. Deterministic in the statistics that produced it and
/// identical on all ranks (the coordinator broadcasts it; the reference computes the same).
package struct CapacityPlan: Equatable, Sendable {
    package var layers: [LayerCapacity]

    package init(layers: [LayerCapacity]) { self.layers = layers }

    package static func configured(layers: Int) -> CapacityPlan { CapacityPlan(layers: Array(repeating: .configured, count: layers)) }
}

/// What the policies need to know about one step of one layer: for every source rank, its token
/// count, the routes that chose each expert (before drops) and the rows each expert kept.
package struct LayerRoutingCounts: Equatable, Sendable {
    /// `tokens[s]`: tokens of source rank s.
    package var tokens: [Int]
    /// `routed[s][e]`: routes of rank s that chose expert e.
    package var routed: [[Int]]
    /// `kept[s][e]`: of those, the rows expert e kept (computes); `routed` when nothing dropped.
    package var kept: [[Int]]

    /// `kept` defaults to `routed` (a dropless layer).
    package init(tokens: [Int], routed: [[Int]], kept: [[Int]]? = nil) {
        self.tokens = tokens
        self.routed = routed
        self.kept = kept ?? routed
    }

    /// Routes per expert over all ranks.
    package var routedPerExpert: [Int] {
        guard let first = routed.first else { return [] }
        return routed.dropFirst().reduce(first) { zip($0, $1).map(+) }
    }
}

/// How the coordinator re-plans capacity between steps (DynaMoE-style dynamic capacity;
/// `docs/CAPACITY.md`).
package enum CapacityPolicy: Equatable, Sendable {
    /// C as configured, every step.
    case staticFactor
    /// Per layer, the smallest capacity factor on a grid (0.05 steps up to 8) that would have
    /// kept the drop rate at or under `targetDropRate` over the last `window` steps.
    case adaptiveFactor(targetDropRate: Double, window: Int)
    /// Per layer, the configured slot budget re-divided among experts: expert e's share is
    /// `floor + (1 − floor) · E · load_e / Σ load`, with load the exponential moving average
    /// (weight `smoothing` on the newest step) of the routes that chose e.
    case reallocate(floor: Double, smoothing: Double)
    /// DynaMoE's dynamic capacity factor (Kossmann et al. 2022, "Optimizing Mixture of Experts
    /// using Dynamic Recompilations"; the thresholds are those of the authors' FlexFlow
    /// implementation): per layer, `need` = the exponential moving average (weight `smoothing`
    /// on the newest step) of the smallest capacity factor that would have dropped nothing that
    /// step. With α the layer's current factor (at first the configured C): α ← 1.25 · need when
    /// need < 0.6 α (shrink), α ← min(4, 1.25 · need) when need > 0.92 α (grow); otherwise α
    /// stays. Every change is a buffer resize (DynaMoE's recompilation), counted.
    case dynamoe(smoothing: Double)

    package var name: String {
        switch self {
        case .staticFactor: return "static"
        case .adaptiveFactor: return "adaptive-factor"
        case .reallocate: return "reallocate"
        case .dynamoe: return "dynamoe"
        }
    }

    /// DynaMoE's thresholds and bounds (see `dynamoe`).
    package static let dynamoeShrinkBelow = 0.6, dynamoeGrowAbove = 0.92, dynamoeHeadroom = 1.25
    package static let dynamoeMaximum = 4.0, dynamoeMinimum = 0.05

    /// The capacity-factor grid adaptive-factor searches.
    package static let factorGrid: [Double] = (1...160).map { Double($0) / 20 }
}

/// The policy's memory across steps and its next plan. Pure and deterministic: the coordinator
/// and the reference feed it the same counts in the same order and get the same plans.
package struct CapacityPlanner: Sendable {
    package let policy: CapacityPolicy
    package let layers: [LayerConfiguration]
    /// Per layer, the counts of recent steps (oldest first; at most the window).
    private var history: [[LayerRoutingCounts]]
    /// Per layer, the moving average of routes per expert.
    private var load: [[Double]?]
    /// dynamoe: per layer, the moving average of the no-drop factor, and the current factor α.
    private var need: [Double?]
    package private(set) var dynamicFactors: [Double]
    /// dynamoe: per layer, how many times α changed (buffer resizes, DynaMoE's recompilations).
    package private(set) var resizes: [Int]

    package init(policy: CapacityPolicy, layers: [LayerConfiguration]) {
        self.policy = policy
        self.layers = layers
        history = Array(repeating: [], count: layers.count)
        load = Array(repeating: nil, count: layers.count)
        need = Array(repeating: nil, count: layers.count)
        dynamicFactors = layers.map(\.capacityFactor)
        resizes = Array(repeating: 0, count: layers.count)
    }

    /// The smallest capacity factor under which no route of this step would have been dropped:
    /// max over source ranks s (with tokens) and experts e of `routed[s][e] · E / (k · T_s)`
    /// (the `min_capacity` floor left aside); 0 for a step without routes.
    package static func noDropFactor(_ counts: LayerRoutingCounts, layer: LayerConfiguration) -> Double {
        var factor = 0.0
        for (source, routed) in counts.routed.enumerated() where counts.tokens[source] > 0 {
            let perExpert = Double(routed.max() ?? 0)
            factor = max(factor, perExpert * Double(layer.experts) / (Double(layer.topK) * Double(counts.tokens[source])))
        }
        return factor
    }

    /// Records one step's counts (`counts[l]` for layer l).
    package mutating func record(_ counts: [LayerRoutingCounts]) {
        precondition(counts.count == layers.count)
        for (index, layerCounts) in counts.enumerated() {
            if case let .adaptiveFactor(_, window) = policy {
                history[index].append(layerCounts)
                if history[index].count > window { history[index].removeFirst(history[index].count - window) }
            }
            if case let .reallocate(_, smoothing) = policy {
                let newest = layerCounts.routedPerExpert.map(Double.init)
                load[index] = load[index].map { old in zip(old, newest).map { (1 - smoothing) * $0 + smoothing * $1 } } ?? newest
            }
            if case let .dynamoe(smoothing) = policy, !layers[index].isDropless {
                let newest = Self.noDropFactor(layerCounts, layer: layers[index])
                let average = need[index].map { (1 - smoothing) * $0 + smoothing * newest } ?? newest
                need[index] = average
                let alpha = dynamicFactors[index]
                var next = alpha
                if average < CapacityPolicy.dynamoeShrinkBelow * alpha {
                    next = CapacityPolicy.dynamoeHeadroom * average
                } else if average > CapacityPolicy.dynamoeGrowAbove * alpha {
                    next = min(CapacityPolicy.dynamoeMaximum, CapacityPolicy.dynamoeHeadroom * average)
                }
                next = max(CapacityPolicy.dynamoeMinimum, next)
                if next != alpha {
                    dynamicFactors[index] = next
                    resizes[index] += 1
                }
            }
        }
    }

    /// The plan for the next step.
    package func nextPlan() -> CapacityPlan {
        CapacityPlan(layers: layers.indices.map { plan(layer: $0) })
    }

    private func plan(layer index: Int) -> LayerCapacity {
        let layer = layers[index]
        guard !layer.isDropless else { return .configured }
        switch policy {
        case .staticFactor:
            return .configured
        case let .adaptiveFactor(target, _):
            let steps = history[index]
            guard !steps.isEmpty else { return .configured }
            let routes = steps.reduce(0) { $0 + $1.routed.joined().reduce(0, +) }
            guard routes > 0 else { return .configured }
            for factor in CapacityPolicy.factorGrid {
                var adjusted = layer
                adjusted.capacityFactor = factor
                var dropped = 0
                for step in steps {
                    for (source, routed) in step.routed.enumerated() {
                        let capacity = Router.capacity(tokenCount: step.tokens[source], layer: adjusted) ?? Int.max
                        for count in routed { dropped += max(0, count - capacity) }
                    }
                }
                if Double(dropped) <= target * Double(routes) { return .factor(factor) }
            }
            return .factor(CapacityPolicy.factorGrid.last!)
        case let .reallocate(floor, _):
            guard let load = load[index] else { return .configured }
            let total = load.reduce(0, +)
            guard total > 0 else { return .configured }
            let experts = Double(layer.experts)
            return .shares(load.map { floor + (1 - floor) * experts * $0 / total })
        case .dynamoe:
            return dynamicFactors[index] == layer.capacityFactor ? .configured : .factor(dynamicFactors[index])
        }
    }
}
