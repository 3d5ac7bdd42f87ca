import Testing
@testable import MoE

@Suite("Expert slots and the placement planner (pure)")
struct PlacementPlannerTests {
    let layer = LayerConfiguration(experts: 4, topK: 1, capacityFactor: 1, minCapacity: 0)

    /// Counts where group rank s routed `routed[s]` (tokens: the routes).
    func counts(_ routed: [[Int]]) -> LayerRoutingCounts {
        LayerRoutingCounts(tokens: routed.map { $0.reduce(0, +) }, routed: routed)
    }

    @Test("slots list each expert's replicas by (rank, slot); the static placement is the contiguous blocks")
    func slots() throws {
        let slots = try ExpertSlots(experts: 3, slots: [[0, 2], [1, 0]])
        #expect(slots.replicas == [[.init(rank: 0, slot: 0), .init(rank: 1, slot: 1)], [.init(rank: 1, slot: 0)], [.init(rank: 0, slot: 1)]])
        #expect(slots.replicaIndex(rank: 1, slot: 1) == 1)
        #expect(ExpertSlots(ExpertBlocks(experts: 5, ranks: 2)).slots == [[0, 1, 2], [3, 4]])
        #expect(throws: ExpertSlots.Problem.missingExpert(1)) { try ExpertSlots(experts: 3, slots: [[0], [2]]) }
        #expect(throws: ExpertSlots.Problem.expertOutOfRange(rank: 1, slot: 0, expert: 3)) { try ExpertSlots(experts: 3, slots: [[0, 1, 2], [3]]) }
        // Predicted load: an expert's load splits evenly over its replicas.
        #expect(slots.rankLoad([6, 3, 1]) == [4, 6])
        #expect(slots.imbalance([6, 3, 1]) == 1.2)
    }

    @Test("replica shares tile a source's kept rows in replica order, as even as integers allow", arguments: [1, 2, 3, 5])
    func shares(replicas: Int) {
        for rows in 0...13 {
            let shares = (0..<replicas).map { ExpertSlots.share(replica: $0, of: replicas, rows: rows) }
            #expect(shares.first!.lowerBound == 0 && shares.last!.upperBound == rows)
            #expect(zip(shares, shares.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
            #expect(shares.allSatisfy { $0.count == rows / replicas || $0.count == rows / replicas + 1 })
            // The plan cache's bound holds for every count up to a capacity.
            for capacity in rows...rows + 3 { #expect(shares.allSatisfy { $0.count <= ExpertSlots.shareBound(of: replicas, capacity: capacity) }) }
        }
    }

    @Test("static placement: blocks without redundant slots, uniform EPLB with them, never a change")
    func staticPolicy() {
        var plain = PlacementPlanner(policy: .contiguous, layers: [layer], worldSize: 2)
        #expect(plain.slots[0][0].slots == [[0, 1], [2, 3]])
        #expect(plain.record(step: 9, [counts([[9, 0, 0, 0], [9, 0, 0, 0]])]).isEmpty)
        let redundant = PlacementPlanner(policy: PlacementPolicy(redundant: 1), layers: [layer], worldSize: 2)
        // Uniform load: the two extra replicas go to experts 0 and 1; every slot is used.
        #expect(redundant.slots[0][0].slots.map { $0.count } == [3, 3])
        #expect(redundant.slots[0][0].replicas.map(\.count) == [2, 2, 1, 1])
    }

    @Test("balanced: re-plans only every K steps, from the moving average, and only past the threshold")
    func balancedHysteresis() throws {
        let policy = PlacementPolicy(kind: .balanced, redundant: 1, rebalanceEvery: 2, threshold: 0.05)
        var planner = PlacementPlanner(policy: policy, layers: [layer], worldSize: 2)
        // The first placement (uniform EPLB) is [[0, 1, 2], [0, 1, 3]]: experts 0 and 1 have two
        // replicas. Expert 2 hot, 3 warm, 0 and 1 idle: rank 0 carries 24 of 32, max/mean 1.5.
        let hot = counts([[0, 0, 12, 4], [0, 0, 12, 4]])
        #expect(planner.slots[0][0].slots == [[0, 1, 2], [0, 1, 3]])
        #expect(planner.record(step: 0, [hot]).isEmpty, "step 1 is not a multiple of K = 2")
        let changes = planner.record(step: 1, [hot])
        let change = try #require(changes.first)
        #expect(changes.count == 1 && change.layer == 0 && change.group == 0)
        // Load 0, 0, 24, 8: expert 2 gets one extra replica (two ranks hold it at most), expert 3
        // the other; the packing spreads the ranks to 16 and 16 — perfectly even.
        #expect(change.new.replicas.map(\.count) == [1, 1, 2, 2])
        #expect(change.before == 1.5 && change.after == 1)
        #expect(change.before == change.old.imbalance([0, 0, 24, 8]) && change.after == change.new.imbalance([0, 0, 24, 8]))
        // Experts a rank kept stay in their slots; only two slots are refilled.
        #expect(change.new.slots == [[0, 3, 2], [2, 1, 3]])
        #expect(change.movedSlots.map { [$0.rank, $0.slot] } == [[0, 1], [1, 0]])
        #expect(planner.slots[0][0] == change.new)
        // The same load again: nothing better to gain, no change.
        _ = planner.record(step: 2, [hot])
        #expect(planner.record(step: 3, [hot]).isEmpty)
        // A threshold no change can pass.
        var strict = PlacementPlanner(policy: PlacementPolicy(kind: .balanced, redundant: 1, rebalanceEvery: 1, threshold: 10),
                                      layers: [layer], worldSize: 2)
        #expect(strict.record(step: 0, [hot]).isEmpty)
        // After the last step nothing is planned, though the step is due.
        var last = PlacementPlanner(policy: PlacementPolicy(kind: .balanced, redundant: 1, rebalanceEvery: 1, threshold: 0),
                                    layers: [layer], worldSize: 2)
        #expect(last.record(step: 0, [hot], replan: false).isEmpty)
        #expect(!last.record(step: 1, [hot]).isEmpty)
    }

    @Test("the load is the rows each expert kept, not the routes that chose it (capacity already caps a hot expert)")
    func keptRowsAreTheLoad() {
        let policy = PlacementPolicy(kind: .balanced, redundant: 1, rebalanceEvery: 1, threshold: 0)
        var planner = PlacementPlanner(policy: policy, layers: [layer], worldSize: 2)
        // Expert 2 was chosen 40 times but kept 4 (capacity); expert 3 kept all its 12 routes.
        let capped = LayerRoutingCounts(tokens: [30, 30], routed: [[0, 0, 20, 6], [0, 0, 20, 6]], kept: [[0, 0, 2, 6], [0, 0, 2, 6]])
        let change = planner.record(step: 0, [capped]).first
        // The first placement [[0, 1, 2], [0, 1, 3]] under the kept rows 0, 0, 4, 12 loads the
        // ranks 4 and 12: max/mean 1.5 (the routes 0, 0, 40, 12 would say 40 and 12: 1.54).
        #expect(change?.before == 1.5)
        #expect(change?.new.replicas[3].count == 2 && change?.after == 1)
    }

    @Test("a new placement keeps each rank's experts in the slots they were in")
    func keepingPositions() {
        #expect(PlacementPlanner.keepingPositions(of: [5, 2, 7], new: [1, 2, 5]) == [5, 2, 1])
        #expect(PlacementPlanner.keepingPositions(of: [], new: [3, 4]) == [3, 4])
        #expect(PlacementPlanner.keepingPositions(of: [1, 3], new: [3, 9]) == [9, 3])
        #expect(PlacementPlanner.keepingPositions(of: [1, 2, 3], new: [3, 9]) == [3, 9], "slot 2 is gone: expert 3 moves to a free slot")
    }

    @Test("moved slots are those whose rank did not hold their expert")
    func movedSlots() throws {
        let old = try ExpertSlots(experts: 4, slots: [[0, 1], [2, 3]])
        let new = try ExpertSlots(experts: 4, slots: [[0, 2, 3], [1, 2, 0]])
        let change = PlacementChange(layer: 0, group: 0, old: old, new: new, before: 2, after: 1)
        #expect(change.movedSlots.map { [$0.rank, $0.slot] } == [[0, 1], [0, 2], [1, 0], [1, 2]])
    }

    @Test("the change codec round-trips and refuses what is not a list of changes")
    func codec() throws {
        let old = try ExpertSlots(experts: 4, slots: [[0, 1], [2, 3]])
        let new = try ExpertSlots(experts: 4, slots: [[0, 2, 3], [1, 2, 0]])
        let change = PlacementChange(layer: 1, group: 0, old: old, new: new, before: 1.75, after: 1.125)
        let current = [[ExpertSlots(ExpertBlocks(experts: 2, ranks: 2))], [old]]
        let values = PlacementChangeCodec.encode([change])
        #expect(PlacementChangeCodec.decode(values[...], current: current) == [change])
        #expect(PlacementChangeCodec.decode([0][...], current: current) == [])
        #expect(PlacementChangeCodec.decode(values.dropLast()[...], current: current) == nil, "truncated")
        #expect(PlacementChangeCodec.decode((values + [1])[...], current: current) == nil, "trailing values")
        var badLayer = values
        badLayer[1] = 7
        #expect(PlacementChangeCodec.decode(badLayer[...], current: current) == nil)
        var badExpert = values
        badExpert[badExpert.count - 1] = 4
        #expect(PlacementChangeCodec.decode(badExpert[...], current: current) == nil)
        var fraction = values
        fraction[0] = 0.5
        #expect(PlacementChangeCodec.decode(fraction[...], current: current) == nil)
    }

    @Test("R that does not fit: a rank would need more slots than the layer has experts")
    func redundantLimit() {
        let layers = [LayerConfiguration(experts: 8, topK: 2, capacityFactor: 1), LayerConfiguration.denseLayer()]
        #expect(PlacementPolicy(redundant: 6).problem(layers: layers, worldSize: 4) == nil)
        #expect(PlacementPolicy(redundant: 7).problem(layers: layers, worldSize: 4)?.contains("at most 6 redundant slots per rank fit") == true)
    }
}
