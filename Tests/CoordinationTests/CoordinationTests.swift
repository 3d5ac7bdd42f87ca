import Testing
@testable import Coordination
@testable import MoE

private func layer(experts: Int, topK: Int = 1, factor: Double = 1.0, minCapacity: Int = 0) -> LayerConfiguration {
    LayerConfiguration(experts: experts, topK: topK, capacityFactor: factor, minCapacity: minCapacity)
}

/// A consistent report of one rank for a 1-layer, 2-expert model on 2 ranks.
private func report(tokens: Int, routed: [Int], kept: [Int], sent: [Int], received: [Int]) -> RankStatistics {
    RankStatistics(layers: [LayerStatistics(tokens: tokens, routed: routed, kept: kept, dropped: zip(routed, kept).map { $0 - $1 },
                                            capacity: [5, 5], bytesSentTo: sent, bytesReceivedFrom: received)],
                   phaseSeconds: [0.001, 0, 0.002, 0.003, 0.004, 0.005])
}

@Suite("Coordinator logic")
struct CoordinationTests {
    @Test("statistics survive the wire format exactly")
    func roundTrip() throws {
        let original = report(tokens: 7, routed: [6, 1], kept: [5, 1], sent: [40, 8], received: [40, 16])
        let decoded = try RankStatistics.decode(original.encoded(), experts: [2], worldSize: 2)
        #expect(decoded == original)
    }

    @Test("malformed statistics are refused with what is wrong", arguments: [
        ("kept", "layer 0 expert 0: routed 6 ≠ kept 6 + dropped 1"),
        ("layers", "reports 1 layers, the model has 2"),
        ("capacity", "layer 0 expert 0: kept 6 exceeds its capacity 5"),
        ("negative", "layer 0 tokens is -3.0, not a count"),
        ("short", "report ends early (reading layer 0 bytes received[1])"),
        ("phase", "phase times [0.001, 0.0, 0.002, 0.003, 0.004, nan] are not 6 finite non-negative seconds"),
    ])
    func malformed(kind: String, message: String) {
        var values = report(tokens: 7, routed: [6, 1], kept: [5, 1], sent: [40, 8], received: [40, 16]).encoded()
        var experts = [2]
        switch kind {
        case "kept": values[5] = 6                        // kept[0] 5 → 6 (dropped stays 1)
        case "layers": experts = [2, 2]
        case "capacity": values[5] = 6; values[7] = 0      // kept 6, dropped 0: consistent but over capacity 5
        case "negative": values[1] = -3
        case "short": values.removeLast(7)
        default: values[values.count - 1] = .nan
        }
        #expect(throws: StatisticsError(problem: message)) { try RankStatistics.decode(values, experts: experts, worldSize: 2) }
    }

    @Test("the step report adds ranks up: tokens, routes = kept + dropped, bytes sent = bytes received")
    func stepReport() {
        let ranks = [report(tokens: 7, routed: [6, 1], kept: [5, 1], sent: [40, 8], received: [40, 16]),
                     report(tokens: 9, routed: [2, 7], kept: [2, 5], sent: [16, 40], received: [8, 40])]
        let step = StepReport(step: 0, ranks: ranks).layers[0]
        #expect(step.tokens == 16 && step.routed == [8, 8] && step.kept == [7, 6] && step.dropped == [1, 2])
        #expect(step.routes == 16 && abs(step.dropRate - 3.0 / 16) < 1e-12)
        #expect(step.bytesSentByRank.reduce(0, +) == step.bytesReceivedByRank.reduce(0, +))
        #expect(step.imbalance == 1 && step.slots == 20)
        #expect(step.counts == LayerRoutingCounts(tokens: [7, 9], routed: [[6, 1], [2, 7]], kept: [[5, 1], [2, 5]]))
    }

    @Test("capacity plans cross the wire bit for bit; garbage is refused")
    func planCodec() {
        let plan = CapacityPlan(layers: [.configured, .factor(1.35), .shares([2.5, 1.0, 0.25, 0.25])])
        #expect(CapacityPlanCodec.decode(CapacityPlanCodec.encode(plan)) == plan)
        #expect(CapacityPlanCodec.decode([1, 7, 0]) == nil)
        #expect(CapacityPlanCodec.decode([2, 0, 0]) == nil)
    }

    @Test("static: the configured capacity, whatever happened")
    func staticPolicy() {
        var planner = CapacityPlanner(policy: .staticFactor, layers: [layer(experts: 2)])
        planner.record([LayerRoutingCounts(tokens: [10], routed: [[10, 0]])])
        #expect(planner.nextPlan() == CapacityPlan(layers: [.configured]))
    }

    @Test("adaptive-factor: the smallest grid factor whose capacity would have met the target over the window")
    func adaptiveFactor() {
        // E 2, k 1, T 10: capacity ⌈5·C⌉. Routed 7 and 3: 6 slots (C 1.05 … 1.2) drop 1 of 10;
        // 7 slots (from C 1.25) drop none.
        let counts = LayerRoutingCounts(tokens: [10], routed: [[7, 3]])
        var strict = CapacityPlanner(policy: .adaptiveFactor(targetDropRate: 0, window: 2), layers: [layer(experts: 2)])
        strict.record([counts])
        #expect(strict.nextPlan() == CapacityPlan(layers: [.factor(1.25)]))
        var tolerant = CapacityPlanner(policy: .adaptiveFactor(targetDropRate: 0.1, window: 2), layers: [layer(experts: 2)])
        tolerant.record([counts])
        #expect(tolerant.nextPlan() == CapacityPlan(layers: [.factor(1.05)]))
        // The window (2 steps) forgets the skewed step: 5 and 5 routes need ⌈5·C⌉ ≥ 5, C = 0.85.
        strict.record([LayerRoutingCounts(tokens: [10], routed: [[5, 5]])])
        strict.record([LayerRoutingCounts(tokens: [10], routed: [[5, 5]])])
        #expect(strict.nextPlan() == CapacityPlan(layers: [.factor(0.85)]))
    }

    @Test("reallocate: shares = floor + (1 − floor)·E·load/Σload; the budget is the configured one")
    func reallocate() throws {
        var planner = CapacityPlanner(policy: .reallocate(floor: 0.25, smoothing: 1), layers: [layer(experts: 4)])
        planner.record([LayerRoutingCounts(tokens: [5, 5], routed: [[4, 1, 0, 0], [2, 1, 0, 0]])])
        let plan = planner.nextPlan()
        #expect(plan == CapacityPlan(layers: [.shares([2.5, 1.0, 0.25, 0.25])]))
        // T 10, E 4, k 1, C 1: uniform 3 slots, budget 12 → exact 7.5, 3, 0.75, 0.75 → 7, 3, 0, 0
        // plus the 2 left over to the largest fractions (experts 2 and 3).
        let capacities = try #require(Router.capacities(tokenCount: 10, layer: layer(experts: 4), plan: plan.layers[0]))
        #expect(capacities == [7, 3, 1, 1])
        #expect(capacities.reduce(0, +) == 4 * Router.capacity(tokenCount: 10, layer: layer(experts: 4))!)
        // Smoothing 0.5: the load is the average of the old and the new step.
        var smooth = CapacityPlanner(policy: .reallocate(floor: 0, smoothing: 0.5), layers: [layer(experts: 2)])
        smooth.record([LayerRoutingCounts(tokens: [4], routed: [[4, 0]])])
        smooth.record([LayerRoutingCounts(tokens: [4], routed: [[0, 4]])])
        #expect(smooth.nextPlan() == CapacityPlan(layers: [.shares([1, 1])]))
    }

    @Test("dynamoe: need = max routes·E/(k·T); shrink to 1.25·need below 0.6α, grow to min(4, 1.25·need) above 0.92α; resizes counted")
    func dynamoe() {
        // E 2, k 1, C 1. Step 1: sources of 10 tokens route [9, 1] and [5, 5]: need = 9·2/10 = 1.8 > 0.92
        // → α = 1.25 · 1.8 = 2.25.
        var planner = CapacityPlanner(policy: .dynamoe(smoothing: 1), layers: [layer(experts: 2)])
        planner.record([LayerRoutingCounts(tokens: [10, 10], routed: [[9, 1], [5, 5]])])
        #expect(planner.nextPlan() == CapacityPlan(layers: [.factor(2.25)]))
        // Step 2: [5, 5] everywhere: need 1.0 < 0.6 · 2.25 = 1.35: shrink to 1.25 · 1.0.
        planner.record([LayerRoutingCounts(tokens: [10, 10], routed: [[5, 5], [5, 5]])])
        #expect(planner.nextPlan() == CapacityPlan(layers: [.factor(1.25)]))
        // Step 3: need 6·2/10 = 1.2 > 0.92 · 1.25 = 1.15: grow to 1.5.
        planner.record([LayerRoutingCounts(tokens: [10], routed: [[6, 4]])])
        #expect(planner.nextPlan() == CapacityPlan(layers: [.factor(1.5)]))
        planner.record([LayerRoutingCounts(tokens: [10], routed: [[6, 4]])])  // need 1.2, within [0.9, 1.38]: stays
        #expect(planner.nextPlan() == CapacityPlan(layers: [.factor(1.5)]))
        #expect(planner.resizes == [3])
        // Growth is capped at 4; smoothing averages the need.
        var capped = CapacityPlanner(policy: .dynamoe(smoothing: 0.5), layers: [layer(experts: 8)])
        capped.record([LayerRoutingCounts(tokens: [8], routed: [[8, 0, 0, 0, 0, 0, 0, 0]])])  // need 8
        #expect(capped.nextPlan() == CapacityPlan(layers: [.factor(4)]))
        capped.record([LayerRoutingCounts(tokens: [8], routed: [[1, 1, 1, 1, 1, 1, 1, 1]])])  // need (8 + 1) / 2 = 4.5: stays at the cap
        #expect(capped.nextPlan() == CapacityPlan(layers: [.factor(4)]) && capped.resizes == [1])
    }

    @Test("EPLB placement: replicas to the highest load per replica, heaviest first onto the least-loaded rank with room")
    func replicaPlacement() {
        // Loads 8, 2, 1, 1 on 2 ranks with 1 redundant slot each: 6 replicas, 3 slots per rank.
        // Expert 0 gets one extra replica (8/1), then is capped at 2 (= ranks), so expert 1 gets
        // the other (2/1 > 1); weights 4, 4, 1, 1, 1, 1. Packing: e0 → rank 0, e0 → rank 1 (rank
        // 0 holds it), e1 → rank 0 (tie, lower rank), e1 → rank 1, e2 → rank 0, e3 → rank 1.
        let balanced = ReplicaPlacement.balanced(load: [8, 2, 1, 1], ranks: 2, redundant: 1)
        #expect(balanced.replicas == [[0, 1], [0, 1], [0], [1]])
        #expect(balanced.slots == [[0, 1, 2], [0, 1, 3]])
        #expect(balanced.imbalance == 1)
        // Replicas are capped at the ranks: one very hot expert on 3 ranks with R = 2.
        let capped = ReplicaPlacement.balanced(load: [100, 1, 1], ranks: 3, redundant: 2)
        #expect(capped.replicas.map(\.count) == [3, 3, 3], "3 + 6 replicas: expert 0 capped at 3, the rest spread")
        let blocks = ReplicaPlacement.contiguous(load: [8, 2, 1, 1], ranks: 2)
        #expect(blocks.rankLoad == [10, 2] && abs(blocks.imbalance - 10.0 / 6) < 1e-12)
        #expect(ReplicaPlacement.slotsPerRank(experts: 16, ranks: 8, redundant: 1) == 3)
        // Without redundancy every expert keeps one replica, packed greedily.
        let plain = ReplicaPlacement.balanced(load: [5, 4, 3, 2, 1, 1], ranks: 3, redundant: 0)
        #expect(plain.replicas.allSatisfy { $0.count == 1 } && plain.slots.allSatisfy { $0.count == 2 })
        #expect(plain.rankLoad == [6, 5, 5])
    }

    @Test("a dropless layer is never re-planned; an idle layer keeps the configured capacity")
    func droplessAndIdle() {
        var planner = CapacityPlanner(policy: .reallocate(floor: 0.25, smoothing: 1),
                                      layers: [LayerConfiguration(experts: 2, topK: 1, dropPolicy: .none), layer(experts: 2)])
        planner.record([LayerRoutingCounts(tokens: [4], routed: [[4, 0]]), LayerRoutingCounts(tokens: [0], routed: [[0, 0]])])
        #expect(planner.nextPlan() == CapacityPlan(layers: [.configured, .configured]))
    }

    @Test("the drifting workload: deterministic, bounded by its amplitude, periodic")
    func drift() {
        let drift = RouterDrift(amplitude: 2, period: 8, seed: 5)
        let bias = drift.bias(layer: 1, experts: 8, step: 3)
        #expect(bias == RouterDrift(amplitude: 2, period: 8, seed: 5).bias(layer: 1, experts: 8, step: 3))
        #expect(bias.allSatisfy { abs($0) <= 2 })
        for (a, b) in zip(bias, drift.bias(layer: 1, experts: 8, step: 11)) { #expect(abs(a - b) < 1e-5) }
        #expect(bias != drift.bias(layer: 0, experts: 8, step: 3))  // layers drift out of phase
    }
}
