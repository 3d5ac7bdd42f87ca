import Foundation

/// The expert FFN's nonlinearity.
public enum Activation: String, CaseIterable, Sendable, Codable {
    /// `max(0, x)`.
    case relu
    /// GELU, tanh form: `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))` (Hendrycks & Gimpel 2016).
    case gelu
    /// SwiGLU (Shazeer 2020): `silu(x·W1) ⊙ (x·W3)`, then `·W2`; `silu(x) = x / (1 + e^−x)`.
    case swiglu

    /// Applies relu or gelu in place to `count` floats. (SwiGLU is applied by the expert, which
    /// holds the second projection.)
    @inline(__always)
    static func applyPointwise(_ activation: Activation, _ values: UnsafeMutablePointer<Float>, count: Int) {
        switch activation {
        case .relu:
            for index in 0..<count where values[index] < 0 { values[index] = 0 }
        case .gelu:
            let scale: Float = 0.797_884_56  // √(2/π)
            for index in 0..<count {
                let x = values[index]
                values[index] = 0.5 * x * (1 + tanhf(scale * (x + 0.044715 * x * x * x)))
            }
        case .swiglu:
            preconditionFailure("SwiGLU is not pointwise")
        }
    }

    /// `gate[i] = silu(gate[i]) * up[i]` for `count` floats.
    @inline(__always)
    static func applySwiGLU(gate: UnsafeMutablePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        for index in 0..<count {
            let x = gate[index]
            gate[index] = x / (1 + expf(-x)) * up[index]
        }
    }
}
