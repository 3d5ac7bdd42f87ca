/// Expert placement with redundant replicas of hot experts, planned from load — DeepSeek's EPLB
/// greedy rule (DeepSeek-V3 technical report, §3.4 "redundant experts"; the rule as the issue
/// that asked for it states it): with E logical experts on G ranks and R redundant slots per rank,
/// 1. **replicate**: every expert starts with one replica; each of the G·R extra replicas goes to
///    the expert with the highest load per replica (ties to the lower expert) that has fewer
///    replicas than there are ranks;
/// 2. **pack**: the replicas, each weighing its expert's load / replicas, heaviest first (ties by
///    expert, then replica), go to the least-loaded rank (ties to the lower rank) that has a free
///    slot and does not hold that expert yet — in the node-aware variant, ranks of a node that
///    already holds a replica of the expert come first.
/// Every rank has ⌈(E + G·R)/G⌉ slots. Pure and deterministic: `moe placement` plans from a stats
/// log, `PlacementPlanner` online (docs/CAPACITY.md, "Placement").
package struct ReplicaPlacement: Equatable, Sendable {
    /// `replicas[e]`: the ranks holding expert e, in the order they were placed.
    package let replicas: [[Int]]
    /// `slots[r]`: the experts rank r holds, in the order they were placed.
    package let slots: [[Int]]
    /// The predicted load of each rank: Σ over its replicas of load / replicas.
    package let rankLoad: [Double]

    /// max / mean of `rankLoad` (1 = perfectly even; 1 for zero load).
    package var imbalance: Double {
        let mean = rankLoad.reduce(0, +) / Double(max(1, rankLoad.count))
        return mean > 0 ? (rankLoad.max() ?? 0) / mean : 1
    }

    /// Slots per rank for E experts on G ranks with R redundant slots each.
    package static func slotsPerRank(experts: Int, ranks: Int, redundant: Int) -> Int {
        (experts + ranks * redundant + ranks - 1) / ranks
    }

    /// SwiftMoE's static placement (`ExpertBlocks`: contiguous blocks, one replica each) and the
    /// rank loads it gives.
    package static func contiguous(load: [Double], ranks: Int) -> ReplicaPlacement {
        let blocks = ExpertBlocks(experts: load.count, ranks: ranks)
        let slots = (0..<ranks).map { Array(blocks.experts(of: $0)) }
        return ReplicaPlacement(replicas: load.indices.map { [blocks.owner(of: $0)] }, slots: slots,
                                rankLoad: slots.map { $0.reduce(0) { $0 + load[$1] } })
    }

    /// The EPLB placement of experts with `load` (per logical expert, e.g. the moving average of
    /// the routes that chose it) on `ranks` ranks with `redundant` extra slots each.
    /// `nodeOfRank` (one entry per rank) enables the node-aware variant.
    package static func balanced(load: [Double], ranks: Int, redundant: Int, nodeOfRank: [Int]? = nil) -> ReplicaPlacement {
        let experts = load.count
        precondition(experts >= 1 && ranks >= 1 && redundant >= 0)
        precondition(nodeOfRank == nil || nodeOfRank!.count == ranks)
        // 1. Replicate.
        var counts = [Int](repeating: 1, count: experts)
        for _ in 0..<(ranks * redundant) {
            // An expert never gets more replicas than there are ranks (a second copy on one rank
            // would halve nothing).
            var best: Int?
            for expert in 0..<experts where counts[expert] < ranks {
                if best == nil || load[expert] / Double(counts[expert]) > load[best!] / Double(counts[best!]) { best = expert }
            }
            guard let best else { break }
            counts[best] += 1
        }
        // 2. Pack, heaviest replica first.
        let perRank = slotsPerRank(experts: experts, ranks: ranks, redundant: redundant)
        var items: [(expert: Int, replica: Int, weight: Double)] = []
        for expert in 0..<experts {
            for replica in 0..<counts[expert] { items.append((expert, replica, load[expert] / Double(counts[expert]))) }
        }
        items.sort { $0.weight != $1.weight ? $0.weight > $1.weight : ($0.expert != $1.expert ? $0.expert < $1.expert : $0.replica < $1.replica) }
        var slots = [[Int]](repeating: [], count: ranks)
        var rankLoad = [Double](repeating: 0, count: ranks)
        var replicas = [[Int]](repeating: [], count: experts)
        for item in items {
            let open = (0..<ranks).filter { slots[$0].count < perRank }
            let fresh = open.filter { !slots[$0].contains(item.expert) }
            var candidates = fresh.isEmpty ? open : fresh
            if let nodeOfRank, !replicas[item.expert].isEmpty {
                let nodes = Set(replicas[item.expert].map { nodeOfRank[$0] })
                let sameNode = candidates.filter { nodes.contains(nodeOfRank[$0]) }
                if !sameNode.isEmpty { candidates = sameNode }
            }
            let rank = candidates.min { rankLoad[$0] != rankLoad[$1] ? rankLoad[$0] < rankLoad[$1] : $0 < $1 }!
            slots[rank].append(item.expert)
            rankLoad[rank] += item.weight
            replicas[item.expert].append(rank)
        }
        return ReplicaPlacement(replicas: replicas, slots: slots, rankLoad: rankLoad)
    }
}
