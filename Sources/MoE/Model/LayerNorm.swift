/// Layer normalisation over the model dimension: `y = (x − mean) / √(var + ε) · γ + β`, with
/// mean and (biased) variance accumulated in Double for reproducibility across row counts.
package struct LayerNorm: Sendable {
    /// ε when the model does not give one.
    package static let defaultEpsilon = 1e-5
    /// `[dModel]` scale γ and shift β.
    package let scale: [Float]
    package let shift: [Float]
    package let epsilon: Double

    package init(scale: [Float], shift: [Float], epsilon: Double = LayerNorm.defaultEpsilon) {
        precondition(scale.count == shift.count)
        self.scale = scale
        self.shift = shift
        self.epsilon = epsilon
    }

    /// Normalises `rows` rows of `input` (row-major `[rows, dModel]`) into `output`.
    package func apply(_ input: UnsafePointer<Float>, rows: Int, into output: UnsafeMutablePointer<Float>) {
        let width = scale.count
        scale.withUnsafeBufferPointer { gamma in
            shift.withUnsafeBufferPointer { beta in
                for row in 0..<rows {
                    let x = input + row * width
                    var sum = 0.0
                    for index in 0..<width { sum += Double(x[index]) }
                    let mean = sum / Double(width)
                    var squares = 0.0
                    for index in 0..<width {
                        let centred = Double(x[index]) - mean
                        squares += centred * centred
                    }
                    let inverse = 1 / (squares / Double(width) + epsilon).squareRoot()
                    let y = output + row * width
                    for index in 0..<width {
                        y[index] = Float((Double(x[index]) - mean) * inverse) * gamma[index] + beta[index]
                    }
                }
            }
        }
    }
}

/// RMS normalisation (Zhang & Sennrich 2019), as Llama-family and T5 models use it:
/// `y = x / √(mean(x²) + ε) · γ`, no centring and no shift; the mean of squares accumulated in
/// Double.
package struct RMSNorm: Sendable {
    /// `[dModel]` scale γ.
    package let scale: [Float]
    package let epsilon: Double

    package init(scale: [Float], epsilon: Double) {
        self.scale = scale
        self.epsilon = epsilon
    }

    /// Normalises `rows` rows of `input` (row-major `[rows, dModel]`) into `output`.
    package func apply(_ input: UnsafePointer<Float>, rows: Int, into output: UnsafeMutablePointer<Float>) {
        let width = scale.count
        scale.withUnsafeBufferPointer { gamma in
            for row in 0..<rows {
                let x = input + row * width
                var squares = 0.0
                for index in 0..<width { squares += Double(x[index]) * Double(x[index]) }
                let inverse = 1 / (squares / Double(width) + epsilon).squareRoot()
                let y = output + row * width
                for index in 0..<width { y[index] = Float(Double(x[index]) * inverse) * gamma[index] }
            }
        }
    }
}

/// Which normalisation a model's layers apply before their FFN (`"norm"` in the model file).
package enum NormKind: String, CaseIterable, Sendable {
    /// `LayerNorm`: centred, scaled and shifted (SwiftMoE's own models).
    case layer
    /// `RMSNorm`: scaled by the root mean square, no shift (imported Hugging Face models).
    case rms
    /// No normalisation: the FFN sees the hidden state itself.
    case none
}

/// One layer's normalisation with its parameters.
package enum TokenNorm: Sendable {
    case layer(LayerNorm)
    case rms(RMSNorm)
    case none

    /// Normalises `rows` rows of `input` (`[rows, dModel]`) into `output`.
    package func apply(_ input: UnsafePointer<Float>, rows: Int, width: Int, into output: UnsafeMutablePointer<Float>) {
        switch self {
        case let .layer(norm): norm.apply(input, rows: rows, into: output)
        case let .rms(norm): norm.apply(input, rows: rows, into: output)
        case .none: output.update(from: input, count: rows * width)
        }
    }
}
