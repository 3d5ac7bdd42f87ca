/// Rotary position embedding (Su et al., RoFormer) in transformers' `rotate_half` layout: a head
/// of width D is two halves, and element i of the first half turns with element i of the second
/// by the angle p · θ^(−2i/D) at position p. Angles are computed in Double and rounded once.
package struct RotaryTable: Sendable {
    package let headDim: Int
    /// `cos[p · D/2 + i]`, `sin[...]` for positions 0 ..< positions.
    private let cosines: [Float]
    private let sines: [Float]
    package let positions: Int

    package init(headDim: Int, theta: Double, positions: Int) {
        let half = headDim / 2
        var cosines = [Float](repeating: 0, count: positions * half), sines = cosines
        // transformers computes the inverse frequencies in float32; so does this table.
        let inverse = (0..<half).map { Double(Float(1) / Float(pow(theta, Double(2 * $0) / Double(headDim)))) }
        for position in 0..<positions {
            for i in 0..<half {
                let angle = Double(Float(Double(position) * inverse[i]))
                cosines[position * half + i] = Float(cos(angle))
                sines[position * half + i] = Float(sin(angle))
            }
        }
        (self.headDim, self.cosines, self.sines, self.positions) = (headDim, cosines, sines, positions)
    }

    /// Turns `heads` heads of width D at `vector` (contiguous `[heads, D]`) to `position`.
    package func rotate(_ vector: UnsafeMutablePointer<Float>, heads: Int, position: Int) {
        let half = headDim / 2
        cosines.withUnsafeBufferPointer { c in
            sines.withUnsafeBufferPointer { s in
                let cosine = c.baseAddress! + position * half, sine = s.baseAddress! + position * half
                for head in 0..<heads {
                    let x = vector + head * headDim
                    for i in 0..<half {
                        let (a, b) = (x[i], x[i + half])
                        x[i] = a * cosine[i] - b * sine[i]
                        x[i + half] = b * cosine[i] + a * sine[i]
                    }
                }
            }
        }
    }
}

import Foundation
