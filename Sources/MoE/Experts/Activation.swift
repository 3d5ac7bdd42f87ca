import Foundation

/// The expert FFN's nonlinearity.
package enum Activation: String, CaseIterable, Sendable, Codable {
    /// `max(0, x)`.
    case relu
    /// GELU, tanh form: `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))` (Hendrycks & Gimpel 2016).
    case gelu
    /// SwiGLU (Shazeer 2020): `silu(x·W1) ⊙ (x·W3)`, then `·W2`; `silu(x) = x / (1 + e^−x)`.
    case swiglu
    /// GPT-OSS's clamped GLU: with g = min(x·W1 + b1, limit) and u = clamp(x·W3 + b3, ±limit),
    /// `(u + 1) ⊙ g ⊙ σ(α·g)`, then `·W2 + b2` (`ClampedGLU` holds α and the limit).
    case clampedGLU = "clamped-glu"

    /// The gated forms (a second projection W3 multiplies the activated first one).
    package var isGated: Bool { self == .swiglu || self == .clampedGLU }

    /// Whether an FFN of this activation has biases unless the model says otherwise: relu, gelu
    /// and the clamped GLU (GPT-OSS) do; SwiGLU (Shazeer 2020, Llama-family MoEs) does not.
    package var hasBiasByDefault: Bool { self != .swiglu }

    /// Applies relu or gelu in place to `count` floats. (SwiGLU is applied by the expert, which
    /// holds the second projection.)
    ///
    /// GELU uses the identity `0.5·x·(1 + tanh u) = x / (1 + e^(−2u))` with the vectorised `exp`
    /// below: scalar `tanhf` made the activation cost as much as the expert GEMMs at
    /// d_ff 2048 (Benchmarks/README.md).
    @inline(__always)
    static func applyPointwise(_ activation: Activation, _ values: UnsafeMutablePointer<Float>, count: Int) {
        switch activation {
        case .relu:
            let zero = SIMD8<Float>(repeating: 0)
            forEachVector(values, count: count) { x in x.replacing(with: zero, where: x .< zero) }
        case .gelu:
            let scale = SIMD8<Float>(repeating: -2 * 0.797_884_56)  // −2·√(2/π)
            let cubic = SIMD8<Float>(repeating: 0.044715)
            forEachVector(values, count: count) { x in
                x / (1 + vectorExp(scale * (x + cubic * x * x * x)))
            }
        case .swiglu, .clampedGLU:
            preconditionFailure("gated activations are not pointwise")
        }
    }

    /// `values[row, j] = act(values[row, j] + bias[j])` over `rows` rows of `bias.count`: the
    /// bias add fused into the activation pass, so the hidden buffer is swept once.
    @inline(__always)
    static func applyBiasAndPointwise(_ activation: Activation, _ values: UnsafeMutablePointer<Float>, rows: Int, bias: UnsafePointer<Float>, width: Int) {
        for row in 0..<rows {
            let line = values + row * width
            var column = 0
            while column + 8 <= width {
                let raw = UnsafeMutableRawPointer(line + column)
                raw.storeBytes(of: raw.loadUnaligned(as: SIMD8<Float>.self) + UnsafeRawPointer(bias + column).loadUnaligned(as: SIMD8<Float>.self),
                               as: SIMD8<Float>.self)
                column += 8
            }
            while column < width { line[column] += bias[column]; column += 1 }
            applyPointwise(activation, line, count: width)
        }
    }

    /// `values[row, j] += bias[j]` over `rows` rows of `width`.
    @inline(__always)
    static func addBias(_ values: UnsafeMutablePointer<Float>, rows: Int, bias: UnsafePointer<Float>, width: Int) {
        for row in 0..<rows {
            let line = values + row * width
            for column in 0..<width { line[column] += bias[column] }
        }
    }

    /// `gate[i] = (clamp(up[i], ±limit) + 1) · g · σ(α·g)` with `g = min(gate[i], limit)`, for
    /// `count` floats (GPT-OSS's expert activation; σ(z) = 1 / (1 + e^−z)).
    @inline(__always)
    static func applyClampedGLU(gate: UnsafeMutablePointer<Float>, up: UnsafePointer<Float>, count: Int, glu: ClampedGLU) {
        let limit = SIMD8<Float>(repeating: glu.limit), alpha = SIMD8<Float>(repeating: glu.alpha)
        func apply(_ x: SIMD8<Float>, _ u: SIMD8<Float>) -> SIMD8<Float> {
            var g = x, v = u
            g.replace(with: limit, where: g .> limit)
            v.replace(with: limit, where: v .> limit)
            v.replace(with: -limit, where: v .< -limit)
            return (v + 1) * (g / (1 + vectorExp(-alpha * g)))
        }
        var index = 0
        while index + 8 <= count {
            let x = UnsafeRawPointer(gate + index).loadUnaligned(as: SIMD8<Float>.self)
            let u = UnsafeRawPointer(up + index).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(gate + index).storeBytes(of: apply(x, u), as: SIMD8<Float>.self)
            index += 8
        }
        if index < count {
            var x = SIMD8<Float>(repeating: 0), u = SIMD8<Float>(repeating: 0)
            for lane in 0..<(count - index) { x[lane] = gate[index + lane]; u[lane] = up[index + lane] }
            let y = apply(x, u)
            for lane in 0..<(count - index) { gate[index + lane] = y[lane] }
        }
    }

    /// `gate[i] = silu(gate[i]) * up[i]` for `count` floats, `silu(x) = x / (1 + e^−x)`.
    @inline(__always)
    static func applySwiGLU(gate: UnsafeMutablePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        var index = 0
        while index + 8 <= count {
            let x = UnsafeRawPointer(gate + index).loadUnaligned(as: SIMD8<Float>.self)
            let u = UnsafeRawPointer(up + index).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(gate + index).storeBytes(of: x / (1 + vectorExp(-x)) * u, as: SIMD8<Float>.self)
            index += 8
        }
        if index < count {
            var x = SIMD8<Float>(repeating: 0), u = SIMD8<Float>(repeating: 0)
            for lane in 0..<(count - index) { x[lane] = gate[index + lane]; u[lane] = up[index + lane] }
            let y = x / (1 + vectorExp(-x)) * u
            for lane in 0..<(count - index) { gate[index + lane] = y[lane] }
        }
    }

    /// Applies `transform` to `count` floats in place, eight at a time; the tail goes through the
    /// same vector code (zero-padded), so every element gets bitwise the same function.
    @inline(__always)
    static func forEachVector(_ values: UnsafeMutablePointer<Float>, count: Int, _ transform: (SIMD8<Float>) -> SIMD8<Float>) {
        var index = 0
        while index + 8 <= count {
            let raw = UnsafeMutableRawPointer(values + index)
            raw.storeBytes(of: transform(raw.loadUnaligned(as: SIMD8<Float>.self)), as: SIMD8<Float>.self)
            index += 8
        }
        if index < count {
            var tail = SIMD8<Float>(repeating: 0)
            for lane in 0..<(count - index) { tail[lane] = values[index + lane] }
            let result = transform(tail)
            for lane in 0..<(count - index) { values[index + lane] = result[lane] }
        }
    }

    /// e^x for eight floats: x = n·ln 2 + r with |r| ≤ ln 2 / 2 (ln 2 split in two parts for
    /// exactness), e^r by the degree-6 minimax polynomial of Cephes' `expf` (relative error
    /// 1.2e-7, measured against Double `exp` over [−50, 50]), times 2^n built in the exponent
    /// bits. Inputs are clamped to [−87.3, 88.3], so the result is finite and positive, which is
    /// all the sigmoid forms need.
    ///
    /// Written with `replace(with:where:)` and the 1.5·2^23 rounding trick rather than
    /// `clamped`, `rounded` and `SIMD8<Int32>(_:rounding:)`: those do not lower to vector
    /// instructions in Swift 6.3 and made this 5.6× slower.
    @inline(__always)
    static func vectorExp(_ input: SIMD8<Float>) -> SIMD8<Float> {
        var x = input
        x.replace(with: SIMD8(repeating: -87.3), where: x .< -87.3)
        x.replace(with: SIMD8(repeating: 88.3), where: x .> 88.3)
        // Adding 1.5·2^23 rounds x·log2(e) to the nearest integer in the low mantissa bits.
        let shifted = x * 1.442_695_04 + 12_582_912.0
        let n = shifted - 12_582_912.0
        let r = x - n * 0.693_359_375 + n * 2.121_944_4e-4
        var p = SIMD8<Float>(repeating: 1.987_569_15e-4)
        p = p * r + 1.398_199_95e-3
        p = p * r + 8.333_451_9e-3
        p = p * r + 4.166_579_59e-2
        p = p * r + 1.666_666_55e-1
        p = p * r + 5.000_000_12e-1
        let polynomial = p * r * r + r + 1
        let integer = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
        return polynomial * unsafeBitCast((integer &+ 127) &<< 23, to: SIMD8<Float>.self)
    }
}

/// The clamped GLU's constants (GPT-OSS: α 1.702, limit 7, from the config's `swiglu_limit`).
package struct ClampedGLU: Equatable, Sendable {
    package var alpha: Float
    package var limit: Float

    package init(alpha: Float = 1.702, limit: Float = 7) {
        self.alpha = alpha
        self.limit = limit
    }
}
