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
/// known from the layout. Nonblocking, stages 0, 1 and 2 are the exchange's stages: a test that
/// finds one complete packs and posts the next, so a delegate forwards while its rank computes.
@MainActor
public final class HierarchicalAllToAll: AllToAll {
    public let transport: ExchangeTransport
    public var algorithm: AllToAllAlgorithm { .hierarchical }
    public var modeledSchedule: ModeledSchedule { .hierarchical }
    public let nodes: ExchangeNodes
    let geometry: HierarchicalGeometry
    private lazy var operations = ChannelOperations { [transport, geometry] in
        HierarchicalExchange(transport: transport, geometry: geometry)
    }
    static let countTag = 7301
    static let stage1Tag = 7302
    static let stage2Tag = 7303

    public init(transport: ExchangeTransport, nodes: ExchangeNodes) {
        precondition(nodes.nodeOfRank.count == transport.communicator.size)
        self.transport = transport
        self.nodes = nodes
        geometry = HierarchicalGeometry(nodes: nodes, here: transport.communicator.rank, size: transport.communicator.size)
    }

    public func post(
        send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int, channel: Int
    ) throws(ExchangeError) -> any PendingExchange {
        try validate(send: send, receive: receive, layout: layout, rowBytes: rowBytes)
        let operation = operations[channel]
        do { try operation.start(send: send, receive: receive, layout: layout, rowBytes: rowBytes, channel: channel) } catch {
            throw .mpi(error)
        }
        return operation
    }
}

/// Who delegates for whom, from this rank's point of view (fixed per communicator).
struct HierarchicalGeometry {
    /// This rank's node's ranks, ascending.
    let localRanks: [Int]
    /// `delegated[j]`: the destinations local rank `localRanks[j]` delegates for this node, ascending.
    let delegated: [[Int]]
    /// Position of this rank in `localRanks`.
    let localIndex: Int
    /// For every node (as in `nodes.members`): its ranks and the delegate that serves this rank.
    let sourceNodes: [(ranks: [Int], delegate: Int, consecutive: Bool)]

    init(nodes: ExchangeNodes, here: Int, size: Int) {
        let members = nodes.members
        let myNode = members.firstIndex { $0.contains(here) }!
        localRanks = members[myNode]
        localIndex = localRanks.firstIndex(of: here)!
        var indexInNode = [Int](repeating: 0, count: size)
        for ranks in members { for (position, rank) in ranks.enumerated() { indexInNode[rank] = position } }
        func delegate(in ranks: [Int], for destination: Int) -> Int { ranks[indexInNode[destination] % ranks.count] }
        var delegated = [[Int]](repeating: [], count: localRanks.count)
        for destination in 0..<size {
            let agent = delegate(in: localRanks, for: destination)
            delegated[localRanks.firstIndex(of: agent)!].append(destination)
        }
        self.delegated = delegated
        sourceNodes = members.map { ranks in
            (ranks, delegate(in: ranks, for: here), zip(ranks, ranks.dropFirst()).allSatisfy { $1 == $0 + 1 })
        }
    }
}

/// Bytes at a fixed address for as long as an exchange is in flight; grows (between exchanges)
/// to the largest size asked, never shrinks.
@MainActor
final class PinnedBytes {
    private(set) var base: UnsafeMutableRawPointer
    private var capacity: Int

    init() {
        capacity = 64
        base = .allocate(byteCount: capacity, alignment: 64)
    }

    isolated deinit { base.deallocate() }

    /// Makes room for `bytes` (contents are not kept when it grows).
    func reserve(_ bytes: Int) {
        guard bytes > capacity else { return }
        base.deallocate()
        capacity = bytes
        base = .allocate(byteCount: capacity, alignment: 64)
    }

    /// The `index`th `Int` word.
    subscript(word index: Int) -> Int {
        get { base.load(fromByteOffset: index * MemoryLayout<Int>.stride, as: Int.self) }
        set { base.storeBytes(of: newValue, toByteOffset: index * MemoryLayout<Int>.stride, as: Int.self) }
    }
}

/// One hierarchical exchange in flight: stage 0 (counts) → 1 (to local delegates) → 2 (between
/// nodes) → reorder.
@MainActor
final class HierarchicalExchange: StagedExchange {
    private let geometry: HierarchicalGeometry
    private let countsAndStage1: TransportRequests
    private let stage2Requests: TransportRequests
    private let countSend = PinnedBytes()
    private let countReceive = PinnedBytes()
    private let stage1Send = PinnedBytes()
    private let stage1Receive = PinnedBytes()
    private let stage2Send = PinnedBytes()
    private let staging = PinnedBytes()

    private var send = UnsafeRawBufferPointer(start: nil, count: 0)
    private var receive = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    private var layout = ExchangeLayout(sendCounts: [], receiveCounts: [])!
    private var rowBytes = 0
    private var channel = 0
    /// The stage in flight: 0 counts, 1 intra-node blocks, 2 inter-node messages.
    private var stageNumber = 0
    /// Per node: where its stage-2 message is staged (rows into `staging`), or nil if it lands in place.
    private var stagingOffsets: [Int?] = []
    // Stage 1 geometry, per local rank j.
    private var receiveOffsetFrom: [Int] = []

    init(transport: ExchangeTransport, geometry: HierarchicalGeometry) {
        self.geometry = geometry
        let size = transport.communicator.size
        countsAndStage1 = transport.makeRequests(capacity: 2 * size)
        stage2Requests = transport.makeRequests(capacity: 2 * size)
        super.init(transport: transport, stage: countsAndStage1)
    }

    private var here: Int { transport.communicator.rank }
    private var served: [Int] { geometry.delegated[geometry.localIndex] }

    /// Posts the stage-2 receives and stage 0.
    func start(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int, channel: Int) throws(MPIError) {
        begin()
        self.send = send
        self.receive = receive
        self.layout = layout
        self.rowBytes = rowBytes
        self.channel = channel
        stageNumber = 0
        stage = countsAndStage1
        let localRanks = geometry.localRanks
        let served = self.served

        // Stage 2 receives: from each node's delegate for this rank, that node's blocks in
        // source order. Sizes are known from the layout, so they are posted first.
        stagingOffsets.removeAll(keepingCapacity: true)
        var stagingRows = 0
        for node in geometry.sourceNodes {
            let rows = node.ranks.reduce(0) { $0 + layout.receiveCounts[$1] }
            if node.delegate == here || rows == 0 || node.consecutive {
                stagingOffsets.append(nil)
            } else {
                stagingOffsets.append(stagingRows)
                stagingRows += rows
            }
        }
        staging.reserve(stagingRows * rowBytes)
        let stage2Tag = ExchangeChannel.tag(HierarchicalAllToAll.stage2Tag, channel: channel)
        for (index, node) in geometry.sourceNodes.enumerated() where node.delegate != here {
            let rows = node.ranks.reduce(0) { $0 + layout.receiveCounts[$1] }
            guard rows > 0 else { continue }
            let target = stagingOffsets[index].map { staging.base + $0 * rowBytes }
                ?? receive.baseAddress! + layout.receiveDisplacements[node.ranks[0]] * rowBytes
            try transport.postReceive(target, rows: rows, rowBytes: rowBytes, from: node.delegate, tag: stage2Tag, into: stage2Requests)
        }

        // Stage 0: counts to each local delegate (for the destinations it serves).
        let intBytes = MemoryLayout<Int>.stride
        countSend.reserve(transport.communicator.size * intBytes)
        countReceive.reserve(max(localRanks.count * served.count, 1) * intBytes)
        var countOffsets: [Int] = []
        var cursor = 0
        for destinations in geometry.delegated {
            countOffsets.append(cursor)
            for destination in destinations { countSend[word: cursor] = layout.sendCounts[destination]; cursor += 1 }
        }
        let countTag = ExchangeChannel.tag(HierarchicalAllToAll.countTag, channel: channel)
        for (j, peer) in localRanks.enumerated() where peer != here && !served.isEmpty {
            try transport.postReceive(countReceive.base + j * served.count * intBytes, rows: served.count, rowBytes: intBytes,
                                      from: peer, tag: countTag, into: stage)
        }
        for (j, peer) in localRanks.enumerated() where peer != here && !geometry.delegated[j].isEmpty {
            try transport.postSend(countSend.base + countOffsets[j] * intBytes, rows: geometry.delegated[j].count, rowBytes: intBytes,
                                   to: peer, tag: countTag, into: stage)
        }
    }

    override func advance() throws(MPIError) -> Bool {
        switch stageNumber {
        case 0:
            try postStage1()
            stageNumber = 1
            return true
        case 1:
            try postStage2()
            stageNumber = 2
            stage = stage2Requests
            return true
        default:
            reorder()
            return false
        }
    }

    /// Stage 1: blocks to each local delegate, packed in destination order; from each local
    /// source, its blocks for the destinations this rank serves (source-major).
    private func postStage1() throws(MPIError) {
        let localRanks = geometry.localRanks, localIndex = geometry.localIndex, served = self.served
        let localCount = localRanks.count
        for (position, destination) in served.enumerated() { countReceive[word: localIndex * served.count + position] = layout.sendCounts[destination] }
        var sendRowsTo = [Int](repeating: 0, count: localCount)
        var sendOffsetTo = [Int](repeating: 0, count: localCount)
        var packedRows = 0
        for (j, destinations) in geometry.delegated.enumerated() where j != localIndex {
            sendOffsetTo[j] = packedRows
            sendRowsTo[j] = destinations.reduce(0) { $0 + layout.sendCounts[$1] }
            packedRows += sendRowsTo[j]
        }
        var receiveRowsFrom = [Int](repeating: 0, count: localCount)
        receiveOffsetFrom = [Int](repeating: 0, count: localCount)
        var receivedRows = 0
        for j in 0..<localCount where j != localIndex {
            receiveOffsetFrom[j] = receivedRows
            receiveRowsFrom[j] = (0..<served.count).reduce(0) { $0 + countReceive[word: j * served.count + $1] }
            receivedRows += receiveRowsFrom[j]
        }
        stage1Send.reserve(packedRows * rowBytes)
        stage1Receive.reserve(receivedRows * rowBytes)
        for (j, destinations) in geometry.delegated.enumerated() where j != localIndex {
            var offset = sendOffsetTo[j] * rowBytes
            for destination in destinations {
                let bytes = layout.sendCounts[destination] * rowBytes
                guard bytes > 0 else { continue }
                (stage1Send.base + offset).copyMemory(from: send.baseAddress! + layout.sendDisplacements[destination] * rowBytes, byteCount: bytes)
                offset += bytes
            }
        }
        let tag = ExchangeChannel.tag(HierarchicalAllToAll.stage1Tag, channel: channel)
        for (j, peer) in localRanks.enumerated() where peer != here && receiveRowsFrom[j] > 0 {
            try transport.postReceive(stage1Receive.base + receiveOffsetFrom[j] * rowBytes, rows: receiveRowsFrom[j],
                                      rowBytes: rowBytes, from: peer, tag: tag, into: stage)
        }
        for (j, peer) in localRanks.enumerated() where peer != here && sendRowsTo[j] > 0 {
            try transport.postSend(stage1Send.base + sendOffsetTo[j] * rowBytes, rows: sendRowsTo[j],
                                   rowBytes: rowBytes, to: peer, tag: tag, into: stage)
        }
    }

    /// Stage 2: for each served destination, its node's blocks in source order. Blocks from
    /// this rank itself come straight from `send`; the destination `here` is a local copy.
    private func postStage2() throws(MPIError) {
        let localCount = geometry.localRanks.count, localIndex = geometry.localIndex, served = self.served
        // blockStart[j][p]: offset (rows) of local source j's block for served[p] in stage1Receive.
        var blockStart = [[Int]](repeating: [], count: localCount)
        for j in 0..<localCount where j != localIndex {
            var offset = receiveOffsetFrom[j]
            blockStart[j] = (0..<served.count).map { position in
                defer { offset += countReceive[word: j * served.count + position] }
                return offset
            }
        }
        var messageRows = [Int](repeating: 0, count: served.count)
        var messageOffset = [Int](repeating: 0, count: served.count)
        var totalRows = 0
        for (position, destination) in served.enumerated() where destination != here {
            messageOffset[position] = totalRows
            messageRows[position] = (0..<localCount).reduce(0) { $0 + countReceive[word: $1 * served.count + position] }
            totalRows += messageRows[position]
        }
        stage2Send.reserve(totalRows * rowBytes)
        func block(from j: Int, position: Int) -> UnsafeRawPointer {
            j == localIndex
                ? send.baseAddress! + layout.sendDisplacements[served[position]] * rowBytes
                : UnsafeRawPointer(stage1Receive.base + blockStart[j][position] * rowBytes)
        }
        let tag = ExchangeChannel.tag(HierarchicalAllToAll.stage2Tag, channel: channel)
        for (position, destination) in served.enumerated() {
            if destination == here {
                for (j, source) in geometry.localRanks.enumerated() {
                    let bytes = countReceive[word: j * served.count + position] * rowBytes
                    guard bytes > 0 else { continue }
                    (receive.baseAddress! + layout.receiveDisplacements[source] * rowBytes).copyMemory(from: block(from: j, position: position), byteCount: bytes)
                }
                continue
            }
            guard messageRows[position] > 0 else { continue }
            var offset = messageOffset[position] * rowBytes
            for j in 0..<localCount {
                let bytes = countReceive[word: j * served.count + position] * rowBytes
                guard bytes > 0 else { continue }
                (stage2Send.base + offset).copyMemory(from: block(from: j, position: position), byteCount: bytes)
                offset += bytes
            }
            try transport.postSend(stage2Send.base + messageOffset[position] * rowBytes, rows: messageRows[position],
                                   rowBytes: rowBytes, to: destination, tag: tag, into: stage2Requests)
        }
    }

    /// Reorder: staged nodes (ranks not consecutive) scatter to their sources' positions.
    private func reorder() {
        for (index, node) in geometry.sourceNodes.enumerated() {
            guard var offset = stagingOffsets[index] else { continue }
            for source in node.ranks {
                let rows = layout.receiveCounts[source]
                guard rows > 0 else { continue }
                (receive.baseAddress! + layout.receiveDisplacements[source] * rowBytes)
                    .copyMemory(from: staging.base + offset * rowBytes, byteCount: rows * rowBytes)
                offset += rows
            }
        }
    }
}
