import Foundation
import Testing
@testable import MoE

@Suite("PR-MoE residual mixing")
struct ResidualMixtureTests {
    @Test("the coefficient is a softmax over two logits")
    func softmaxPair() {
        let equal = ResidualMixture.softmaxPair(5, 5)
        #expect(equal.mlp == 0.5 && equal.expert == 0.5)
        let skewed = ResidualMixture.softmaxPair(0, Float(log(3.0)))
        #expect(abs(skewed.mlp - 0.25) < 1e-6 && abs(skewed.expert - 0.75) < 1e-6)
        // Large logits do not overflow (the max is subtracted).
        let large = ResidualMixture.softmaxPair(1000, 0)
        #expect(large.mlp == 1 && large.expert == 0)
    }

    @Test("coefficients: x·W_c + b_c, then softmax, per token")
    func coefficients() {
        // W_c = identity on d = 2 (row-major [2, 2]); b_c = (0, ln 3).
        let weights = ResidualWeights(dense: ExpertWeights(w1: [], b1: [], w2: [], b2: [], w3: []),
                                      coefficientWeight: [1, 0, 0, 1], coefficientBias: [0, Float(log(3.0))])
        let normed: [Float] = [2, 2,    // logits (2, 2 + ln 3) -> (0.25, 0.75)
                               1, -1]   // logits (1, -1 + ln 3) -> e^1 / (e^1 + 3/e)
        let result = normed.withUnsafeBufferPointer {
            ResidualMixture.coefficients(normed: $0.baseAddress!, rows: 2, dModel: 2, weights: weights)
        }
        let secondMLP = Float(exp(1.0) / (exp(1.0) + 3 / exp(1.0)))
        let expected: [Float] = [0.25, 0.75, secondMLP, 1 - secondMLP]
        for (value, want) in zip(result, expected) { #expect(abs(value - want) < 1e-6, "\(result) vs \(expected)") }
    }

    @Test("a kept route mixes a_expert·p·expert + a_mlp·dense; a dropped route keeps only the dense share")
    func mix() {
        let expert: [Float] = [4, 8]
        let dense: [Float] = [2, -2]
        var kept: [Float] = [1, 1]
        var dropped: [Float] = [1, 1]
        expert.withUnsafeBufferPointer { e in
            dense.withUnsafeBufferPointer { m in
                kept.withUnsafeMutableBufferPointer { out in
                    ResidualMixture.add(expertRow: e.baseAddress!, combineWeight: 0.5, denseRow: m.baseAddress!,
                                        coefficients: (mlp: 0.25, expert: 0.75), count: 2, to: out.baseAddress!)
                }
                dropped.withUnsafeMutableBufferPointer { out in
                    ResidualMixture.add(expertRow: nil, combineWeight: 0.5, denseRow: m.baseAddress!,
                                        coefficients: (mlp: 0.25, expert: 0.75), count: 2, to: out.baseAddress!)
                }
            }
        }
        // 1 + 0.75·0.5·4 + 0.25·2 = 3;  1 + 0.75·0.5·8 − 0.25·2 = 3.5
        #expect(kept == [3, 3.5])
        // 1 + 0.25·2 = 1.5;  1 − 0.25·2 = 0.5
        #expect(dropped == [1.5, 0.5])
    }
}
