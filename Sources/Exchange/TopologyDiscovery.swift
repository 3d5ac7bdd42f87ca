import ClusterTopology
import MessagePassing

extension Topology {
    /// The nodes as MPI sees them: `MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)` on `world`, each
    /// node named after its host. Collective over `world`.
    @MainActor
    public static func discover(world: Communicator) throws -> Topology {
        let node = try world.splitBySharedMemory()
        let label = try node.allReduce(world.rank, .minimum)
        let labels = try world.allGather([label])
        let gathered = try world.gatherBytes(Array(Communicator.processorName().utf8), root: 0)
        let joined = gathered.map { $0.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "\n") } ?? ""
        let hostNames = String(decoding: try world.broadcastBytes(Array(joined.utf8), root: 0), as: UTF8.self)
            .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        return try Topology.fromSharedMemorySplit(nodeLabelOfRank: labels, hostNameOfRank: hostNames)
    }
}
