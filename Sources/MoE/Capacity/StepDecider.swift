/// What happens between two steps, decided from one step's routing counts: the next step's
/// capacity plan (`CapacityPlanner`, the policy) and the placement changes (`PlacementPlanner`).
/// Pure; the coordinator runs it on the gathered statistics and `moe reference` replays it on
/// its own, so both reach the same decisions from the same counts.
package struct StepDecider: Sendable {
    package private(set) var capacity: CapacityPlanner
    package private(set) var placement: PlacementPlanner

    package init(capacity: CapacityPlanner, placement: PlacementPlanner) {
        self.capacity = capacity
        self.placement = placement
    }

    /// Records step `step`'s counts (`counts[layer]`, every source rank) and returns the plan for
    /// the next step and the placement changes to apply before it. `lastStep`: no step follows,
    /// so no placement change is planned (nothing would use it).
    package mutating func decide(step: Int, _ counts: [LayerRoutingCounts], lastStep: Bool) -> (plan: CapacityPlan, changes: [PlacementChange]) {
        capacity.record(counts)
        let changes = placement.record(step: step, counts, replan: !lastStep)
        return (capacity.nextPlan(), changes)
    }

    /// Applies changes decided elsewhere (a rank that is not the coordinator).
    package mutating func apply(_ changes: [PlacementChange]) { placement.apply(changes) }
}
