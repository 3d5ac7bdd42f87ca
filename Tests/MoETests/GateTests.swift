import Testing
@testable import MoE
import RandomStreams

@Suite("Gate: normalised rows in, routing plan out")
struct GateTests {
    let dModel = 6
    let layer = LayerConfiguration(experts: 5, topK: 2, capacityFactor: 1, minCapacity: 0)

    func seeded(_ count: Int, seed: UInt64) -> [Float] {
        var random = SeededGenerator(seed: seed, stream: 4)
        return (0..<count).map { _ in random.nextSignedUnitFloat() }
    }

    /// logits = rows · W, one dot product at a time (the plain form of the gate GEMM).
    func plainLogits(_ rows: [Float], _ weights: [Float], tokens: Int) -> [Float] {
        var logits = [Float](repeating: 0, count: tokens * layer.experts)
        for token in 0..<tokens {
            for expert in 0..<layer.experts {
                var sum: Float = 0
                for feature in 0..<dModel { sum += rows[token * dModel + feature] * weights[feature * layer.experts + expert] }
                logits[token * layer.experts + expert] = sum
            }
        }
        return logits
    }

    @Test("a learned gate routes its GEMM's logits by the router's rules")
    func learned() throws {
        let tokens = 40
        let weights = seeded(dModel * layer.experts, seed: 1)
        let rows = seeded(tokens * dModel, seed: 2)
        let gate = Gate(layerIndex: 0, layer: layer, dModel: dModel, source: .learned(weights: weights))
        let plan = try gate.route(normalized: rows)
        let logits = plainLogits(rows, weights, tokens: tokens)
        let expected = try logits.withUnsafeBufferPointer { try Router.route(logits: $0, tokenCount: tokens, layer: layer) }
        #expect(plan.choice == expected.choice && plan.expert == expected.expert && plan.slot == expected.slot)
        #expect(zip(plan.gate, expected.gate).allSatisfy { abs($0 - $1) <= 1e-5 })
    }

    @Test("the drifting workload is a gate input: its bias for (layer, step) is added to every token's logits")
    func drift() throws {
        let tokens = 64
        let weights = seeded(dModel * layer.experts, seed: 5)
        let rows = seeded(tokens * dModel, seed: 6)
        let drift = RouterDrift(amplitude: 2, period: 8, seed: 3)
        let plain = Gate(layerIndex: 3, layer: layer, dModel: dModel, source: .learned(weights: weights))
        let drifting = Gate(layerIndex: 3, layer: layer, dModel: dModel, source: .learned(weights: weights), drift: drift)
        var logits: [Float] = []
        let atStep5 = try rows.withUnsafeBufferPointer { buffer in
            try drifting.route(normalized: buffer, tokenCount: tokens, taskIds: [], step: 5, capacity: .configured, logits: &logits)
        }
        let bias = drift.bias(layer: 3, experts: layer.experts, step: 5)
        let biased = try rows.withUnsafeBufferPointer { buffer -> RoutingPlan in
            _ = try plain.route(normalized: buffer, tokenCount: tokens, taskIds: [], step: 5, capacity: .configured, logits: &logits)
            for index in 0..<tokens * layer.experts { logits[index] += bias[index % layer.experts] }
            return try logits.withUnsafeBufferPointer { try Router.route(logits: UnsafeBufferPointer(rebasing: $0[0..<tokens * layer.experts]),
                                                                         tokenCount: tokens, layer: layer) }
        }
        #expect(atStep5 == biased, "bitwise the router on biased logits")
        #expect(try drifting.route(normalized: rows, step: 9) != atStep5, "the bias moves with the step")
        #expect(try plain.route(normalized: rows, step: 5) != atStep5, "and the bias changes the routing here")
    }

    @Test("a task gate routes by task id, with no GEMM and no normalised rows needed")
    func tasks() throws {
        let gate = Gate(layerIndex: 0, layer: layer, dModel: dModel, source: .tasks([0: [1, 4], 7: [3, 2]]))
        let plan = try gate.route(normalized: [Float](repeating: .nan, count: 3 * dModel), taskIds: [7, 0, 7])
        let expected = try Router.route(taskIds: [7, 0, 7], taskExperts: [0: [1, 4], 7: [3, 2]], layer: layer)
        #expect(plan == expected)
        #expect(throws: RoutingError.unknownTask(token: 0, task: 5)) { try gate.route(normalized: [Float](repeating: 0, count: dModel), taskIds: [5]) }
    }

    @Test("a non-finite logit is an error naming the token and expert")
    func nonFinite() {
        let weights = [Float](repeating: 1, count: dModel * layer.experts)
        var rows = [Float](repeating: 0, count: 2 * dModel)
        rows[dModel + 2] = .infinity
        let gate = Gate(layerIndex: 0, layer: layer, dModel: dModel, source: .learned(weights: weights))
        #expect(throws: RoutingError.nonFiniteLogit(token: 1, expert: 0, value: .infinity)) { try gate.route(normalized: rows) }
    }
}
