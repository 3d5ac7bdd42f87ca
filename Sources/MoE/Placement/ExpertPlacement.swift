/// Contiguous blocks of E experts over n ranks (E ≥ n ≥ 1): the first `E mod n` ranks hold
/// ⌊E/n⌋+1 experts and the rest ⌊E/n⌋; rank r's first expert is `r·⌊E/n⌋ + min(r, E mod n)`.
/// Ranks here are positions within one expert-parallel group (see `ExpertPlacement`).
package struct ExpertBlocks: Equatable, Sendable {
    package let experts: Int
    package let ranks: Int

    package init(experts: Int, ranks: Int) {
        precondition(ranks >= 1 && experts >= ranks, "blocks need at least one expert per rank")
        self.experts = experts
        self.ranks = ranks
    }

    private var base: Int { experts / ranks }
    private var extra: Int { experts % ranks }

    /// The experts group rank `rank` holds.
    package func experts(of rank: Int) -> Range<Int> {
        let first = rank * base + min(rank, extra)
        return first..<first + base + (rank < extra ? 1 : 0)
    }

    /// The group rank that holds `expert`.
    package func owner(of expert: Int) -> Int {
        let boundary = extra * (base + 1)
        return expert < boundary ? expert / (base + 1) : extra + (expert - boundary) / base
    }
}

/// Where one layer's E experts live on a job of G ranks.
///
/// The world is cut into expert-parallel groups of `min(E, G)` consecutive ranks: group g is
/// ranks `g·S ..< min((g+1)·S, G)` with S = min(E, G). Every group holds all E experts in
/// contiguous blocks (`ExpertBlocks`) and a token is dispatched only inside its own rank's group.
///
/// - E ≥ G: one group, the whole world (plain expert parallelism).
/// - E < G, G a multiple of E: G/E groups of E ranks, one expert per rank; expert e is held by
///   rank `g·E + e` of every group g (one copy per group — not a "replica": that word means an
///   extra copy of a hot expert in a redundant slot, `ExpertSlots`).
/// - E < G otherwise: ⌊G/E⌋ groups of E ranks and one last group of `G mod E` ranks, whose ranks
///   hold several experts each (blocks of E over `G mod E` ranks). Each group still processes
///   only its own ranks' tokens, so the load per rank stays about even.
///
/// Consecutive groups keep each group on as few nodes as possible: with E equal to the ranks
/// per node, every group is one node and its exchanges never leave it.
package struct ExpertPlacement: Equatable, Sendable {
    package let experts: Int
    package let worldSize: Int

    package init(experts: Int, worldSize: Int) {
        precondition(experts >= 1 && worldSize >= 1)
        self.experts = experts
        self.worldSize = worldSize
    }

    /// S = min(E, G): the size of every group but possibly the last.
    package var groupSize: Int { min(experts, worldSize) }
    /// ⌈G / S⌉.
    package var groupCount: Int { (worldSize + groupSize - 1) / groupSize }

    /// The group world rank `rank` belongs to.
    package func group(ofRank rank: Int) -> Int { rank / groupSize }
    /// The position of world rank `rank` inside its group (its rank on the group communicator).
    package func rankInGroup(_ rank: Int) -> Int { rank % groupSize }
    /// The world ranks of group `group`.
    package func ranks(ofGroup group: Int) -> Range<Int> { group * groupSize..<min((group + 1) * groupSize, worldSize) }
    /// How group `group` spreads the experts over its ranks.
    package func blocks(ofGroup group: Int) -> ExpertBlocks { ExpertBlocks(experts: experts, ranks: ranks(ofGroup: group).count) }
    /// The experts world rank `rank` holds.
    package func heldExperts(ofRank rank: Int) -> Range<Int> { blocks(ofGroup: group(ofRank: rank)).experts(of: rankInGroup(rank)) }
}
