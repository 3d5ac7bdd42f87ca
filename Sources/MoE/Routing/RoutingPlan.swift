/// One rank's routing decisions for one layer and step: for each token t and choice r (the
/// token's r-th best expert), which expert and slot the route got, or that it was dropped.
///
/// Arrays indexed `[r * tokenCount + t]` (row r = every token's r-th choice), as `moe route`
/// writes them. Invariants: `expert[i]` is `choice[i]` or −1; `slot[i]` is −1 exactly when
/// `expert[i]` is −1; the slots of one expert are 0..<kept[e] without gaps; a dropped route's
/// `gate` is 0.
package struct RoutingPlan: Equatable, Sendable {
    package let tokenCount: Int
    package let topK: Int
    package let expertCount: Int
    /// Slots each expert offers this source rank (`[expertCount]`); nil when unlimited
    /// (dropless). Equal for every expert unless a capacity plan re-divided them.
    package let capacities: [Int]?
    /// The largest expert capacity (the uniform one without a capacity plan); nil when unlimited.
    package var capacity: Int? { capacities?.max() }
    /// Routes choosing each expert before drops, `[expertCount]`.
    package var routedPerExpert: [Int] {
        var routed = [Int](repeating: 0, count: expertCount)
        for expert in choice { routed[expert] += 1 }
        return routed
    }
    /// Expert chosen before drops.
    package var choice: [Int]
    /// Expert the route goes to, −1 if dropped.
    package var expert: [Int]
    /// Position in the expert's buffer from this rank, −1 if dropped.
    package var slot: [Int]
    /// Combine weight (0 if dropped).
    package var gate: [Float]
    /// The chosen experts' softmax probabilities (1/k each under task routing), before drops.
    package var probability: [Float]

    /// The plan of a dense layer's step: no routes (k = 0) over one placeholder expert, so the
    /// statistics count nothing routed for it.
    package static func denseLayer(tokenCount: Int) -> RoutingPlan {
        RoutingPlan(tokenCount: tokenCount, topK: 0, expertCount: 1, capacities: nil, choice: [], expert: [], slot: [], gate: [],
                    probability: [])
    }

    /// Routes each expert kept, `[expertCount]`.
    package var keptPerExpert: [Int] {
        var kept = [Int](repeating: 0, count: expertCount)
        for expert in expert where expert >= 0 { kept[expert] += 1 }
        return kept
    }

    /// Routes each expert dropped (counted at the expert chosen), `[expertCount]`.
    package var droppedPerExpert: [Int] {
        var dropped = [Int](repeating: 0, count: expertCount)
        for index in choice.indices where expert[index] < 0 { dropped[choice[index]] += 1 }
        return dropped
    }

    package var droppedRoutes: Int { expert.lazy.filter { $0 < 0 }.count }

    /// Token occupying each slot: `slotRoutes[e][s]` is the route index `r * tokenCount + t`.
    package func slotRoutes() -> [[Int]] {
        var routes = [[Int]](repeating: [], count: expertCount)
        for (expert, kept) in keptPerExpert.enumerated() { routes[expert] = [Int](repeating: -1, count: kept) }
        for index in expert.indices where expert[index] >= 0 { routes[expert[index]][slot[index]] = index }
        return routes
    }
}

/// Why routing could not be done.
package enum RoutingError: Error, Equatable, CustomStringConvertible {
    /// A router logit is NaN or infinite (`token` is the rank-local token index).
    case nonFiniteLogit(token: Int, expert: Int, value: Float)
    /// A token carries a task id the model's task map does not name.
    case unknownTask(token: Int, task: Int)

    package var description: String {
        switch self {
        case let .nonFiniteLogit(token, expert, value): return "router logit of token \(token) for expert \(expert) is \(value)"
        case let .unknownTask(token, task): return "token \(token) has task id \(task), which the model's task_experts does not list"
        }
    }
}
