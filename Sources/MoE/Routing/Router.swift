import Foundation

/// The routing rules of one MoE layer on one rank, from logits (or task ids) to a plan: scores
/// and selection by the `GateRule`, then capacity and drops (`Router+Capacity.swift`). `Gate`
/// is the one entry point the layers use; rules are in `docs/ROUTING.md`, and tests check them
/// one by one.
package enum Router {
    /// Routes `tokenCount` tokens from their logits (row-major `[tokenCount, E]`).
    ///
    /// Top-k is taken on the logits (softmax is monotonic; comparing logits avoids ties that
    /// rounding in exp would create), ties broken by the lower expert index. Probabilities are
    /// the softmax over all E experts, computed with the max subtracted and the sum in Double.
    /// `capacity` is this step's capacity plan for the layer; `rule` the score function,
    /// selection, normalisation and scale; `selectionBias` (`[E]` or empty) is added to the scores
    /// for choosing only. Rules other than the classic one go through `routeByRule`.
    package static func route(
        logits: UnsafeBufferPointer<Float>, tokenCount: Int, layer: LayerConfiguration,
        capacity plan: LayerCapacity = .configured, rule: GateRule = GateRule(), selectionBias: [Float] = [], sequenceLength: Int? = nil
    ) throws(RoutingError) -> RoutingPlan {
        guard rule.isClassic, selectionBias.isEmpty else {
            return try routeByRule(logits: logits, tokenCount: tokenCount, layer: layer, capacity: plan, rule: rule,
                                   selectionBias: selectionBias, sequenceLength: sequenceLength)
        }
        let experts = layer.experts
        let k = layer.topK
        precondition(logits.count >= tokenCount * experts)
        var choice = [Int](repeating: 0, count: k * tokenCount)
        var probability = [Float](repeating: 0, count: k * tokenCount)
        var best = [Int](repeating: 0, count: k)
        for token in 0..<tokenCount {
            let row = logits.baseAddress! + token * experts
            var maximum = -Float.infinity
            for expert in 0..<experts {
                let value = row[expert]
                guard value.isFinite else { throw .nonFiniteLogit(token: token, expert: expert, value: value) }
                maximum = max(maximum, value)
            }
            var sum = 0.0
            for expert in 0..<experts { sum += Double(expf(row[expert] - maximum)) }
            var filled = 0
            for expert in 0..<experts { insertTopK(expert, keys: row, best: &best, filled: &filled, k: k) }
            for r in 0..<k {
                choice[r * tokenCount + token] = best[r]
                probability[r * tokenCount + token] = Float(Double(expf(row[best[r]] - maximum)) / sum)
            }
        }
        return applyCapacity(choice: choice, probability: probability, tokenCount: tokenCount, layer: layer, plan: plan,
                             sequenceLength: sequenceLength)
    }

    /// Top-k by insertion: `best[0..<filled]` holds the best experts so far, best first; a later
    /// expert enters only if its key is strictly greater, so among equal keys the lower index wins.
    @inline(__always)
    static func insertTopK(_ expert: Int, keys: UnsafePointer<Float>, best: inout [Int], filled: inout Int, k: Int) {
        let value = keys[expert]
        var position = filled
        while position > 0 && keys[best[position - 1]] < value { position -= 1 }
        guard position < k else { return }
        var move = min(filled, k - 1)
        while move > position { best[move] = best[move - 1]; move -= 1 }
        best[position] = expert
        filled = min(filled + 1, k)
    }

    /// The general rule (`docs/ROUTING.md` §1–3), per token:
    /// 1. scores s_e: softmax over all E (max subtracted, sum in Double), sigmoid, or — for
    ///    `softmax-top-k` — none yet;
    /// 2. selection keys: the logits themselves for softmax and softmax-top-k without a selection
    ///    bias (monotonic in the score, and free of the ties rounding in exp would make), else
    ///    s_e + selectionBias_e;
    /// 3. group-limited selection masks the experts outside the best groups; then the k largest
    ///    keys, descending, ties to the lower expert;
    /// 4. the chosen experts' probabilities: their scores (softmax-top-k: the softmax of the k
    ///    chosen logits); normalisation and the scaling factor are applied with capacity.
    static func routeByRule(
        logits: UnsafeBufferPointer<Float>, tokenCount: Int, layer: LayerConfiguration,
        capacity plan: LayerCapacity, rule: GateRule, selectionBias: [Float], sequenceLength: Int?
    ) throws(RoutingError) -> RoutingPlan {
        let experts = layer.experts
        let k = layer.topK
        precondition(logits.count >= tokenCount * experts)
        precondition(selectionBias.isEmpty || selectionBias.count == experts)
        var choice = [Int](repeating: 0, count: k * tokenCount)
        var probability = [Float](repeating: 0, count: k * tokenCount)
        var scores = [Float](repeating: 0, count: experts)
        var keys = [Float](repeating: 0, count: experts)
        var allowed = [Bool](repeating: true, count: experts)
        var best = [Int](repeating: 0, count: k)
        let keysAreLogits = selectionBias.isEmpty && rule.score != .sigmoid
        for token in 0..<tokenCount {
            let row = logits.baseAddress! + token * experts
            for expert in 0..<experts where !row[expert].isFinite {
                throw .nonFiniteLogit(token: token, expert: expert, value: row[expert])
            }
            switch rule.score {
            case .softmax:
                var maximum = -Float.infinity
                for expert in 0..<experts { maximum = max(maximum, row[expert]) }
                var sum = 0.0
                for expert in 0..<experts { sum += Double(expf(row[expert] - maximum)) }
                for expert in 0..<experts { scores[expert] = Float(Double(expf(row[expert] - maximum)) / sum) }
            case .sigmoid:
                for expert in 0..<experts { scores[expert] = Float(1 / (1 + exp(-Double(row[expert])))) }
            case .softmaxOfChosen:
                break
            }
            for expert in 0..<experts {
                keys[expert] = keysAreLogits ? row[expert] : scores[expert] + (selectionBias.isEmpty ? 0 : selectionBias[expert])
            }
            if case let .groupLimited(groups, topGroups, groupScore) = rule.selection {
                let size = experts / groups
                let groupScores = (0..<groups).map { group -> Float in
                    let members = keys[group * size..<(group + 1) * size]
                    switch groupScore {
                    case .max: return members.max()!
                    case .topTwoSum:
                        let sorted = members.sorted(by: >)
                        return sorted[0] + (sorted.count > 1 ? sorted[1] : 0)
                    }
                }
                let kept = Set((0..<groups).sorted { groupScores[$0] != groupScores[$1] ? groupScores[$0] > groupScores[$1] : $0 < $1 }
                    .prefix(topGroups))
                for expert in 0..<experts { allowed[expert] = kept.contains(expert / size) }
            }
            var filled = 0
            keys.withUnsafeBufferPointer { keys in
                for expert in 0..<experts where allowed[expert] {
                    insertTopK(expert, keys: keys.baseAddress!, best: &best, filled: &filled, k: k)
                }
            }
            precondition(filled == k, "the layer's validation guarantees k experts in the allowed groups")
            if rule.score == .softmaxOfChosen {
                let maximum = (0..<k).map { row[best[$0]] }.max()!
                let sum = (0..<k).reduce(0.0) { $0 + Double(expf(row[best[$1]] - maximum)) }
                for r in 0..<k { scores[best[r]] = Float(Double(expf(row[best[r]] - maximum)) / sum) }
            }
            for r in 0..<k {
                choice[r * tokenCount + token] = best[r]
                probability[r * tokenCount + token] = scores[best[r]]
            }
        }
        return applyCapacity(choice: choice, probability: probability, tokenCount: tokenCount, layer: layer, plan: plan, rule: rule,
                             sequenceLength: sequenceLength)
    }

    /// Routes tokens by recorded choices (`RoutingTrace.choices`): `choice` and `probability` in
    /// the plan's `[r * T + t]` layout; capacity, drops and the rule's normalisation apply.
    package static func route(
        recordedChoice choice: [Int], probability: [Float], tokenCount: Int, layer: LayerConfiguration,
        capacity plan: LayerCapacity = .configured, rule: GateRule = GateRule(), sequenceLength: Int? = nil
    ) -> RoutingPlan {
        applyCapacity(choice: choice, probability: probability, tokenCount: tokenCount, layer: layer, plan: plan, rule: rule,
                      sequenceLength: sequenceLength)
    }

    /// Routes tokens by task id: token t goes to `taskExperts[taskIds[t]]` (in that choice
    /// order) with probability 1/k per route, no gate. Capacity and drops apply as usual.
    package static func route(
        taskIds: [Int], taskExperts: [Int: [Int]], layer: LayerConfiguration, capacity plan: LayerCapacity = .configured,
        sequenceLength: Int? = nil
    ) throws(RoutingError) -> RoutingPlan {
        let tokenCount = taskIds.count
        let k = layer.topK
        var choice = [Int](repeating: 0, count: k * tokenCount)
        for (token, task) in taskIds.enumerated() {
            guard let experts = taskExperts[task] else { throw .unknownTask(token: token, task: task) }
            for r in 0..<k { choice[r * tokenCount + token] = experts[r] }
        }
        let probability = [Float](repeating: 1 / Float(k), count: k * tokenCount)
        return applyCapacity(choice: choice, probability: probability, tokenCount: tokenCount, layer: layer, plan: plan,
                             sequenceLength: sequenceLength)
    }
}
