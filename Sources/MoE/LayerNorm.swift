/// Layer normalisation over the model dimension: `y = (x − mean) / √(var + ε) · γ + β`, with
/// mean and (biased) variance accumulated in Double for reproducibility across row counts.
package struct LayerNorm: Sendable {
    package static let epsilon = 1e-5
    /// `[dModel]` scale γ and shift β.
    package let scale: [Float]
    package let shift: [Float]

    package init(scale: [Float], shift: [Float]) {
        precondition(scale.count == shift.count)
        self.scale = scale
        self.shift = shift
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
                    let inverse = 1 / (squares / Double(width) + Self.epsilon).squareRoot()
                    let y = output + row * width
                    for index in 0..<width {
                        y[index] = Float((Double(x[index]) - mean) * inverse) * gamma[index] + beta[index]
                    }
                }
            }
        }
    }
}
