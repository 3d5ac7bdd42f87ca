/// The all-to-all schedules the cost model knows. `flat` is `linear` and `mpi` (every message
/// posted at once); `pairwise` runs G−1 steps one after another; `hierarchical` is the
/// two-stage exchange.
public enum ModeledSchedule: String, CaseIterable, Sendable {
    case flat
    case pairwise
    case hierarchical
}

/// Which resource a stage of an exchange spends its time on.
public enum CostResource: String, Sendable {
    case intraNode = "intra-node"
    case interNode = "inter-node"
    case memory
}

/// One stage of a predicted exchange: the busiest rank's messages and bytes on one resource, and
/// the stage's time.
public struct StageCost: Equatable, Sendable {
    public var name: String
    public var resource: CostResource
    /// Most messages any rank sends in this stage (for inter-node stages: any node's link
    /// carries `messages` transfers; see `busiestLinkTransfers`).
    public var messagesPerRank: Int
    /// Most bytes any rank sends (or copies) in this stage.
    public var bytesPerRank: Int
    /// Transfers on the busiest node link (inter-node stages), 0 otherwise.
    public var busiestLinkTransfers: Int
    /// Seconds.
    public var seconds: Double
}

/// A prediction: its stages and their total (stages run one after another, except where
/// noted in the stage name).
public struct CostPrediction: Equatable, Sendable {
    public var schedule: ModeledSchedule
    public var stages: [StageCost]
    /// Seconds for the whole exchange.
    public var seconds: Double
}

/// Bytes each rank sends each rank: `bytes[s][d]`, over a topology's world ranks.
public struct TrafficMatrix: Equatable, Sendable {
    public let bytes: [[Int]]

    public init(bytes: [[Int]]) {
        precondition(bytes.allSatisfy { $0.count == bytes.count && $0.allSatisfy { $0 >= 0 } })
        self.bytes = bytes
    }

    /// Every rank sends `bytesPerPeer` to every rank (itself included).
    public static func uniform(ranks: Int, bytesPerPeer: Int) -> TrafficMatrix {
        TrafficMatrix(bytes: [[Int]](repeating: [Int](repeating: bytesPerPeer, count: ranks), count: ranks))
    }

    public var ranks: Int { bytes.count }
}

/// The alpha-beta (Hockney) cost of an all-to-all on a topology, with shared node links
/// (formulas and their derivation: `docs/COST_MODEL.md`).
///
/// A message of b bytes over a link class costs α + b/B (α = latency, B = bandwidth). Intra-node
/// messages cost their sender (and receiver) α_s + b/B_s and do not contend across ranks.
/// Inter-node: every node has one uplink and one downlink shared by its ranks; each transfer
/// occupies the sender node's uplink and the receiver node's downlink for α_n + b/B_n, so a
/// node's transfers serialise — exactly what the link simulation (`--simulate-links`) enforces.
/// Local copies (self-rows, packing) cost b/γ with γ the memory-copy bandwidth.
public struct CostModel: Sendable {
    public let topology: Topology
    /// Memory-copy bandwidth γ in GB/s (10^9 bytes/s) for packing and local copies.
    public var copyBandwidthGigabytesPerSecond: Double

    /// shared/FACTS.md: memcpy ~56 GB/s per core in cache, ~18 GB/s from DRAM; 20 GB/s is the
    /// out-of-cache figure rounded up, since exchanges of interest do not fit in cache.
    public static let defaultCopyBandwidth = 20.0

    public init(topology: Topology, copyBandwidthGigabytesPerSecond: Double = CostModel.defaultCopyBandwidth) {
        self.topology = topology
        self.copyBandwidthGigabytesPerSecond = copyBandwidthGigabytesPerSecond
    }

    private var intra: (alpha: Double, beta: Double) {
        (topology.intraNode.latencyMicroseconds * 1e-6, 1 / (topology.intraNode.bandwidthGigabytesPerSecond * 1e9))
    }
    private var inter: (alpha: Double, beta: Double) {
        (topology.interNode.latencyMicroseconds * 1e-6, 1 / (topology.interNode.bandwidthGigabytesPerSecond * 1e9))
    }
    private var gamma: Double { 1 / (copyBandwidthGigabytesPerSecond * 1e9) }

    /// Predicts `schedule` on `traffic` (whose ranks are the topology's world ranks).
    public func predict(_ schedule: ModeledSchedule, traffic: TrafficMatrix) -> CostPrediction {
        precondition(traffic.ranks == topology.worldSize, "traffic for \(traffic.ranks) ranks on a topology of \(topology.worldSize)")
        switch schedule {
        case .flat: return flat(traffic)
        case .pairwise: return pairwise(traffic)
        case .hierarchical: return hierarchical(traffic)
        }
    }

    /// Transfers `(source, destination, bytes)` that run concurrently, as one or two stages:
    /// per rank the intra-node messages, per node link the inter-node transfers.
    private func concurrent(_ transfers: [(Int, Int, Int)], name: String) -> (intra: StageCost, inter: StageCost) {
        let ranks = topology.worldSize
        var intraSend = [Double](repeating: 0, count: ranks), intraReceive = intraSend
        var intraMessages = [Int](repeating: 0, count: ranks), intraBytes = intraMessages
        var interMessages = [Int](repeating: 0, count: ranks), interBytes = interMessages
        var uplink = [Double](repeating: 0, count: topology.nodes.count), downlink = uplink
        var upCount = [Int](repeating: 0, count: topology.nodes.count), downCount = upCount
        for (source, destination, bytes) in transfers where bytes > 0 && source != destination {
            let from = topology.nodeOfRank[source], to = topology.nodeOfRank[destination]
            if from == to {
                let cost = intra.alpha + Double(bytes) * intra.beta
                intraSend[source] += cost
                intraReceive[destination] += cost
                intraMessages[source] += 1
                intraBytes[source] += bytes
            } else {
                let cost = inter.alpha + Double(bytes) * inter.beta
                uplink[from] += cost
                downlink[to] += cost
                upCount[from] += 1
                downCount[to] += 1
                interMessages[source] += 1
                interBytes[source] += bytes
            }
        }
        let intraStage = StageCost(name: name, resource: .intraNode, messagesPerRank: intraMessages.max() ?? 0,
                                   bytesPerRank: intraBytes.max() ?? 0, busiestLinkTransfers: 0,
                                   seconds: max(intraSend.max() ?? 0, intraReceive.max() ?? 0))
        let interStage = StageCost(name: name, resource: .interNode, messagesPerRank: interMessages.max() ?? 0,
                                   bytesPerRank: interBytes.max() ?? 0, busiestLinkTransfers: max(upCount.max() ?? 0, downCount.max() ?? 0),
                                   seconds: max(uplink.max() ?? 0, downlink.max() ?? 0))
        return (intraStage, interStage)
    }

    private func copyStage(_ name: String, bytesPerRank: [Int]) -> StageCost {
        let most = bytesPerRank.max() ?? 0
        return StageCost(name: name, resource: .memory, messagesPerRank: 0, bytesPerRank: most, busiestLinkTransfers: 0,
                         seconds: Double(most) * gamma)
    }

    /// Flat: every message posted at once; intra-node messages and node links run concurrently,
    /// so the exchange takes the longer of the two, plus the self copy.
    private func flat(_ traffic: TrafficMatrix) -> CostPrediction {
        let ranks = traffic.ranks
        var transfers: [(Int, Int, Int)] = []
        for s in 0..<ranks { for d in 0..<ranks { transfers.append((s, d, traffic.bytes[s][d])) } }
        let (intraStage, interStage) = concurrent(transfers, name: "exchange (concurrent)")
        let selfCopy = copyStage("self copy", bytesPerRank: (0..<ranks).map { traffic.bytes[$0][$0] })
        return CostPrediction(schedule: .flat, stages: [intraStage, interStage, selfCopy],
                              seconds: max(intraStage.seconds, interStage.seconds) + selfCopy.seconds)
    }

    /// Pairwise: G−1 steps in sequence; step i's messages (r → r+i) run concurrently.
    private func pairwise(_ traffic: TrafficMatrix) -> CostPrediction {
        let ranks = traffic.ranks
        let selfCopy = copyStage("self copy", bytesPerRank: (0..<ranks).map { traffic.bytes[$0][$0] })
        var intraTotal = StageCost(name: "steps 1..G-1, intra-node part", resource: .intraNode, messagesPerRank: 0, bytesPerRank: 0, busiestLinkTransfers: 0, seconds: 0)
        var interTotal = StageCost(name: "steps 1..G-1, inter-node part", resource: .interNode, messagesPerRank: 0, bytesPerRank: 0, busiestLinkTransfers: 0, seconds: 0)
        var seconds = selfCopy.seconds
        for step in 1..<max(ranks, 1) {
            let transfers = (0..<ranks).map { r in (r, (r + step) % ranks, traffic.bytes[r][(r + step) % ranks]) }
            let (intraStage, interStage) = concurrent(transfers, name: "step \(step)")
            // Within a step a rank's one intra message and the node links overlap; the step
            // ends when the slowest finishes. Stage records attribute each step to its bottleneck.
            let stepSeconds = max(intraStage.seconds, interStage.seconds)
            seconds += stepSeconds
            if interStage.seconds >= intraStage.seconds {
                interTotal.seconds += stepSeconds
            } else {
                intraTotal.seconds += stepSeconds
            }
            intraTotal.messagesPerRank += intraStage.messagesPerRank
            intraTotal.bytesPerRank += intraStage.bytesPerRank
            interTotal.messagesPerRank += interStage.messagesPerRank
            interTotal.bytesPerRank += interStage.bytesPerRank
            interTotal.busiestLinkTransfers += interStage.busiestLinkTransfers
        }
        return CostPrediction(schedule: .pairwise, stages: [intraTotal, interTotal, selfCopy], seconds: seconds)
    }

    /// Hierarchical: counts (intra), stage 1 (intra, to the local delegates), pack, stage 2
    /// (inter, one aggregated message per delegate and destination), pack and final copy — in
    /// sequence. Delegates as in `HierarchicalAllToAll`: destination d's delegate in node n is
    /// the node's rank at position `localRank(d) mod |n|`.
    private func hierarchical(_ traffic: TrafficMatrix) -> CostPrediction {
        let ranks = traffic.ranks
        let members = topology.nodes.map { $0.ranks.sorted() }
        var position = [Int](repeating: 0, count: ranks)
        for node in members { for (index, rank) in node.enumerated() { position[rank] = index } }
        func delegate(node: Int, destination: Int) -> Int { members[node][position[destination] % members[node].count] }

        var countTransfers: [(Int, Int, Int)] = []
        var stage1: [(Int, Int, Int)] = []
        var pack1 = [Int](repeating: 0, count: ranks)
        // carried[j][d]: bytes delegate j holds for destination d after stage 1.
        var carried = [[Int]](repeating: [Int](repeating: 0, count: ranks), count: ranks)
        for (nodeIndex, node) in members.enumerated() {
            for source in node {
                var toDelegate = [Int: Int]()
                for destination in 0..<ranks {
                    let agent = delegate(node: nodeIndex, destination: destination)
                    toDelegate[agent, default: 0] += traffic.bytes[source][destination]
                    carried[agent][destination] += traffic.bytes[source][destination]
                }
                for agent in node where agent != source {
                    let served = (0..<ranks).filter { delegate(node: nodeIndex, destination: $0) == agent }.count
                    countTransfers.append((source, agent, served * MemoryLayout<Int>.stride))
                    stage1.append((source, agent, toDelegate[agent] ?? 0))
                    pack1[source] += toDelegate[agent] ?? 0
                }
            }
        }
        var stage2: [(Int, Int, Int)] = []
        var pack2 = [Int](repeating: 0, count: ranks)
        for agent in 0..<ranks {
            for destination in 0..<ranks where carried[agent][destination] > 0 {
                // A delegate's own destination is a local copy; the rest are inter-node messages.
                pack2[agent] += carried[agent][destination]
                if destination != agent { stage2.append((agent, destination, carried[agent][destination])) }
            }
        }
        let counts = concurrent(countTransfers, name: "0: counts to local delegates").intra
        let first = concurrent(stage1, name: "1: blocks to local delegates").intra
        let packFirst = copyStage("pack for stage 1", bytesPerRank: pack1)
        let second = concurrent(stage2, name: "2: one message per node pair").inter
        let packSecond = copyStage("pack for stage 2 and final copy", bytesPerRank: pack2)
        let stages = [counts, packFirst, first, packSecond, second]
        return CostPrediction(schedule: .hierarchical, stages: stages, seconds: stages.reduce(0) { $0 + $1.seconds })
    }
}

extension CostModel {
    /// The closed forms for uniform traffic (m bytes to every peer) on N nodes of L consecutive
    /// ranks (`docs/COST_MODEL.md`), cheap for any cluster size (used by `moe-bench project`):
    ///
    /// - flat:         max((L−1)(α_s + m/B_s), L²(N−1)(α_n + m/B_n)) + m/γ
    /// - hierarchical: (L−1)(α_s + 8N/B_s) + (L−1)(α_s + N·m/B_s) + (L−1)N·m/γ
    ///                 + L(N−1)(α_n + L·m/B_n) + N·L·m/γ
    public static func uniformSeconds(
        _ schedule: ModeledSchedule, nodes: Int, ranksPerNode: Int, bytesPerPeer: Int,
        intraNode: LinkCost, interNode: LinkCost, copyBandwidthGigabytesPerSecond: Double = defaultCopyBandwidth
    ) -> Double {
        let n = Double(nodes), l = Double(ranksPerNode), m = Double(bytesPerPeer)
        let alphaS = intraNode.latencyMicroseconds * 1e-6, betaS = 1 / (intraNode.bandwidthGigabytesPerSecond * 1e9)
        let alphaN = interNode.latencyMicroseconds * 1e-6, betaN = 1 / (interNode.bandwidthGigabytesPerSecond * 1e9)
        let gamma = 1 / (copyBandwidthGigabytesPerSecond * 1e9)
        let intraSteps = l - 1
        switch schedule {
        case .flat:
            let intraPart = intraSteps * (alphaS + m * betaS)
            let interPart = nodes > 1 ? l * l * (n - 1) * (alphaN + m * betaN) : 0
            return max(intraPart, interPart) + m * gamma
        case .hierarchical:
            let counts = intraSteps * (alphaS + 8 * n * betaS)
            let first = intraSteps * (alphaS + n * m * betaS) + intraSteps * n * m * gamma
            let second = (nodes > 1 ? l * (n - 1) * (alphaN + l * m * betaN) : 0) + n * l * m * gamma
            return counts + first + second
        case .pairwise:
            // Step i: rank r sends to r+i; count, per node, the ranks whose partner is off-node.
            let ranks = nodes * ranksPerNode
            var total = m * gamma
            for step in 1..<max(ranks, 1) {
                var offNode = 0, onNode = false
                for rank in 0..<ranksPerNode {  // node 0; every node sees the same pattern
                    if ((rank + step) % ranks) / ranksPerNode == 0 { onNode = true } else { offNode += 1 }
                }
                total += max(onNode ? alphaS + m * betaS : 0, Double(offNode) * (alphaN + m * betaN))
            }
            return total
        }
    }

    /// The smallest per-peer size in `sizes` (ascending) from which `schedule` is no faster than
    /// `baseline`, or nil if it stays faster over all of them. With `schedule` hierarchical and
    /// `baseline` flat this is the crossover size.
    public static func crossover(sizes: [Int], faster: (Int) -> Double, baseline: (Int) -> Double) -> Int? {
        sizes.first { faster($0) >= baseline($0) }
    }
}
