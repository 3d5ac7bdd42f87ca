import Foundation
import FileFormats

/// How the rotary embedding pairs a head's elements.
package enum RopePairs: String, CaseIterable, Sendable {
    /// Element i turns with element i + D/2 (transformers' `rotate_half`: Mixtral, Qwen, OLMoE, GPT-OSS).
    case halves
    /// Elements 2i and 2i + 1 turn together (DeepSeek's complex rotation).
    case interleaved
}

/// YaRN-scaled rotary frequencies (Peng et al. 2023, "YaRN: Efficient Context Window Extension
/// of Large Language Models", §3.2–3.3): dimension pair i keeps its frequency θ^(−2i/D) when it
/// turns fast (more than `betaFast` turns over `originalMaxPositions`), takes θ^(−2i/D) / factor
/// when it turns slowly (fewer than `betaSlow`), and blends linearly between; cos and sin are
/// multiplied by `attentionFactor` (the paper's √(1/t) = 0.1 · ln(factor) + 1 unless a checkpoint
/// states it), which scales every query–key product by its square.
package struct YaRN: Equatable, Sendable {
    package var factor: Double
    package var originalMaxPositions: Int
    package var betaFast: Double = 32
    package var betaSlow: Double = 1
    /// Round the blend's bounds outwards to whole dimensions (transformers' default).
    package var truncate = true
    package var attentionFactor: Double

    package init(factor: Double, originalMaxPositions: Int, betaFast: Double = 32, betaSlow: Double = 1, truncate: Bool = true,
                 attentionFactor: Double? = nil) {
        (self.factor, self.originalMaxPositions, self.betaFast, self.betaSlow, self.truncate) = (factor, originalMaxPositions, betaFast, betaSlow, truncate)
        self.attentionFactor = attentionFactor ?? Self.magnitudeScale(factor: factor)
    }

    /// YaRN's `0.1 · mscale · ln(factor) + 1` (1 for factors ≤ 1).
    package static func magnitudeScale(factor: Double, mscale: Double = 1) -> Double {
        factor <= 1 ? 1 : 0.1 * mscale * log(factor) + 1
    }

    /// The inverse frequency of each of `dimensions / 2` pairs for base `theta`, in float32 as
    /// transformers computes them.
    package func inverseFrequencies(theta: Double, dimensions: Int) -> [Float] {
        func correction(_ turns: Double) -> Double {
            Double(dimensions) * log(Double(originalMaxPositions) / (turns * 2 * Double.pi)) / (2 * log(theta))
        }
        var low = correction(betaFast), high = correction(betaSlow)
        if truncate { (low, high) = (low.rounded(.down), high.rounded(.up)) }
        (low, high) = (max(low, 0), min(high, Double(dimensions - 1)))
        if low == high { high += 0.001 }
        return (0..<dimensions / 2).map { i in
            let power = Float(pow(theta, Double(Float(2 * i) / Float(dimensions))))
            let extrapolation = 1 / power, interpolation = 1 / (Float(factor) * power)
            let ramp = min(max((Float(i) - Float(low)) / (Float(high) - Float(low)), 0), 1)
            let keep = 1 - ramp
            return interpolation * (1 - keep) + extrapolation * keep
        }
    }

    /// The model file's `"yarn"` object.
    var json: JSONValue {
        .object([("factor", .number(factor)), ("original_max_positions", .number(Double(originalMaxPositions))),
                 ("beta_fast", .number(betaFast)), ("beta_slow", .number(betaSlow)), ("truncate", .bool(truncate)),
                 ("attention_factor", .number(attentionFactor))])
    }

    static let keys = ["factor", "original_max_positions", "beta_fast", "beta_slow", "truncate", "attention_factor"]

    /// Reads a `"yarn"` object, naming the field that is missing or out of range.
    static func read(_ json: JSONValue, path: String) throws(JSONFieldError) -> YaRN {
        let reader = try JSONObjectReader(json, path: path)
        try reader.rejectUnknownKeys(allowed: keys)
        let factor = try reader.number("factor")
        guard factor >= 1, factor <= 1e6 else { throw JSONFieldError(path: reader.childPath("factor"), problem: "must be in 1...1e6, got \(factor)") }
        let original = try reader.integer("original_max_positions")
        guard (1...DecoderConfiguration.positionLimit).contains(original) else {
            throw JSONFieldError(path: reader.childPath("original_max_positions"), problem: "must be in 1...\(DecoderConfiguration.positionLimit), got \(original)")
        }
        var yarn = YaRN(factor: factor, originalMaxPositions: original, truncate: try reader.optionalBool("truncate") ?? true,
                        attentionFactor: try reader.optionalNumber("attention_factor"))
        for (key, field) in [("beta_fast", \YaRN.betaFast), ("beta_slow", \YaRN.betaSlow)] {
            guard let value = try reader.optionalNumber(key) else { continue }
            guard value > 0, value.isFinite else { throw JSONFieldError(path: reader.childPath(key), problem: "must be above 0, got \(value)") }
            yarn[keyPath: field] = value
        }
        guard yarn.attentionFactor > 0, yarn.attentionFactor.isFinite else {
            throw JSONFieldError(path: reader.childPath("attention_factor"), problem: "must be above 0, got \(yarn.attentionFactor)")
        }
        return yarn
    }
}

/// Multi-head latent attention (DeepSeek-V2, arXiv:2405.04434 §2.1): keys and values of every
/// head come from one compressed latent per token of width `kvRank`, which — with the shared
/// rotary key of width `ropeDim` — is all the KV cache holds: `kvRank + ropeDim` values per token
/// and layer, against `2 · H · D` for multi-head attention. A head's query is `nopeDim` plain
/// plus `ropeDim` rotated values, its value `valueDim` wide. The query comes straight from the
/// hidden state (`queryRank` nil, V2-Lite) or through a low-rank projection and RMSNorm.
package struct LatentAttention: Equatable, Sendable {
    package var queryRank: Int?
    package var kvRank: Int
    package var nopeDim: Int
    package var ropeDim: Int
    package var valueDim: Int

    package init(queryRank: Int?, kvRank: Int, nopeDim: Int, ropeDim: Int, valueDim: Int) {
        (self.queryRank, self.kvRank, self.nopeDim, self.ropeDim, self.valueDim) = (queryRank, kvRank, nopeDim, ropeDim, valueDim)
    }

    /// One head's query/key width.
    package var queryKeyDim: Int { nopeDim + ropeDim }
}
