/// A deterministic random stream: SplitMix64 (Steele, Lea and Flood, "Fast splittable
/// pseudorandom number generators", OOPSLA 2014).
///
/// Every random choice in SwiftMoE (weights, inputs, traffic patterns) comes from one of these,
/// seeded from the user's `--seed` and a purpose-specific stream number, so a run is
/// reproducible on any rank count: a value depends on (seed, stream), never on which rank or in
/// what order it was drawn.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// A generator for one named sub-stream of `seed`, independent of the others.
    public init(seed: UInt64, stream: UInt64...) {
        var mixed = SeededGenerator.mix(seed &+ 0x9E37_79B9_7F4A_7C15)
        for part in stream { mixed = SeededGenerator.mix(mixed ^ SeededGenerator.mix(part &+ 0xD1B5_4A32_D192_ED03)) }
        state = mixed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return SeededGenerator.mix(state)
    }

    /// The SplitMix64 finaliser: a bijective mix of 64 bits.
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform `Float` in [-1, 1), from the top 24 bits (exactly representable).
    public mutating func nextSignedUnitFloat() -> Float {
        Float(Int32(truncatingIfNeeded: next() >> 40) - (1 << 23)) / Float(1 << 23)
    }
}
