/// Where one expert-parallel group keeps one layer's experts, slot by slot: group rank r holds
/// the logical experts `slots[r]` in that order (its physical expert slots), and every logical
/// expert has at least one replica. The static placement is `ExpertBlocks` (one replica each,
/// contiguous blocks); with redundant slots (`--redundant-experts R`) a placement planner
/// (`PlacementPlanner`) replicates hot experts and moves them between steps.
///
/// **Routing to replicas.** Capacity and drops stay per (source rank, logical expert), decided
/// by the router as with one replica. A source's kept rows for expert e — slots 0..<k in slot
/// order — are then split over e's c replicas in contiguous shares: replica j (replicas ordered
/// by group rank) gets the slots `⌊k·j/c⌋ ..< ⌊k·(j+1)/c⌋` (`share`). Every source splits its own
/// rows, so each replica receives about 1/c of the expert's rows; the split is known to every
/// rank from the placement and the counts alone, and a row's expert output is the same
/// whichever replica computes it (docs/ARCHITECTURE.md, "Expert slots", says why that is
/// bitwise here).
package struct ExpertSlots: Equatable, Sendable {
    /// A replica's place: a group rank and one of its slots.
    package struct Address: Equatable, Sendable {
        package let rank: Int
        package let slot: Int
    }

    /// Logical experts of the layer (E).
    package let experts: Int
    /// `slots[r]`: the logical experts in group rank r's slots, in slot order.
    package let slots: [[Int]]
    /// `replicas[e]`: every replica of expert e, ascending by (rank, slot).
    package let replicas: [[Address]]

    /// Why a slot table is not a placement (a malformed plan from the wire, a bad test table).
    package enum Problem: Error, Equatable, CustomStringConvertible {
        case expertOutOfRange(rank: Int, slot: Int, expert: Int)
        case missingExpert(Int)

        package var description: String {
            switch self {
            case let .expertOutOfRange(rank, slot, expert): return "rank \(rank) slot \(slot) holds expert \(expert), which the layer does not have"
            case let .missingExpert(expert): return "expert \(expert) has no replica"
            }
        }
    }

    /// Checks that every slot names an expert of `0..<experts` and every expert has a replica.
    /// A rank may hold an expert in two slots (useless, but harmless: each gets its share).
    package init(experts: Int, slots: [[Int]]) throws(Problem) {
        var replicas = [[Address]](repeating: [], count: experts)
        for (rank, held) in slots.enumerated() {
            for (slot, expert) in held.enumerated() {
                guard (0..<experts).contains(expert) else { throw .expertOutOfRange(rank: rank, slot: slot, expert: expert) }
                replicas[expert].append(Address(rank: rank, slot: slot))
            }
        }
        if let missing = replicas.firstIndex(where: \.isEmpty) { throw .missingExpert(missing) }
        self.experts = experts
        self.slots = slots
        self.replicas = replicas
    }

    /// The static placement: `blocks`' contiguous blocks, one replica per expert.
    package init(_ blocks: ExpertBlocks) {
        // Blocks are a valid placement by construction.
        try! self.init(experts: blocks.experts, slots: (0..<blocks.ranks).map { Array(blocks.experts(of: $0)) })
    }

    /// The group's ranks.
    package var ranks: Int { slots.count }

    /// Replica j's share of k kept rows of one source for an expert with c replicas: the slots
    /// `⌊k·j/c⌋ ..< ⌊k·(j+1)/c⌋` (the shares tile `0..<k` in replica order).
    package static func share(replica j: Int, of c: Int, rows k: Int) -> Range<Int> {
        (k * j / c)..<(k * (j + 1) / c)
    }

    /// The most rows replica j of c can get from a source whose kept rows are at most `capacity`
    /// (`share` of the capacity, rounded up: a bound for any k ≤ capacity).
    package static func shareBound(of c: Int, capacity: Int) -> Int { c == 1 ? capacity : (capacity + c - 1) / c }

    /// The index of rank `rank`'s slot `slot` among its expert's replicas.
    package func replicaIndex(rank: Int, slot: Int) -> Int {
        replicas[slots[rank][slot]].firstIndex(of: Address(rank: rank, slot: slot))!
    }

    /// The predicted load of every rank when expert e carries `load[e]` split evenly over its
    /// replicas (what the planner balances).
    package func rankLoad(_ load: [Double]) -> [Double] {
        slots.map { held in held.reduce(0) { $0 + load[$1] / Double(replicas[$1].count) } }
    }

    /// max / mean of `rankLoad(load)` (1 for no load).
    package func imbalance(_ load: [Double]) -> Double {
        let perRank = rankLoad(load)
        let mean = perRank.reduce(0, +) / Double(max(1, perRank.count))
        return mean > 0 ? (perRank.max() ?? 0) / mean : 1
    }
}
