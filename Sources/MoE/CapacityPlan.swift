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
/// count and the routes that chose each expert (before drops).
package struct LayerRoutingCounts: Equatable, Sendable {
    /// `tokens[s]`: tokens of source rank s.
    package var tokens: [Int]
    /// `routed[s][e]`: routes of rank s that chose expert e.
    package var routed: [[Int]]

    package init(tokens: [Int], routed: [[Int]]) {
        self.tokens = tokens
        self.routed = routed
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

    package var name: String {
        switch self {
        case .staticFactor: return "static"
        case .adaptiveFactor: return "adaptive-factor"
        case .reallocate: return "reallocate"
        }
    }

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

    package init(policy: CapacityPolicy, layers: [LayerConfiguration]) {
        self.policy = policy
        self.layers = layers
        history = Array(repeating: [], count: layers.count)
        load = Array(repeating: nil, count: layers.count)
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
        }
    }
}
