/// The cost of one class of link: time to first byte and sustained bandwidth.
public struct LinkCost: Equatable, Sendable, Codable {
    /// One-way latency in microseconds (≥ 0).
    public var latencyMicroseconds: Double
    /// Bandwidth in gigabytes (10^9 bytes) per second (> 0).
    public var bandwidthGigabytesPerSecond: Double

    public init(latencyMicroseconds: Double, bandwidthGigabytesPerSecond: Double) {
        self.latencyMicroseconds = latencyMicroseconds
        self.bandwidthGigabytesPerSecond = bandwidthGigabytesPerSecond
    }

    /// Shared memory between ranks of one host, as measured on this machine
    /// (`shared/FACTS.md`: vader 0.1–0.4 µs, 8–13 GB/s).
    public static let sharedMemoryDefault = LinkCost(latencyMicroseconds: 0.3, bandwidthGigabytesPerSecond: 10)
    /// TCP between hosts, as measured between network namespaces on this machine
    /// (`shared/FACTS.md`: 6–8 µs, 2.0–2.4 GB/s).
    public static let networkDefault = LinkCost(latencyMicroseconds: 7, bandwidthGigabytesPerSecond: 2.2)
}

/// One node: a set of world ranks that share memory (a host on a cluster, a simulated node on
/// one machine).
public struct Node: Equatable, Sendable, Codable {
    public var name: String
    /// World ranks on this node, ascending. A rank's position here is its local rank.
    public var ranks: [Int]

    public init(name: String, ranks: [Int]) {
        self.name = name
        self.ranks = ranks
    }
}

/// Which world ranks form each node, and what intra- and inter-node links cost.
///
/// Invariants (checked by every constructor): at least one node; no node empty; node names
/// unique; the nodes' ranks are exactly `0..<worldSize`, each once; link costs finite with
/// latency ≥ 0 and bandwidth > 0.
public struct Topology: Equatable, Sendable {
    /// Largest link latency a topology may declare, microseconds.
    public static let latencyLimitMicroseconds = 1_000_000.0
    /// Smallest link bandwidth a topology may declare, GB/s.
    public static let bandwidthFloorGigabytesPerSecond = 0.001

    /// Where the node assignment came from.
    public enum Origin: Equatable, Sendable {
        /// A topology file (simulated nodes on one machine, or a declared cluster layout).
        case file(path: String)
        /// `MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)`: real hosts as MPI sees them.
        case sharedMemorySplit
    }

    public var name: String
    public var description: String
    public var nodes: [Node]
    public var intraNode: LinkCost
    public var interNode: LinkCost
    /// Whether runs on one machine should hold inter-node messages back by the modelled link
    /// cost by default (`links.simulate` in the file; commands' `--simulate-links` overrides).
    public var simulateLinks: Bool
    public var origin: Origin

    /// Node index of every world rank: `nodeOfRank[r]` is the node that holds rank r.
    public let nodeOfRank: [Int]
    /// Position of every world rank inside its node.
    public let localRankOfRank: [Int]

    /// Total ranks over all nodes; must equal the MPI world size.
    public var worldSize: Int { nodeOfRank.count }

    /// Builds and validates a topology. `origin` is used to name the source in errors.
    public init(
        name: String, description: String = "", nodes: [Node], intraNode: LinkCost, interNode: LinkCost,
        simulateLinks: Bool = false, origin: Origin
    ) throws(TopologyError) {
        let source = origin.sourceName
        guard !nodes.isEmpty else { throw .invalid(source: source, field: "nodes", problem: "must name at least one node") }
        var seenNames = Set<String>()
        var nodeOfRank: [Int: Int] = [:]
        var localRank: [Int: Int] = [:]
        for (index, node) in nodes.enumerated() {
            let field = "nodes[\(index)]"
            guard !node.name.isEmpty else { throw .invalid(source: source, field: "\(field).name", problem: "must not be empty") }
            guard seenNames.insert(node.name).inserted else {
                throw .invalid(source: source, field: "\(field).name", problem: "node name \"\(node.name)\" is used twice")
            }
            guard !node.ranks.isEmpty else { throw .invalid(source: source, field: "\(field).ranks", problem: "node \"\(node.name)\" has no ranks") }
            for (position, rank) in node.ranks.enumerated() {
                guard rank >= 0 else {
                    throw .invalid(source: source, field: "\(field).ranks[\(position)]", problem: "rank \(rank) is negative")
                }
                if let other = nodeOfRank[rank] {
                    throw .invalid(source: source, field: "\(field).ranks[\(position)]",
                                   problem: "rank \(rank) is listed twice (also on node \"\(nodes[other].name)\")")
                }
                nodeOfRank[rank] = index
                localRank[rank] = position
            }
        }
        let worldSize = nodeOfRank.count
        if let missing = (0..<worldSize).first(where: { nodeOfRank[$0] == nil }) {
            throw .invalid(source: source, field: "nodes",
                           problem: "rank \(missing) is missing: the nodes list \(worldSize) ranks, so they must be exactly 0...\(worldSize - 1)")
        }
        for (field, cost) in [("links.intra_node", intraNode), ("links.inter_node", interNode)] {
            guard cost.latencyMicroseconds.isFinite, cost.latencyMicroseconds >= 0 else {
                throw .invalid(source: source, field: "\(field).latency_us", problem: "must be a finite number ≥ 0, got \(cost.latencyMicroseconds)")
            }
            guard cost.bandwidthGigabytesPerSecond.isFinite, cost.bandwidthGigabytesPerSecond > 0 else {
                throw .invalid(source: source, field: "\(field).bandwidth_gb_per_s", problem: "must be a finite number > 0, got \(cost.bandwidthGigabytesPerSecond)")
            }
            // Bounded so that a simulated hold stays in seconds, not hours.
            guard cost.latencyMicroseconds <= Self.latencyLimitMicroseconds else {
                throw .invalid(source: source, field: "\(field).latency_us",
                               problem: "must be at most \(Int(Self.latencyLimitMicroseconds)) (1 s), got \(cost.latencyMicroseconds)")
            }
            guard cost.bandwidthGigabytesPerSecond >= Self.bandwidthFloorGigabytesPerSecond else {
                throw .invalid(source: source, field: "\(field).bandwidth_gb_per_s",
                               problem: "must be at least \(Self.bandwidthFloorGigabytesPerSecond) (1 MB/s), got \(cost.bandwidthGigabytesPerSecond)")
            }
        }
        self.name = name
        self.description = description
        self.nodes = nodes
        self.intraNode = intraNode
        self.interNode = interNode
        self.simulateLinks = simulateLinks
        self.origin = origin
        self.nodeOfRank = (0..<worldSize).map { nodeOfRank[$0]! }
        self.localRankOfRank = (0..<worldSize).map { localRank[$0]! }
    }

    /// Nodes as MPI found them: `hostOfRank[r]` is a node label for world rank r (for instance
    /// the lowest world rank of r's shared-memory communicator), `hostNames` names each label.
    /// Nodes are ordered by their lowest rank. Link costs take the documented defaults.
    public static func fromSharedMemorySplit(nodeLabelOfRank: [Int], hostNameOfRank: [String]) throws(TopologyError) -> Topology {
        var order: [Int] = []
        var ranksOfLabel: [Int: [Int]] = [:]
        for (rank, label) in nodeLabelOfRank.enumerated() {
            if ranksOfLabel[label] == nil { order.append(label) }
            ranksOfLabel[label, default: []].append(rank)
        }
        var usedNames = Set<String>()
        let nodes = order.map { label -> Node in
            let ranks = ranksOfLabel[label]!
            var name = hostNameOfRank[ranks[0]]
            if !usedNames.insert(name).inserted {  // two shared-memory groups on one host name
                name += "#\(ranks[0])"
                usedNames.insert(name)
            }
            return Node(name: name, ranks: ranks)
        }
        return try Topology(
            name: "mpi-shared-memory", description: "nodes found by MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)",
            nodes: nodes, intraNode: .sharedMemoryDefault, interNode: .networkDefault, origin: .sharedMemorySplit)
    }

    /// Fails unless the topology has exactly `worldSize` ranks (the job's `MPI_Comm_size`).
    public func requireWorldSize(_ worldSize: Int) throws(TopologyError) {
        guard worldSize == self.worldSize else {
            throw .rankCountMismatch(source: origin.sourceName, declared: self.worldSize, worldSize: worldSize)
        }
    }

    /// The node that holds world rank `rank`.
    public func node(ofRank rank: Int) -> Node { nodes[nodeOfRank[rank]] }

    /// Largest number of ranks on one node.
    public var largestNodeSize: Int { nodes.map(\.ranks.count).max() ?? 0 }

    /// True when every node holds the same number of ranks.
    public var hasUniformNodes: Bool { Set(nodes.map(\.ranks.count)).count == 1 }
}

extension Topology.Origin {
    /// How errors and reports name this origin.
    public var sourceName: String {
        switch self {
        case let .file(path): return path
        case .sharedMemorySplit: return "MPI shared-memory split"
        }
    }
}
