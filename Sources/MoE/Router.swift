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
    /// `capacity` is this step's capacity plan for the layer; `rule` the score function and
    /// selection (softmax and top-k are the only ones today).
    package static func route(
        logits: UnsafeBufferPointer<Float>, tokenCount: Int, layer: LayerConfiguration,
        capacity plan: LayerCapacity = .configured, rule: GateRule = GateRule()
    ) throws(RoutingError) -> RoutingPlan {
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
            // Top-k by insertion: `best` holds the k best so far, best first; a later expert
            // enters only if strictly greater, so among equal logits the lower index wins.
            var filled = 0
            for expert in 0..<experts {
                let value = row[expert]
                var position = filled
                while position > 0 && row[best[position - 1]] < value { position -= 1 }
                guard position < k else { continue }
                var move = min(filled, k - 1)
                while move > position { best[move] = best[move - 1]; move -= 1 }
                best[position] = expert
                filled = min(filled + 1, k)
            }
            for r in 0..<k {
                choice[r * tokenCount + token] = best[r]
                probability[r * tokenCount + token] = Float(Double(expf(row[best[r]] - maximum)) / sum)
            }
        }
        return applyCapacity(choice: choice, probability: probability, tokenCount: tokenCount, layer: layer, plan: plan)
    }

    /// Routes tokens by task id: token t goes to `taskExperts[taskIds[t]]` (in that choice
    /// order) with probability 1/k per route, no gate. Capacity and drops apply as usual.
    package static func route(
        taskIds: [Int], taskExperts: [Int: [Int]], layer: LayerConfiguration, capacity plan: LayerCapacity = .configured
    ) throws(RoutingError) -> RoutingPlan {
        let tokenCount = taskIds.count
        let k = layer.topK
        var choice = [Int](repeating: 0, count: k * tokenCount)
        for (token, task) in taskIds.enumerated() {
            guard let experts = taskExperts[task] else { throw .unknownTask(token: token, task: task) }
            for r in 0..<k { choice[r * tokenCount + token] = experts[r] }
        }
        let probability = [Float](repeating: 1 / Float(k), count: k * tokenCount)
        return applyCapacity(choice: choice, probability: probability, tokenCount: tokenCount, layer: layer, plan: plan)
    }

    /// Row-wise softmax of `[tokenCount, E]` logits, as `route` computes it (for reports).
    package static func softmax(_ logits: [Float], experts: Int) -> [Float] {
        var result = logits
        for start in stride(from: 0, to: logits.count, by: experts) {
            let row = logits[start..<start + experts]
            let maximum = row.max() ?? 0
            let sum = row.reduce(0.0) { $0 + Double(expf($1 - maximum)) }
            for index in start..<start + experts { result[index] = Float(Double(expf(logits[index] - maximum)) / sum) }
        }
        return result
    }
}
