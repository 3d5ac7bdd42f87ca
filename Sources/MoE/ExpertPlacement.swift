/// Which rank holds which experts of one layer: contiguous blocks in rank order. With E experts
/// over G ranks (E ≥ G), the first `E mod G` ranks hold ⌊E/G⌋+1 experts and the rest ⌊E/G⌋;
/// rank r's first expert is `r·⌊E/G⌋ + min(r, E mod G)`.
public struct ExpertPlacement: Equatable, Sendable {
    public let experts: Int
    public let ranks: Int

    /// Fails when there are fewer experts than ranks (replica groups are not built yet).
    public init?(experts: Int, ranks: Int) {
        guard ranks >= 1, experts >= ranks else { return nil }
        self.experts = experts
        self.ranks = ranks
    }

    private var base: Int { experts / ranks }
    private var extra: Int { experts % ranks }

    /// The experts `rank` holds.
    public func experts(of rank: Int) -> Range<Int> {
        let first = rank * base + min(rank, extra)
        return first..<first + base + (rank < extra ? 1 : 0)
    }

    /// The rank that holds `expert`.
    public func owner(of expert: Int) -> Int {
        let boundary = extra * (base + 1)
        return expert < boundary ? expert / (base + 1) : extra + (expert - boundary) / base
    }
}
