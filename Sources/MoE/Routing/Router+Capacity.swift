import Foundation

extension Router {
    /// Slots each expert offers one capacity group of `tokenCount` tokens per step (the group is
    /// a source rank's whole batch, or one sequence of the batch's `sequenceLength`): the layer's fixed
    /// `expertCapacity` if it has one, else `max(minCapacity, ceil(k · T · C / E))`, computed in
    /// Double exactly as written; nil (unlimited) when the layer is dropless.
    package static func capacity(tokenCount: Int, layer: LayerConfiguration) -> Int? {
        guard !layer.isDropless else { return nil }
        if let fixed = layer.expertCapacity { return fixed }
        let slots = (Double(layer.topK) * Double(tokenCount) * layer.capacityFactor / Double(layer.experts)).rounded(.up)
        return max(layer.minCapacity, Int(slots))
    }

    /// Slots each expert offers one source rank of `tokenCount` tokens under `plan` (nil when
    /// dropless): the capacities of one group (`groupCapacities`) times the rank's groups (1,
    /// or its sequences of `sequenceLength` tokens, `TokenBatch.sequenceLength`).
    package static func capacities(tokenCount: Int, layer: LayerConfiguration, plan: LayerCapacity, sequenceLength: Int? = nil) -> [Int]? {
        guard let sequenceLength else { return groupCapacities(tokenCount: tokenCount, layer: layer, plan: plan) }
        return groupCapacities(tokenCount: sequenceLength, layer: layer, plan: plan)?.map { $0 * (tokenCount / sequenceLength) }
    }

    /// Slots each expert offers one capacity group of `tokenCount` tokens under `plan` (nil when dropless):
    /// - `.configured`: `capacity(tokenCount:layer:)` for every expert;
    /// - `.factor(C)`: the same formula with capacity factor C;
    /// - `.shares(s)`: the configured budget `E · capacity(tokenCount:layer:)` divided in proportion
    ///   to s (Σ s = E): expert e gets ⌊budget·s_e/E⌋, and the slots left over go one each to the
    ///   experts with the largest fractional parts (ties to the lower expert). The budget is
    ///   exactly the configured one.
    static func groupCapacities(tokenCount: Int, layer: LayerConfiguration, plan: LayerCapacity) -> [Int]? {
        switch plan {
        case .configured:
            return capacity(tokenCount: tokenCount, layer: layer).map { [Int](repeating: $0, count: layer.experts) }
        case let .factor(factor):
            var adjusted = layer
            adjusted.capacityFactor = factor
            guard factor > 0 else { return capacity(tokenCount: tokenCount, layer: layer).map { [Int](repeating: $0, count: layer.experts) } }
            return capacity(tokenCount: tokenCount, layer: adjusted).map { [Int](repeating: $0, count: layer.experts) }
        case let .shares(shares):
            precondition(shares.count == layer.experts)
            guard let uniform = capacity(tokenCount: tokenCount, layer: layer) else { return nil }
            let budget = uniform * layer.experts
            let total = shares.reduce(0, +)
            let exact = shares.map { Double(budget) * $0 / total }
            var slots = exact.map { Int($0.rounded(.down)) }
            let leftover = budget - slots.reduce(0, +)
            let order = (0..<layer.experts).sorted {
                let a = exact[$0] - Double(slots[$0]), b = exact[$1] - Double(slots[$1])
                return a != b ? a > b : $0 < $1
            }
            for expert in order.prefix(leftover) { slots[expert] += 1 }
            return slots
        }
    }

    /// The order in which tokens claim slots within each choice round: token order for
    /// in-order and dropless routing; for batch-prioritized routing, descending priority (max or
    /// sum of the token's top-k probabilities), ties by lower token index. `tokens` is the
    /// capacity group ordered (default: all).
    static func claimOrder(probability: [Float], tokenCount: Int, layer: LayerConfiguration, tokens: Range<Int>? = nil) -> [Int] {
        let group = tokens ?? 0..<tokenCount
        guard layer.dropPolicy == .batchPrioritized else { return Array(group) }
        // Indexed from the group's first token: a rank with many sequences sorts each in its own space.
        let priority = group.map { token -> Float in
            let probabilities = (0..<layer.topK).map { probability[$0 * tokenCount + token] }
            return layer.priority == .max ? probabilities.max()! : probabilities.reduce(0, +)
        }
        let first = group.lowerBound
        return group.sorted { a, b in
            let (pa, pb) = (priority[a - first], priority[b - first])
            return pa != pb ? pa > pb : a < b
        }
    }

    /// Claims slots choice by choice (every token's first choice before any second choice), in
    /// `claimOrder` within a round, capacity group by capacity group (the whole batch, or each
    /// sequence of `sequenceLength` tokens with its own capacity); a route whose expert is full in
    /// its group is dropped. A kept route's slot counts the expert's kept routes over the whole
    /// batch, so slots stay 0..<kept without gaps. Combine weights by
    /// `rule.normalization` — `survivors`: the probability itself for k = 1, for k ≥ 2 the
    /// probabilities renormalised over the token's surviving routes (a fully dropped token gets 0
    /// everywhere); `chosen`: divided by the sum of the k chosen probabilities; `none`: the
    /// probability — then times `rule.scalingFactor`. A dropped route's weight is 0.
    static func applyCapacity(
        choice: [Int], probability: [Float], tokenCount: Int, layer: LayerConfiguration, plan: LayerCapacity = .configured,
        rule: GateRule = GateRule(), sequenceLength: Int? = nil
    ) -> RoutingPlan {
        let k = layer.topK
        let groupLength = sequenceLength ?? tokenCount
        precondition(sequenceLength == nil || tokenCount % groupLength == 0, "whole sequences only")
        let perGroup = groupCapacities(tokenCount: groupLength, layer: layer, plan: plan)
        let capacities = perGroup.map { capacity in capacity.map { $0 * (sequenceLength == nil ? 1 : tokenCount / groupLength) } }
        var expert = [Int](repeating: -1, count: k * tokenCount)
        var slot = [Int](repeating: -1, count: k * tokenCount)
        var kept = [Int](repeating: 0, count: layer.experts)
        for start in stride(from: 0, to: tokenCount, by: max(groupLength, 1)) {
            var used = [Int](repeating: 0, count: layer.experts)
            let order = claimOrder(probability: probability, tokenCount: tokenCount, layer: layer,
                                   tokens: start..<min(start + groupLength, tokenCount))
            for r in 0..<k {
                for token in order {
                    let index = r * tokenCount + token
                    let chosen = choice[index]
                    if let perGroup, used[chosen] >= perGroup[chosen] { continue }
                    expert[index] = chosen
                    slot[index] = kept[chosen]
                    kept[chosen] += 1
                    used[chosen] += 1
                }
            }
        }
        var gate = [Float](repeating: 0, count: k * tokenCount)
        if rule.normalization != .survivors {
            for token in 0..<tokenCount {
                var chosen: Float = 0
                for r in 0..<k { chosen += probability[r * tokenCount + token] }
                for r in 0..<k where expert[r * tokenCount + token] >= 0 {
                    let p = probability[r * tokenCount + token]
                    let weight = rule.normalization == .chosen ? (chosen > 0 ? p / chosen : 0) : p
                    gate[r * tokenCount + token] = weight * rule.scalingFactor
                }
            }
            return RoutingPlan(tokenCount: tokenCount, topK: k, expertCount: layer.experts, capacities: capacities,
                               choice: choice, expert: expert, slot: slot, gate: gate, probability: probability)
        }
        for token in 0..<tokenCount {
            if k == 1 {
                if expert[token] >= 0 { gate[token] = probability[token] }
                continue
            }
            var surviving: Float = 0
            for r in 0..<k where expert[r * tokenCount + token] >= 0 { surviving += probability[r * tokenCount + token] }
            guard surviving > 0 else { continue }
            for r in 0..<k where expert[r * tokenCount + token] >= 0 {
                gate[r * tokenCount + token] = probability[r * tokenCount + token] / surviving * rule.scalingFactor
            }
        }
        if rule.scalingFactor != 1, k == 1 { for index in gate.indices { gate[index] *= rule.scalingFactor } }
        return RoutingPlan(tokenCount: tokenCount, topK: k, expertCount: layer.experts, capacities: capacities,
                           choice: choice, expert: expert, slot: slot, gate: gate, probability: probability)
    }
}
