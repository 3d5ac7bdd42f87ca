import Foundation
import MoE

/// Rotary position embedding (Su et al., RoFormer): pair i of a head of width D turns by the
/// angle p · f_i at position p, with f_i = θ^(−2i/D) or its YaRN-scaled value, and cos and sin
/// multiplied by YaRN's attention factor when there is one. Pairs are element i with i + D/2
/// (transformers' `rotate_half`) or elements 2i and 2i + 1 (DeepSeek's complex rotation; the
/// result stays interleaved, which leaves every query–key product what DeepSeek's computes).
/// Angles are computed in Double from float32 frequencies and rounded once.
package struct RotaryTable: Sendable {
    package let headDim: Int
    package let pairs: RopePairs
    /// `cos[p · D/2 + i]`, `sin[...]` for positions 0 ..< positions.
    private let cosines: [Float]
    private let sines: [Float]
    package let positions: Int

    package init(headDim: Int, theta: Double, positions: Int, pairs: RopePairs = .halves, yarn: YaRN? = nil) {
        let half = headDim / 2
        var cosines = [Float](repeating: 0, count: positions * half), sines = cosines
        // transformers computes the inverse frequencies in float32; so does this table.
        let inverse = yarn?.inverseFrequencies(theta: theta, dimensions: headDim)
            ?? (0..<half).map { Float(1) / Float(pow(theta, Double(2 * $0) / Double(headDim))) }
        let magnitude = Float(yarn?.attentionFactor ?? 1)
        for position in 0..<positions {
            for i in 0..<half {
                let angle = Double(Float(position) * inverse[i])
                cosines[position * half + i] = Float(cos(angle)) * magnitude
                sines[position * half + i] = Float(sin(angle)) * magnitude
            }
        }
        (self.headDim, self.pairs, self.cosines, self.sines, self.positions) = (headDim, pairs, cosines, sines, positions)
    }

    /// The table a decoder's heads use.
    package init(_ decoder: DecoderConfiguration) {
        self.init(headDim: decoder.rotaryDim, theta: decoder.ropeTheta, positions: decoder.maxPositions, pairs: decoder.ropePairs, yarn: decoder.yarn)
    }

    /// Turns `heads` heads of width D at `vector`, `stride` values apart (D: contiguous `[heads,
    /// D]`), to `position`.
    package func rotate(_ vector: UnsafeMutablePointer<Float>, heads: Int, stride: Int? = nil, position: Int) {
        let half = headDim / 2
        let stride = stride ?? headDim
        // Partner of pair element i: i + D/2 (halves), or the odd neighbour (interleaved).
        let (step, spacing) = pairs == .halves ? (1, half) : (2, 1)
        cosines.withUnsafeBufferPointer { c in
            sines.withUnsafeBufferPointer { s in
                let cosine = c.baseAddress! + position * half, sine = s.baseAddress! + position * half
                for head in 0..<heads {
                    let x = vector + head * stride
                    for i in 0..<half {
                        let (first, second) = (i * step, i * step + spacing)
                        let (a, b) = (x[first], x[second])
                        x[first] = a * cosine[i] - b * sine[i]
                        x[second] = b * cosine[i] + a * sine[i]
                    }
                }
            }
        }
    }
}
