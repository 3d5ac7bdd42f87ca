import ClusterTopology
import MessagePassing

/// The two-stage (hierarchical) all-to-all of DeepSpeed-MoE and Tutel: first inside each node,
/// then between nodes among ranks with the same local index, so that each rank sends
/// (L−1) + (N−1) data messages instead of G−1 (N nodes of L ranks), at about twice the bytes.
///
/// With nodes n (their ranks `members[n]` ascending) and local index i(d) of rank d in its node,
/// the **delegate** of destination d in node n is `members[n][i(d) mod |members[n]|]` — with
/// equal node sizes, simply the rank of node n with d's local index.
///
/// 0. Counts, ahead of the data: every rank sends each rank of its node the row counts of the
///    blocks it will hand it (one small message per local peer, intra-node only).
/// 1. Intra-node: every rank hands each local delegate the blocks for the destinations it
///    delegates, in destination order (for its own node's ranks the delegate is the destination
///    itself, so intra-node traffic is finished here).
/// 2. Inter-node: each delegate sends every destination it serves one aggregated message: the
///    blocks of all of its node's ranks for that destination, in source order.
/// 3. Reorder: a node's blocks arrive in source order, so when a node's ranks are consecutive
///    the message lands straight in the receive buffer; otherwise it is staged and scattered.
///
/// Nodes of unequal size work (a small node's ranks delegate for several local indices; a
/// delegate then sends more than one message to a large node); the result is always exactly the
/// flat exchange's. Receives of stage 2 are posted before stage 1 starts, since their sizes are
/// known from the layout.
@MainActor
public final class HierarchicalAllToAll: AllToAll {
    public let transport: ExchangeTransport
    public var algorithm: AllToAllAlgorithm { .hierarchical }
    public var modeledSchedule: ModeledSchedule { .hierarchical }
    public let nodes: ExchangeNodes
    private let requests: TransportRequests
    private let stage2Requests: TransportRequests
    static let countTag = 7301
    static let stage1Tag = 7302
    static let stage2Tag = 7303

    /// This rank's node's ranks, ascending.
    private let localRanks: [Int]
    /// `delegated[j]`: the destinations local rank `localRanks[j]` delegates for this node, ascending.
    private let delegated: [[Int]]
    /// Position of this rank in `localRanks`.
    private let localIndex: Int
    /// For every node (as in `nodes.members`): its ranks and the delegate that serves this rank.
    private let sourceNodes: [(ranks: [Int], delegate: Int, consecutive: Bool)]

    // Reused buffers.
    private var countSend: [Int] = []
    private var countReceive: [Int] = []
    private var stage1Send: [UInt8] = []
    private var stage1Receive: [UInt8] = []
    private var stage2Send: [UInt8] = []
    private var staging: [UInt8] = []

    public init(transport: ExchangeTransport, nodes: ExchangeNodes) {
        let communicator = transport.communicator
        precondition(nodes.nodeOfRank.count == communicator.size)
        self.transport = transport
        self.nodes = nodes
        let members = nodes.members
        let here = communicator.rank
        let myNode = members.firstIndex { $0.contains(here) }!
        localRanks = members[myNode]
        localIndex = localRanks.firstIndex(of: here)!
        var indexInNode = [Int](repeating: 0, count: communicator.size)
        for ranks in members { for (position, rank) in ranks.enumerated() { indexInNode[rank] = position } }
        func delegate(in ranks: [Int], for destination: Int) -> Int { ranks[indexInNode[destination] % ranks.count] }
        var delegated = [[Int]](repeating: [], count: localRanks.count)
        for destination in 0..<communicator.size {
            let agent = delegate(in: localRanks, for: destination)
            delegated[localRanks.firstIndex(of: agent)!].append(destination)
        }
        self.delegated = delegated
        sourceNodes = members.map { ranks in
            (ranks, delegate(in: ranks, for: here), zip(ranks, ranks.dropFirst()).allSatisfy { $1 == $0 + 1 })
        }
        requests = transport.makeRequests(capacity: 2 * communicator.size)
        stage2Requests = transport.makeRequests(capacity: 2 * communicator.size)
    }

    private static func grow<T: Numeric>(_ buffer: inout [T], to count: Int) {
        if buffer.count < count { buffer = [T](repeating: 0, count: count) }
    }

    public func exchange(
        send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int
    ) throws(ExchangeError) {
        try validate(send: send, receive: receive, layout: layout, rowBytes: rowBytes)
        do { try run(send: send, receive: receive, layout: layout, rowBytes: rowBytes) } catch let error as MPIError {
            throw .mpi(error)
        } catch {
            preconditionFailure("only MPI calls throw here: \(error)")
        }
    }

    private func run(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int) throws {
        let here = communicator.rank
        let served = delegated[localIndex]  // destinations this rank delegates for
        let localCount = localRanks.count

        // Stage 2 receives: from each node's delegate for this rank, that node's blocks in
        // source order. Sizes are known from the layout, so they are posted first.
        var stagingOffsets: [Int?] = []
        var stagingRows = 0
        for node in sourceNodes {
            let rows = node.ranks.reduce(0) { $0 + layout.receiveCounts[$1] }
            if node.delegate == here || rows == 0 || node.consecutive {
                stagingOffsets.append(nil)
            } else {
                stagingOffsets.append(stagingRows)
                stagingRows += rows
            }
        }
        Self.grow(&staging, to: stagingRows * rowBytes)
        try staging.withUnsafeMutableBytes { (stage: UnsafeMutableRawBufferPointer) in
            for (index, node) in sourceNodes.enumerated() where node.delegate != here {
                let rows = node.ranks.reduce(0) { $0 + layout.receiveCounts[$1] }
                guard rows > 0 else { continue }
                let target = stagingOffsets[index].map { stage.baseAddress! + $0 * rowBytes }
                    ?? receive.baseAddress! + layout.receiveDisplacements[node.ranks[0]] * rowBytes
                try transport.postReceive(target, rows: rows, rowBytes: rowBytes, from: node.delegate,
                                                    tag: Self.stage2Tag, into: stage2Requests)
            }
        }

        // Stage 0: counts to each local delegate (for the destinations it serves).
        Self.grow(&countSend, to: communicator.size)
        Self.grow(&countReceive, to: localCount * served.count)
        var countOffsets: [Int] = []
        var cursor = 0
        for destinations in delegated {
            countOffsets.append(cursor)
            for destination in destinations { countSend[cursor] = layout.sendCounts[destination]; cursor += 1 }
        }
        try countSend.withUnsafeBytes { (counts: UnsafeRawBufferPointer) in
            try countReceive.withUnsafeMutableBytes { (replies: UnsafeMutableRawBufferPointer) in
                let intBytes = MemoryLayout<Int>.stride
                for (j, peer) in localRanks.enumerated() where peer != here && !served.isEmpty {
                    try transport.postReceive(replies.baseAddress! + j * served.count * intBytes, rows: served.count, rowBytes: intBytes,
                                                        from: peer, tag: Self.countTag, into: requests)
                }
                for (j, peer) in localRanks.enumerated() where peer != here && !delegated[j].isEmpty {
                    try transport.postSend(counts.baseAddress! + countOffsets[j] * intBytes, rows: delegated[j].count, rowBytes: intBytes,
                                                     to: peer, tag: Self.countTag, into: requests)
                }
                try transport.wait(requests)
            }
        }
        for (position, destination) in served.enumerated() { countReceive[localIndex * served.count + position] = layout.sendCounts[destination] }

        // Stage 1: blocks to each local delegate, packed in destination order; from each local
        // source, its blocks for the destinations this rank serves (source-major).
        var sendRowsTo = [Int](repeating: 0, count: localCount)
        var sendOffsetTo = [Int](repeating: 0, count: localCount)
        var packedRows = 0
        for (j, destinations) in delegated.enumerated() where j != localIndex {
            sendOffsetTo[j] = packedRows
            sendRowsTo[j] = destinations.reduce(0) { $0 + layout.sendCounts[$1] }
            packedRows += sendRowsTo[j]
        }
        var receiveRowsFrom = [Int](repeating: 0, count: localCount)
        var receiveOffsetFrom = [Int](repeating: 0, count: localCount)
        var receivedRows = 0
        for j in 0..<localCount where j != localIndex {
            receiveOffsetFrom[j] = receivedRows
            receiveRowsFrom[j] = countReceive[j * served.count..<(j + 1) * served.count].reduce(0, +)
            receivedRows += receiveRowsFrom[j]
        }
        Self.grow(&stage1Send, to: packedRows * rowBytes)
        Self.grow(&stage1Receive, to: receivedRows * rowBytes)
        try stage1Send.withUnsafeMutableBytes { (packed: UnsafeMutableRawBufferPointer) in
            for (j, destinations) in delegated.enumerated() where j != localIndex {
                var offset = sendOffsetTo[j] * rowBytes
                for destination in destinations {
                    let bytes = layout.sendCounts[destination] * rowBytes
                    guard bytes > 0 else { continue }
                    (packed.baseAddress! + offset).copyMemory(from: send.baseAddress! + layout.sendDisplacements[destination] * rowBytes, byteCount: bytes)
                    offset += bytes
                }
            }
            try stage1Receive.withUnsafeMutableBytes { (incoming: UnsafeMutableRawBufferPointer) in
                for (j, peer) in localRanks.enumerated() where peer != here && receiveRowsFrom[j] > 0 {
                    try transport.postReceive(incoming.baseAddress! + receiveOffsetFrom[j] * rowBytes, rows: receiveRowsFrom[j],
                                                        rowBytes: rowBytes, from: peer, tag: Self.stage1Tag, into: requests)
                }
                for (j, peer) in localRanks.enumerated() where peer != here && sendRowsTo[j] > 0 {
                    try transport.postSend(packed.baseAddress! + sendOffsetTo[j] * rowBytes, rows: sendRowsTo[j],
                                                     rowBytes: rowBytes, to: peer, tag: Self.stage1Tag, into: requests)
                }
                try transport.wait(requests)
            }
        }

        // Stage 2: for each served destination, its node's blocks in source order. Blocks from
        // this rank itself come straight from `send`; the destination `here` is a local copy.
        // blockStart[j][p]: offset (rows) of local source j's block for served[p] in stage1Receive.
        var blockStart = [[Int]](repeating: [], count: localCount)
        for j in 0..<localCount where j != localIndex {
            var offset = receiveOffsetFrom[j]
            blockStart[j] = (0..<served.count).map { position in
                defer { offset += countReceive[j * served.count + position] }
                return offset
            }
        }
        var messageRows = [Int](repeating: 0, count: served.count)
        var messageOffset = [Int](repeating: 0, count: served.count)
        var totalRows = 0
        for (position, destination) in served.enumerated() where destination != here {
            messageOffset[position] = totalRows
            messageRows[position] = (0..<localCount).reduce(0) { $0 + countReceive[$1 * served.count + position] }
            totalRows += messageRows[position]
        }
        Self.grow(&stage2Send, to: totalRows * rowBytes)
        try stage1Receive.withUnsafeBytes { (incoming: UnsafeRawBufferPointer) in
            func block(from j: Int, position: Int) -> UnsafeRawPointer {
                j == localIndex
                    ? send.baseAddress! + layout.sendDisplacements[served[position]] * rowBytes
                    : incoming.baseAddress! + blockStart[j][position] * rowBytes
            }
            try stage2Send.withUnsafeMutableBytes { (outgoing: UnsafeMutableRawBufferPointer) in
                for (position, destination) in served.enumerated() {
                    if destination == here {
                        for (j, source) in localRanks.enumerated() {
                            let bytes = countReceive[j * served.count + position] * rowBytes
                            guard bytes > 0 else { continue }
                            (receive.baseAddress! + layout.receiveDisplacements[source] * rowBytes).copyMemory(from: block(from: j, position: position), byteCount: bytes)
                        }
                        continue
                    }
                    guard messageRows[position] > 0 else { continue }
                    var offset = messageOffset[position] * rowBytes
                    for j in 0..<localCount {
                        let bytes = countReceive[j * served.count + position] * rowBytes
                        guard bytes > 0 else { continue }
                        (outgoing.baseAddress! + offset).copyMemory(from: block(from: j, position: position), byteCount: bytes)
                        offset += bytes
                    }
                    try transport.postSend(outgoing.baseAddress! + messageOffset[position] * rowBytes, rows: messageRows[position],
                                                     rowBytes: rowBytes, to: destination, tag: Self.stage2Tag, into: stage2Requests)
                }
                try transport.wait(stage2Requests)
            }
        }
        // Reorder: staged nodes (ranks not consecutive) scatter to their sources' positions.
        staging.withUnsafeBytes { stage in
            for (index, node) in sourceNodes.enumerated() {
                guard var offset = stagingOffsets[index] else { continue }
                for source in node.ranks {
                    let rows = layout.receiveCounts[source]
                    guard rows > 0 else { continue }
                    (receive.baseAddress! + layout.receiveDisplacements[source] * rowBytes)
                        .copyMemory(from: stage.baseAddress! + offset * rowBytes, byteCount: rows * rowBytes)
                    offset += rows
                }
            }
        }
    }
}
