import Foundation
import Testing
@testable import MoE

/// Routes hand-made logits (`logits[t]` is token t's row over the experts).
func route(_ logits: [[Float]], k: Int, capacityFactor: Double = 1, minCapacity: Int = 0,
           policy: DropPolicy = .inOrder, priority: RoutingPriority = .max) throws -> RoutingPlan {
    let experts = logits.first?.count ?? 2
    let layer = LayerConfiguration(experts: experts, topK: k, capacityFactor: capacityFactor, minCapacity: minCapacity,
                                   dropPolicy: policy, priority: priority)
    let flat = logits.flatMap { $0 }
    return try flat.withUnsafeBufferPointer { try Router.route(logits: $0, tokenCount: logits.count, layer: layer) }
}

/// Row r of a `[k][T]` array.
func row<T>(_ values: [T], _ r: Int, tokens: Int) -> [T] { Array(values[r * tokens..<(r + 1) * tokens]) }

@Suite("Router rules (docs/ROUTING.md)")
struct RouterTests {
    @Test("capacity is max(min_capacity, ceil(k·T·C/E))", arguments: [
        (2, 10, 1.25, 8, 0, 4),   // 25/8 = 3.125 → 4
        (1, 16, 1.0, 4, 0, 4),    // exact: 4
        (1, 16, 1.0, 4, 6, 6),    // min_capacity wins
        (2, 0, 1.25, 8, 3, 3),    // no tokens: min_capacity
        (1, 3, 0.5, 8, 0, 1),     // 0.1875 → 1
    ])
    func capacityFormula(k: Int, tokens: Int, factor: Double, experts: Int, minimum: Int, expected: Int) {
        let layer = LayerConfiguration(experts: experts, topK: k, capacityFactor: factor, minCapacity: minimum)
        #expect(Router.capacity(tokenCount: tokens, layer: layer) == expected)
    }

    @Test("dropless: policy none or C = 0 means no limit")
    func dropless() throws {
        #expect(Router.capacity(tokenCount: 9, layer: LayerConfiguration(experts: 2, topK: 1, dropPolicy: .none)) == nil)
        #expect(Router.capacity(tokenCount: 9, layer: LayerConfiguration(experts: 2, topK: 1, capacityFactor: 0)) == nil)
        let plan = try route(Array(repeating: [5, 0], count: 9), k: 1, policy: .none)
        #expect(plan.expert == Array(repeating: 0, count: 9))
        #expect(plan.slot == Array(0..<9))
        #expect(plan.droppedRoutes == 0)
    }

    @Test("overflow in order: the first tokens get the slots, later ones drop")
    func overflowInOrder() throws {
        // 4 tokens, all prefer expert 0; capacity = ceil(1·4·1/2) = 2.
        let plan = try route([[3, 1], [2, 1], [4, 0], [5, 1]], k: 1)
        #expect(plan.capacity == 2)
        #expect(plan.expert == [0, 0, -1, -1])
        #expect(plan.slot == [0, 1, -1, -1])
        #expect(plan.keptPerExpert == [2, 0])
        #expect(plan.droppedPerExpert == [2, 0])
        #expect(plan.gate[2] == 0 && plan.gate[3] == 0)
    }

    @Test("second choices claim slots only after every first choice")
    func secondChoicesAfterFirst() throws {
        // 3 experts, k = 2, 3 tokens: capacity = ceil(2·3·1/3) = 2.
        // First choices: t0→e0, t1→e1, t2→e0 fill e0 (2) and give e1 one slot.
        // Second choices: t0→e1 takes e1's last slot; t1→e0 and t2→e1 find their experts full.
        let plan = try route([[9, 5, 0], [5, 9, 0], [9, 5, 0]], k: 2)
        #expect(plan.capacity == 2)
        #expect(row(plan.choice, 0, tokens: 3) == [0, 1, 0])
        #expect(row(plan.choice, 1, tokens: 3) == [1, 0, 1])
        #expect(row(plan.expert, 0, tokens: 3) == [0, 1, 0])
        #expect(row(plan.slot, 0, tokens: 3) == [0, 0, 1])
        #expect(row(plan.expert, 1, tokens: 3) == [1, -1, -1])
        #expect(row(plan.slot, 1, tokens: 3) == [1, -1, -1])
    }

    @Test("batch-prioritized: the most confident tokens claim slots first, whatever their index")
    func batchPrioritized() throws {
        // All 4 tokens prefer expert 0, capacity 2. Confidence rises with the token index, so
        // BPR keeps tokens 3 and 2 (slots 0, 1) where in-order would keep 0 and 1.
        let logits: [[Float]] = [[1, 0], [2, 0], [3, 0], [4, 0]]
        let prioritized = try route(logits, k: 1, policy: .batchPrioritized)
        #expect(prioritized.expert == [-1, -1, 0, 0])
        #expect(prioritized.slot == [-1, -1, 1, 0])
        let inOrder = try route(logits, k: 1)
        #expect(inOrder.expert == [0, 0, -1, -1])
    }

    @Test("batch-prioritized by sum ranks tokens by the sum of their top-k probabilities")
    func batchPrioritizedSum() throws {
        // 3 experts, k = 2. Token 0 has the highest max but a low second; token 1 has the larger sum.
        let logits: [[Float]] = [[5, 0, 0], [4, 3.5, -9]]
        let byMax = Router.claimOrder(probability: try route(logits, k: 2, capacityFactor: 10).probability, tokenCount: 2,
                                      layer: LayerConfiguration(experts: 3, topK: 2, dropPolicy: .batchPrioritized, priority: .max))
        let bySum = Router.claimOrder(probability: try route(logits, k: 2, capacityFactor: 10).probability, tokenCount: 2,
                                      layer: LayerConfiguration(experts: 3, topK: 2, dropPolicy: .batchPrioritized, priority: .sum))
        #expect(byMax == [0, 1])
        #expect(bySum == [1, 0])
    }

    @Test("ties: equal logits go to the lower expert; equal priorities to the lower token")
    func ties() throws {
        let plan = try route([[1, 1, 1, 1]], k: 3, capacityFactor: 100)
        #expect(plan.choice == [0, 1, 2])
        // Two tokens of identical priority, one slot: the lower token index wins under BPR.
        let tied = try route([[2, 0], [2, 0]], k: 1, capacityFactor: 0.5, policy: .batchPrioritized)
        #expect(tied.capacity == 1)
        #expect(tied.expert == [0, -1])
    }

    @Test("k = 1: the combine weight is the softmax probability")
    func topOneWeight() throws {
        let plan = try route([[2, 0, 0]], k: 1, capacityFactor: 10)
        let expected = Float(Double(expf(2)) / (Double(expf(2)) + 2))
        #expect(abs(plan.gate[0] - expected) < 1e-6)
    }

    @Test("k ≥ 2: weights renormalise over surviving routes; a fully dropped token gets zero")
    func renormalisation() throws {
        // Capacity 1 for 2 experts (C = 0.5, T = 2, k = 2: ceil(2·2·0.5/2) = 1).
        // t0: e0 (slot 0), then e1 (slot 0). t1: e0 full, e1 full → fully dropped.
        let plan = try route([[2, 1], [2, 1]], k: 2, capacityFactor: 0.5)
        #expect(plan.capacity == 1)
        #expect(row(plan.expert, 0, tokens: 2) == [0, -1])
        #expect(row(plan.expert, 1, tokens: 2) == [1, -1])
        let p0 = plan.probability[0], p1 = plan.probability[2]
        #expect(abs(plan.gate[0] - p0 / (p0 + p1)) < 1e-7)
        #expect(abs(plan.gate[2] - p1 / (p0 + p1)) < 1e-7)
        #expect(abs(plan.gate[0] + plan.gate[2] - 1) < 1e-6)
        #expect(plan.gate[1] == 0 && plan.gate[3] == 0)
        // One survivor: its weight becomes 1.
        let single = try route([[2, 1], [2, 1], [2, 1]], k: 2, capacityFactor: 0.5, minCapacity: 2)
        // capacity 2: t0 e0 s0, t1 e0 s1, t2 e0 drop; second round t0 e1 s0, t1 e1 s1, t2 e1 drop
        #expect(single.gate[0] + single.gate[3] > 0.999)
        #expect(single.gate[2] == 0 && single.gate[5] == 0)
    }

    @Test("zero tokens on a rank: an empty plan")
    func zeroTokens() throws {
        let layer = LayerConfiguration(experts: 4, topK: 2, capacityFactor: 1, minCapacity: 3)
        let plan = try [Float]().withUnsafeBufferPointer { try Router.route(logits: $0, tokenCount: 0, layer: layer) }
        #expect(plan.choice.isEmpty && plan.expert.isEmpty)
        #expect(plan.capacity == 3)
        #expect(plan.keptPerExpert == [0, 0, 0, 0])
    }

    @Test("every token choosing one expert fills exactly its capacity")
    func everyTokenOneExpert() throws {
        let logits = Array(repeating: [Float](arrayLiteral: 0, 0, 7, 0), count: 32)
        let plan = try route(logits, k: 1, capacityFactor: 1)  // capacity = 8
        #expect(plan.keptPerExpert == [0, 0, 8, 0])
        #expect(plan.droppedPerExpert == [0, 0, 24, 0])
        #expect(plan.slot.prefix(8) == ArraySlice(0..<8))
    }

    @Test("a NaN or infinite logit is an error naming token and expert")
    func nonFinite() {
        #expect(throws: RoutingError.nonFiniteLogit(token: 1, expert: 0, value: .infinity)) {
            try route([[0, 1], [.infinity, 0]], k: 1)
        }
        #expect(throws: RoutingError.self) { try route([[0, .nan]], k: 1) }
    }

    @Test("task-level routing sends each token to its task's experts with equal weights")
    func taskRouting() throws {
        let layer = LayerConfiguration(experts: 4, topK: 2, capacityFactor: 100)
        let plan = try Router.route(taskIds: [1, 0, 1], taskExperts: [0: [0, 1], 1: [3, 2]], layer: layer)
        #expect(row(plan.expert, 0, tokens: 3) == [3, 0, 3])
        #expect(row(plan.expert, 1, tokens: 3) == [2, 1, 2])
        #expect(plan.gate.allSatisfy { $0 == 0.5 })
        #expect(throws: RoutingError.unknownTask(token: 0, task: 5)) {
            try Router.route(taskIds: [5], taskExperts: [0: [0, 1]], layer: layer)
        }
    }

    @Test("slot routes list each expert's occupants in slot order")
    func slotRoutes() throws {
        let plan = try route([[9, 5, 0], [5, 9, 0], [9, 5, 0]], k: 2)
        // Route index = r·T + t.
        #expect(plan.slotRoutes() == [[0, 2], [1, 3], []])
    }
}
