import Foundation
import RandomStreams

/// A synthetic router bias that makes expert popularity drift over steps: a smooth bump over
/// the ring of experts that rotates once every `period` steps.
///
/// For layer l, step t and expert e of E, the bias added to every token's gate logit is
///
///     b(l, t, e) = amplitude · cos(2π · (e/E + φ_l + t/period))
///
/// with φ_l ∈ [0, 1) drawn from (seed, l) by SplitMix64, so layers drift out of phase. The
/// experts near the bump's peak are hot; which ones moves by E/period experts per step.
/// Deterministic: the distributed run and the reference compute the same biases.
package struct RouterDrift: Equatable, Sendable {
    /// Peak bias in logit units (≥ 0).
    package var amplitude: Double
    /// Steps for the bump to travel once around the experts (> 0).
    package var period: Double
    package var seed: UInt64

    package init(amplitude: Double, period: Double, seed: UInt64) {
        self.amplitude = amplitude
        self.period = period
        self.seed = seed
    }

    /// The phase offset of layer `layer`, in [0, 1).
    package func phase(layer: Int) -> Double {
        var random = SeededGenerator(seed: seed, stream: 0xD71F7, UInt64(layer))
        return Double(random.next() >> 11) / Double(1 << 53)
    }

    /// `[experts]` biases for `layer` at `step`.
    package func bias(layer: Int, experts: Int, step: Int) -> [Float] {
        let offset = phase(layer: layer) + Double(step) / period
        return (0..<experts).map { expert in
            Float(amplitude * cos(2 * Double.pi * (Double(expert) / Double(experts) + offset)))
        }
    }
}
