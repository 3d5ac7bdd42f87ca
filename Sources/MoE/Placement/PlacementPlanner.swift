/// How experts are placed on their group's ranks and when they move (`--placement`,
/// `--redundant-experts`, `--rebalance-every`, `--rebalance-threshold`; docs/CAPACITY.md).
package struct PlacementPolicy: Equatable, Sendable {
    package enum Kind: String, CaseIterable, Sendable {
        /// The first placement stays: contiguous blocks, or with R > 0 the EPLB placement for
        /// uniform load (every slot used).
        case `static`
        /// Every K steps, re-plan with EPLB from the moving-average load (`ReplicaPlacement.balanced`).
        case balanced
        /// `balanced`, with the node-aware packing (replicas of an expert kept inside a node first).
        case balancedNode = "balanced-node"
    }

    package var kind: Kind
    /// R: redundant slots per rank, beyond ⌈E/n⌉ for a group of n ranks.
    package var redundant: Int
    /// K ≥ 1: re-plan after every K-th step.
    package var rebalanceEvery: Int
    /// Re-place only when the predicted max/mean rank load improves by more than this fraction
    /// of the current one.
    package var threshold: Double

    /// Weight of the newest step in the moving average of each expert's load.
    package static let smoothing = 0.5

    package init(kind: Kind = .static, redundant: Int = 0, rebalanceEvery: Int = 10, threshold: Double = 0.05) {
        precondition(redundant >= 0 && rebalanceEvery >= 1 && threshold >= 0)
        self.kind = kind
        self.redundant = redundant
        self.rebalanceEvery = rebalanceEvery
        self.threshold = threshold
    }

    /// The static placement of today: no redundant slots, never moved.
    package static let contiguous = PlacementPolicy()

    /// Slots per rank of a group of `ranks` ranks holding `experts` experts: ⌈(E + n·R)/n⌉.
    package func slotsPerRank(experts: Int, ranks: Int) -> Int {
        ReplicaPlacement.slotsPerRank(experts: experts, ranks: ranks, redundant: redundant)
    }

    /// Why R cannot apply to `layers` on `worldSize` ranks, if it cannot: a rank never needs more
    /// slots than the layer has experts, so E + n·R ≤ n·E for every group of n ranks.
    package func problem(layers: [LayerConfiguration], worldSize: Int) -> String? {
        for (index, layer) in layers.enumerated() where !layer.dense {
            let placement = ExpertPlacement(experts: layer.experts, worldSize: worldSize)
            for group in 0..<placement.groupCount {
                let ranks = placement.ranks(ofGroup: group).count
                if slotsPerRank(experts: layer.experts, ranks: ranks) > layer.experts {
                    let most = (ranks * layer.experts - layer.experts) / ranks
                    return "--redundant-experts \(redundant): layer \(index) has \(layer.experts) experts on a group of \(ranks) ranks, "
                        + "so at most \(most) redundant slots per rank fit (a rank would hold more slots than there are experts)"
                }
            }
        }
        return nil
    }
}

/// A placement change the planner decided: layer `layer`'s group `group` goes from `old` to
/// `new` after the step it was decided at. `before`/`after` are the predicted max/mean rank
/// loads under the load that decided it.
package struct PlacementChange: Equatable, Sendable {
    package let layer: Int
    package let group: Int
    package let old: ExpertSlots
    package let new: ExpertSlots
    package let before: Double
    package let after: Double

    /// Slots that need an expert their rank does not hold now (what a migration sends).
    package var movedSlots: [(rank: Int, slot: Int)] {
        new.slots.indices.flatMap { rank in
            new.slots[rank].indices.filter { !old.slots[rank].contains(new.slots[rank][$0]) }.map { (rank, $0) }
        }
    }
}

/// The placement policy's memory across steps: every layer's placement per group and the moving
/// average of each expert's load there. Pure and deterministic: the coordinator and the
/// reference feed it the same counts in the same order and get the same placements.
package struct PlacementPlanner: Sendable {
    package let policy: PlacementPolicy
    package let layers: [LayerConfiguration]
    /// Each layer's groups over the world.
    package let placements: [ExpertPlacement]
    /// Node of every world rank (the node-aware variant), nil when unknown.
    private let nodeOfRank: [Int]?
    /// `slots[l][g]`: layer l's placement in group g now.
    package private(set) var slots: [[ExpertSlots]]
    /// `load[l][g]`: the moving average of the rows each expert kept from group g's ranks — the
    /// rows its replicas compute. (Routes before drops would over-replicate an expert whose
    /// capacity already caps it; in a dropless layer the two are the same.)
    private var load: [[[Double]]?]

    package init(policy: PlacementPolicy, layers: [LayerConfiguration], worldSize: Int, nodeOfRank: [Int]? = nil) {
        self.policy = policy
        self.layers = layers
        self.nodeOfRank = nodeOfRank
        placements = layers.map { ExpertPlacement(experts: $0.experts, worldSize: worldSize) }
        load = Array(repeating: nil, count: layers.count)
        slots = []
        slots = layers.indices.map { index in
            (0..<placements[index].groupCount).map { initialSlots(layer: index, group: $0) }
        }
    }

    /// The first placement: contiguous blocks without redundant slots (dense layers too), else
    /// EPLB for uniform load.
    private func initialSlots(layer index: Int, group: Int) -> ExpertSlots {
        let placement = placements[index]
        guard policy.redundant > 0, !layers[index].dense else { return ExpertSlots(placement.blocks(ofGroup: group)) }
        return plan(load: [Double](repeating: 1, count: layers[index].experts), layer: index, group: group)
    }

    /// The EPLB placement of one group for `load`, its slots ordered to keep what each rank
    /// already holds where it is (fewest slots to fill).
    private func plan(load: [Double], layer index: Int, group: Int) -> ExpertSlots {
        let ranks = placements[index].ranks(ofGroup: group)
        let nodes = policy.kind == .balancedNode ? nodeOfRank.map { nodeOf in ranks.map { nodeOf[$0] } } : nil
        let balanced = ReplicaPlacement.balanced(load: load, ranks: ranks.count, redundant: policy.redundant, nodeOfRank: nodes)
        let current = slots.indices.contains(index) ? slots[index][group].slots : nil
        let ordered = balanced.slots.indices.map { rank in
            Self.keepingPositions(of: current?[rank] ?? [], new: balanced.slots[rank].sorted())
        }
        return try! ExpertSlots(experts: layers[index].experts, slots: ordered)  // every expert has a replica by construction
    }

    /// `new`'s experts ordered so that an expert `old` held at slot j stays at slot j when
    /// there is one; the rest fill the free slots in ascending order.
    static func keepingPositions(of old: [Int], new: [Int]) -> [Int] {
        var remaining = new
        var result = [Int?](repeating: nil, count: new.count)
        for (slot, expert) in old.enumerated() where slot < new.count {
            if let index = remaining.firstIndex(of: expert) {
                result[slot] = expert
                remaining.remove(at: index)
            }
        }
        var rest = remaining.makeIterator()
        return result.map { $0 ?? rest.next()! }
    }

    /// Slots per rank a layer's group may ever use (the dispatcher's header bound).
    package func maxSlotsPerRank(layer index: Int, group: Int) -> Int {
        policy.slotsPerRank(experts: layers[index].experts, ranks: placements[index].ranks(ofGroup: group).count)
    }

    /// Takes changes another rank's planner decided (ranks that do not plan, `PlacementChangeCodec`).
    package mutating func apply(_ changes: [PlacementChange]) {
        for change in changes { slots[change.layer][change.group] = change.new }
    }

    /// Records step `step`'s counts (`counts[l]`, `kept[s]` per world rank s; 0-based step) and
    /// returns the placement changes to apply before the next step (none unless the policy
    /// re-places, `(step + 1)` is a multiple of K and `replan` — false after the last step,
    /// when a change would only cost a migration).
    package mutating func record(step: Int, _ counts: [LayerRoutingCounts], replan: Bool = true) -> [PlacementChange] {
        precondition(counts.count == layers.count)
        guard policy.kind != .static else { return [] }
        var changes: [PlacementChange] = []
        let due = replan && (step + 1) % policy.rebalanceEvery == 0
        for (index, layerCounts) in counts.enumerated() where !layers[index].dense {
            let placement = placements[index]
            let newest = (0..<placement.groupCount).map { group in
                placement.ranks(ofGroup: group).reduce(into: [Double](repeating: 0, count: layers[index].experts)) { sum, source in
                    for (expert, rows) in layerCounts.kept[source].enumerated() { sum[expert] += Double(rows) }
                }
            }
            let smoothing = PlacementPolicy.smoothing
            let average = load[index].map { old in
                zip(old, newest).map { zip($0, $1).map { (1 - smoothing) * $0 + smoothing * $1 } }
            } ?? newest
            load[index] = average
            guard due else { continue }
            for group in 0..<placement.groupCount {
                let current = slots[index][group]
                let candidate = plan(load: average[group], layer: index, group: group)
                let before = current.imbalance(average[group]), after = candidate.imbalance(average[group])
                guard candidate != current, before - after > policy.threshold * before else { continue }
                changes.append(PlacementChange(layer: index, group: group, old: current, new: candidate, before: before, after: after))
                slots[index][group] = candidate
            }
        }
        return changes
    }
}

/// Placement changes on the wire (the coordinator's broadcast): Doubles, exact for the small
/// integers they carry. Layout: [changes, then per change: layer, group, before, after, ranks,
/// then per rank: slots, experts...].
package enum PlacementChangeCodec {
    package static func encode(_ changes: [PlacementChange]) -> [Double] {
        var values = [Double(changes.count)]
        for change in changes {
            values += [Double(change.layer), Double(change.group), change.before, change.after, Double(change.new.ranks)]
            for held in change.new.slots { values += [Double(held.count)] + held.map(Double.init) }
        }
        return values
    }

    /// Decodes against the placements the receiver holds now (`current[l][g]`), which give each
    /// change its old side; nil when the values are not a valid list of changes.
    package static func decode(_ values: ArraySlice<Double>, current: [[ExpertSlots]]) -> [PlacementChange]? {
        var cursor = values.startIndex
        func next() -> Int? {
            guard cursor < values.endIndex, values[cursor] >= 0, values[cursor] == values[cursor].rounded(), values[cursor] < 1e9 else { return nil }
            defer { cursor += 1 }
            return Int(values[cursor])
        }
        guard let count = next() else { return nil }
        var changes: [PlacementChange] = []
        for _ in 0..<count {
            guard let layer = next(), let group = next(), current.indices.contains(layer), current[layer].indices.contains(group),
                  cursor + 2 <= values.endIndex else { return nil }
            let before = values[cursor], after = values[cursor + 1]
            cursor += 2
            guard let ranks = next(), ranks == current[layer][group].ranks else { return nil }
            var slots: [[Int]] = []
            for _ in 0..<ranks {
                guard let held = next(), held <= 1 << 20 else { return nil }
                var experts: [Int] = []
                for _ in 0..<held {
                    guard let expert = next() else { return nil }
                    experts.append(expert)
                }
                slots.append(experts)
            }
            let old = current[layer][group]
            guard let new = try? ExpertSlots(experts: old.experts, slots: slots) else { return nil }
            changes.append(PlacementChange(layer: layer, group: group, old: old, new: new, before: before, after: after))
        }
        return cursor == values.endIndex ? changes : nil
    }
}
