import Foundation

/// The dense half of a PR-MoE residual layer, held by every rank: an FFN of the experts' form
/// and the mixing coefficient's projection.
package struct ResidualWeights: Equatable, Sendable {
    /// The dense MLP, same shapes and activation as an expert.
    package var dense: ExpertWeights
    /// `W_c`, `[dModel, 2]` row-major: column 0 scores the dense MLP, column 1 the expert.
    package var coefficientWeight: [Float]
    /// `b_c`, `[2]`.
    package var coefficientBias: [Float]

    package init(dense: ExpertWeights, coefficientWeight: [Float], coefficientBias: [Float]) {
        self.dense = dense
        self.coefficientWeight = coefficientWeight
        self.coefficientBias = coefficientBias
    }
}

/// PR-MoE's residual mixing (DeepSpeed-MoE, Rajbhandari et al. 2022, "Residual-MoE"): a token's
/// layer output is
///
///     a_mlp · MLP(x) + a_expert · p · Expert_e(x),    [a_mlp, a_expert] = softmax(x · W_c + b_c)
///
/// where x is the token's normed hidden state, e its top-1 expert and p that route's combine
/// weight (the gate probability; task routing gives 1). A dropped route contributes nothing, so
/// the token keeps only the dense share `a_mlp · MLP(x)`. As in DeepSpeed, the expert branch
/// carries its gate probability before mixing.
package enum ResidualMixture {
    /// `(a_mlp, a_expert)` = softmax of two logits, max subtracted, the sum taken in Double
    /// (as `Router` does for the gate).
    package static func softmaxPair(_ mlpLogit: Float, _ expertLogit: Float) -> (mlp: Float, expert: Float) {
        let maximum = max(mlpLogit, expertLogit)
        let mlp = Double(expf(mlpLogit - maximum))
        let expert = Double(expf(expertLogit - maximum))
        let sum = mlp + expert
        return (Float(mlp / sum), Float(expert / sum))
    }

    /// The coefficients of `rows` tokens: `[rows, 2]` row-major, `(a_mlp, a_expert)` per token,
    /// from their normed states `normed` (`[rows, dModel]`).
    package static func coefficients(normed: UnsafePointer<Float>, rows: Int, dModel: Int, weights: ResidualWeights) -> [Float] {
        var logits = [Float](repeating: 0, count: rows * 2)
        guard rows > 0 else { return logits }
        weights.coefficientWeight.withUnsafeBufferPointer { w in
            logits.withUnsafeMutableBufferPointer { out in
                BLAS.multiply(rows: rows, columns: 2, inner: dModel, normed, w.baseAddress!, into: out.baseAddress!)
            }
        }
        for row in 0..<rows {
            let pair = softmaxPair(logits[2 * row] + weights.coefficientBias[0], logits[2 * row + 1] + weights.coefficientBias[1])
            logits[2 * row] = pair.mlp
            logits[2 * row + 1] = pair.expert
        }
        return logits
    }

    /// Adds one token's residual-layer output to `output` (`count` floats): `output[i] +=
    /// m[i]` with `m[i] = (a_expert · p) · expertRow[i] + a_mlp · denseRow[i]`, built in that
    /// order from 0. `expertRow` is nil for a dropped route. This is the plain-loop form the
    /// reference uses; the distributed layer performs the same operations eight lanes at a time.
    package static func add(
        expertRow: UnsafePointer<Float>?, combineWeight: Float, denseRow: UnsafePointer<Float>,
        coefficients: (mlp: Float, expert: Float), count: Int, to output: UnsafeMutablePointer<Float>
    ) {
        let expertScale = coefficients.expert * combineWeight
        for index in 0..<count {
            var mixed: Float = 0
            if let expertRow { mixed += expertScale * expertRow[index] }
            mixed += coefficients.mlp * denseRow[index]
            output[index] += mixed
        }
    }
}
