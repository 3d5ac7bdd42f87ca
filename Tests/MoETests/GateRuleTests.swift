import Foundation
import Testing
@testable import MoE

/// Routes one batch of logits (rows of E) by `rule`, dropless unless `layer` says otherwise.
private func plan(_ logits: [[Float]], k: Int, rule: GateRule, selectionBias: [Float] = [], sequenceLength: Int? = nil,
                  layer configure: (inout LayerConfiguration) -> Void = { _ in }) throws -> RoutingPlan {
    var layer = LayerConfiguration(experts: logits[0].count, topK: k, capacityFactor: 0, dropPolicy: .none, gateRule: rule)
    configure(&layer)
    let flat = logits.flatMap { $0 }
    return try flat.withUnsafeBufferPointer {
        try Router.route(logits: $0, tokenCount: logits.count, layer: layer, rule: rule, selectionBias: selectionBias, sequenceLength: sequenceLength)
    }
}

/// Token t's (expert, weight) pairs in choice order.
private func routes(_ plan: RoutingPlan, token: Int) -> [(Int, Float)] {
    (0..<plan.topK).map { (plan.expert[$0 * plan.tokenCount + token], plan.gate[$0 * plan.tokenCount + token]) }
}

private func sigmoid(_ x: Float) -> Float { 1 / (1 + exp(-x)) }

@Suite("Gate rules of imported architectures (docs/ROUTING.md §1–3)")
struct GateRuleTests {
    @Test("softmax, top-k renormalised over the chosen (Mixtral) or not (Qwen2-MoE, OLMoE), then scaled")
    func softmaxNormalisations() throws {
        let logits: [Float] = [0, 1, 2, 0.5]
        let sum = logits.reduce(0.0) { $0 + exp(Double($1)) }
        let p = logits.map { Float(exp(Double($0)) / sum) }
        let chosen = try plan([logits], k: 2, rule: GateRule(normalization: .chosen))
        #expect(routes(chosen, token: 0).map(\.0) == [2, 1])
        #expect(abs(routes(chosen, token: 0)[0].1 - p[2] / (p[2] + p[1])) < 1e-6)
        let raw = try plan([logits], k: 2, rule: GateRule(normalization: .none, scalingFactor: 2))
        #expect(abs(routes(raw, token: 0)[0].1 - 2 * p[2]) < 1e-6 && abs(routes(raw, token: 0)[1].1 - 2 * p[1]) < 1e-6)
        // k = 1 renormalised over the chosen is weight 1; the classic rule keeps the probability.
        #expect(try routes(plan([logits], k: 1, rule: GateRule(normalization: .chosen)), token: 0)[0].1 == 1)
    }

    @Test("sigmoid scores; the selection bias chooses but does not weigh (DeepSeek-V3)")
    func sigmoidWithSelectionBias() throws {
        let logits: [Float] = [1.0, 0.9, -2, 0.2]
        // Without bias experts 0 and 1 win; a bias of +1 on expert 3 moves it into the top 2.
        let plain = try plan([logits], k: 2, rule: GateRule(score: .sigmoid, normalization: .none))
        #expect(routes(plain, token: 0).map(\.0) == [0, 1])
        let biased = try plan([logits], k: 2, rule: GateRule(score: .sigmoid, normalization: .none), selectionBias: [0, 0, 0, 1])
        #expect(routes(biased, token: 0).map(\.0) == [3, 0])
        #expect(abs(routes(biased, token: 0)[0].1 - sigmoid(0.2)) < 1e-6, "the weight is the unbiased score")
        let normalised = try plan([logits], k: 2, rule: GateRule(score: .sigmoid, normalization: .chosen, scalingFactor: 2.5),
                                  selectionBias: [0, 0, 0, 1])
        let total = sigmoid(0.2) + sigmoid(1)
        #expect(abs(routes(normalised, token: 0)[0].1 - 2.5 * sigmoid(0.2) / total) < 1e-6)
    }

    @Test("group-limited top-k: groups by their max (V2) or the sum of their top two (V3)")
    func groupLimited() throws {
        // Groups of two: {0,1}, {2,3}, {4,5}. Max per group: 3, 2.5, 2.9 → best group by max is {0,1}, then {4,5}.
        // Top-two sums: 3 + (−5) = −2, 2.5 + 2.4 = 4.9, 2.9 + 0 = 2.9 → {2,3} then {4,5}.
        let logits: [Float] = [3, -5, 2.5, 2.4, 2.9, 0]
        let byMax = try plan([logits], k: 2, rule: GateRule(selection: .groupLimited(groups: 3, topGroups: 1, score: .max)))
        #expect(routes(byMax, token: 0).map(\.0) == [0, 1], "only group {0,1} is open, so its weaker expert is chosen too")
        let byMaxTwoGroups = try plan([logits], k: 2, rule: GateRule(selection: .groupLimited(groups: 3, topGroups: 2, score: .max)))
        #expect(routes(byMaxTwoGroups, token: 0).map(\.0) == [0, 4])
        // top2-sum needs the score space (sigmoid + bias) to be meaningful; with a zero bias the keys are the sigmoids.
        let bySum = try plan([logits], k: 2, rule: GateRule(score: .sigmoid, selection: .groupLimited(groups: 3, topGroups: 1, score: .topTwoSum),
                                                            normalization: .none), selectionBias: [0, 0, 0, 0, 0, 0])
        #expect(routes(bySum, token: 0).map(\.0) == [2, 3])
    }

    @Test("softmax over the k chosen logits (GPT-OSS) equals top-k renormalised softmax")
    func softmaxOfChosen() throws {
        let logits: [[Float]] = [[0.3, -1, 2, 1.1, 0], [5, 4, -3, 4.5, 0]]
        let ofChosen = try plan(logits, k: 2, rule: GateRule(score: .softmaxOfChosen, normalization: .none))
        let renormalised = try plan(logits, k: 2, rule: GateRule(normalization: .chosen))
        #expect(ofChosen.expert == renormalised.expert)
        #expect(zip(ofChosen.gate, renormalised.gate).allSatisfy { abs($0 - $1) < 1e-6 })
    }

    @Test("capacity per sequence: each sequence has its own slots, in token order; slots stay gapless per rank")
    func capacityPerSequence() throws {
        // Six tokens all choosing expert 1, sequences of three, two slots per sequence: tokens 2 and 5 drop.
        let logits = [[Float]](repeating: [0, 1], count: 6)
        let routed = try plan(logits, k: 1, rule: GateRule(normalization: .none), sequenceLength: 3) { layer in
            layer.dropPolicy = .inOrder
            layer.expertCapacity = 2
        }
        #expect(routed.expert == [1, 1, -1, 1, 1, -1])
        #expect(routed.slot == [0, 1, -1, 2, 3, -1])
        #expect(routed.capacities == [4, 4])
        // Without sequences the batch has two slots for everyone.
        let batch = try plan(logits, k: 1, rule: GateRule(normalization: .none)) { layer in
            layer.dropPolicy = .inOrder
            layer.expertCapacity = 2
        }
        #expect(batch.expert == [1, 1, -1, -1, -1, -1])
    }
}
