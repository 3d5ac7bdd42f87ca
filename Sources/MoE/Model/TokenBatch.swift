import RandomStreams

/// How a global batch of tokens is split over ranks: rank r holds global tokens
/// `⌊r·N/G⌋ ..< ⌊(r+1)·N/G⌋` (contiguous, sizes differ by at most one).
package enum TokenPartition {
    package static func range(rank: Int, ranks: Int, total: Int) -> Range<Int> {
        (rank * total / ranks)..<((rank + 1) * total / ranks)
    }

    /// The same split in whole units of `unit` tokens (sequences): rank r holds units
    /// `⌊r·Q/G⌋ ..< ⌊(r+1)·Q/G⌋` of the Q = total / unit units. `total` must be a multiple of `unit`.
    package static func range(rank: Int, ranks: Int, total: Int, unit: Int) -> Range<Int> {
        precondition(unit >= 1 && total % unit == 0)
        let units = range(rank: rank, ranks: ranks, total: total / unit)
        return units.lowerBound * unit..<units.upperBound * unit
    }
}

/// Hidden states (and optional task ids) of a range of global tokens.
package struct TokenBatch: Equatable, Sendable {
    /// Row-major `[tokens, dModel]`.
    package var hidden: [Float]
    /// One task id per token, or empty when the model routes by gate.
    package var taskIds: [Int]
    package let dModel: Int
    /// The global index of the first token (the job's tokens in rank order; a routing trace is
    /// indexed by it).
    package var firstToken = 0
    /// Tokens per sequence when the batch is whole sequences whose capacity is counted one by
    /// one (`--sequence-length`, Switch Transformers' per-sequence `expert_capacity`); nil: the
    /// batch is one capacity group. `tokenCount` is a multiple of it.
    package var sequenceLength: Int?

    package var tokenCount: Int { hidden.count / dModel }

    package init(hidden: [Float], taskIds: [Int], dModel: Int) {
        self.hidden = hidden
        self.taskIds = taskIds
        self.dModel = dModel
    }

    /// Seeded inputs for global tokens `range`: token g's values depend only on (seed, g), so
    /// any partition of the same tokens over ranks sees the same numbers. Task ids (when
    /// `tasks` is not empty) are drawn uniformly from `tasks`.
    package static func seeded(range: Range<Int>, dModel: Int, seed: UInt64, tasks: [Int]) -> TokenBatch {
        var hidden: [Float] = []
        hidden.reserveCapacity(range.count * dModel)
        var taskIds: [Int] = []
        for token in range {
            var random = SeededGenerator(seed: seed, stream: 0x1A9E7, UInt64(token))
            for _ in 0..<dModel { hidden.append(random.nextSignedUnitFloat()) }
            if !tasks.isEmpty { taskIds.append(tasks[Int(random.next() % UInt64(tasks.count))]) }
        }
        var batch = TokenBatch(hidden: hidden, taskIds: taskIds, dModel: dModel)
        batch.firstToken = range.lowerBound
        return batch
    }

    /// The first non-finite value, as (token, feature), if any.
    package func firstNonFinite() -> (token: Int, feature: Int)? {
        guard let index = hidden.firstIndex(where: { !$0.isFinite }) else { return nil }
        return (index / dModel, index % dModel)
    }
}
