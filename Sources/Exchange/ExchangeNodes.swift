import ClusterTopology
import MessagePassing

/// Where the ranks of one communicator live: the world rank and topology node of each of its
/// ranks. Exchanges on a sub-communicator (an expert-parallel group) use the nodes of the
/// group's members.
public struct ExchangeNodes: Equatable, Sendable {
    /// `worldRanks[r]` is the world rank of communicator rank r.
    public let worldRanks: [Int]
    /// `nodeOfRank[r]` is the topology node index of communicator rank r.
    public let nodeOfRank: [Int]
    /// Names of the topology's nodes (by node index), for reports and errors.
    public let nodeNames: [String]

    public init(worldRanks: [Int], nodeOfRank: [Int], nodeNames: [String]) {
        precondition(worldRanks.count == nodeOfRank.count)
        self.worldRanks = worldRanks
        self.nodeOfRank = nodeOfRank
        self.nodeNames = nodeNames
    }

    /// Every rank on one node (a communicator that is its own world with no topology).
    public static func singleNode(size: Int) -> ExchangeNodes {
        ExchangeNodes(worldRanks: Array(0..<size), nodeOfRank: [Int](repeating: 0, count: size), nodeNames: ["node0"])
    }

    /// The nodes of `communicator`'s members, given this process's world rank and the world
    /// topology. Collective over `communicator` (one `MPI_Allgather` of world ranks).
    @MainActor
    public static func gather(communicator: Communicator, worldRank: Int, topology: Topology) throws(MPIError) -> ExchangeNodes {
        let worldRanks = try communicator.allGather([worldRank])
        return ExchangeNodes(worldRanks: worldRanks, nodeOfRank: worldRanks.map { topology.nodeOfRank[$0] },
                             nodeNames: topology.nodes.map(\.name))
    }

    /// The communicator's ranks grouped by node, nodes ordered by their lowest rank, ranks
    /// ascending within a node.
    public var members: [[Int]] {
        var byNode: [Int: [Int]] = [:]
        var order: [Int] = []
        for (rank, node) in nodeOfRank.enumerated() {
            if byNode[node] == nil { order.append(node) }
            byNode[node, default: []].append(rank)
        }
        return order.map { byNode[$0]! }
    }

    /// True when ranks r and s are on different nodes (their messages cross a node link).
    public func crossesNodes(_ r: Int, _ s: Int) -> Bool { nodeOfRank[r] != nodeOfRank[s] }
}
