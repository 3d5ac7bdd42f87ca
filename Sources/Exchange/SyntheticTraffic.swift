import RandomStreams

/// Reproducible exchange workloads for correctness checks: per-peer row counts in several
/// shapes, and send contents that depend only on (seed, trial, source, destination, byte), so a
/// receiver can regenerate exactly what each source sent without asking it.
public enum TrafficShape: String, CaseIterable, Sendable {
    /// Every peer gets a uniform random count in 0...maxRows.
    case uniform
    /// Nobody sends anything.
    case empty
    /// Every rank sends only to one rank (which then receives everything); others get zero.
    case oneReceiver = "one-receiver"
    /// Counts are 0, 1 or 8 × maxRows at random: very uneven sizes.
    case uneven
    /// Only the rows a rank sends itself.
    case selfOnly = "self-only"
    /// Half the peers (at random) get zero, the rest a random count.
    case sparse

    /// The shape of trial `trial`: the shapes in turn, so any few trials cover them all.
    public static func forTrial(_ trial: Int) -> TrafficShape { allCases[trial % allCases.count] }
}

public struct SyntheticTraffic: Sendable {
    public let seed: UInt64
    public let trial: Int
    public let shape: TrafficShape
    /// Bytes per row in this trial: varies over 1, 3, 64 and 2052 so that odd sizes and
    /// unaligned rows are exercised.
    public let rowBytes: Int
    public let maxRows: Int

    public init(seed: UInt64, trial: Int, maxRows: Int) {
        self.seed = seed
        self.trial = trial
        self.shape = TrafficShape.forTrial(trial)
        self.maxRows = maxRows
        let widths = [1, 3, 64, 2052]
        self.rowBytes = widths[(trial / TrafficShape.allCases.count) % widths.count]
    }

    /// Rows `source` sends to each of `size` ranks.
    public func sendCounts(source: Int, size: Int) -> [Int] {
        var random = SeededGenerator(seed: seed, stream: 1, UInt64(trial), UInt64(source))
        switch shape {
        case .uniform:
            return (0..<size).map { _ in Int.random(in: 0...maxRows, using: &random) }
        case .empty:
            return Array(repeating: 0, count: size)
        case .oneReceiver:
            let receiver = trial % size
            return (0..<size).map { $0 == receiver ? Int.random(in: 1...max(1, maxRows * 2), using: &random) : 0 }
        case .uneven:
            return (0..<size).map { _ in [0, 1, 8 * maxRows][Int.random(in: 0..<3, using: &random)] }
        case .selfOnly:
            return (0..<size).map { $0 == source ? Int.random(in: 1...max(1, maxRows), using: &random) : 0 }
        case .sparse:
            return (0..<size).map { _ in Bool.random(using: &random) ? 0 : Int.random(in: 1...max(1, maxRows), using: &random) }
        }
    }

    /// Fills `block` with the bytes `source` sends to `destination`.
    public func fill(_ block: UnsafeMutableRawBufferPointer, source: Int, destination: Int) {
        var random = SeededGenerator(seed: seed, stream: 2, UInt64(trial), UInt64(source), UInt64(destination))
        var index = 0
        while index < block.count {
            var word = random.next()
            for _ in 0..<min(8, block.count - index) {
                block[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
    }
}
