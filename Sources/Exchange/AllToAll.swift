import ClusterTopology
import MessagePassing

/// The all-to-all algorithms SwiftMoE implements. Every one delivers byte-identical results.
public enum AllToAllAlgorithm: String, CaseIterable, Sendable, Codable {
    /// The library's `MPI_Alltoallv`: the oracle every other algorithm is compared with.
    case mpi
    /// Naive flat exchange: post every receive, then every send, then wait for all.
    case linear
    /// G steps; in step i rank r sends to (r+i) mod G and receives from (r−i) mod G.
    case pairwise
    /// Two stages: inside each node, then between nodes among ranks of the same local index.
    case hierarchical

    public var summary: String {
        switch self {
        case .mpi: return "the MPI library's MPI_Alltoallv (the oracle)"
        case .linear: return "flat: post all receives, then all sends, then one waitall"
        case .pairwise: return "flat: G steps, step i sends to r+i and receives from r-i"
        case .hierarchical: return "two-stage: intra-node to the local delegate, then one message per node pair"
        }
    }
}

/// Why an exchange failed.
public enum ExchangeError: Error, Equatable, CustomStringConvertible {
    case mpi(MPIError)
    /// The buffers or layout do not fit each other (a caller bug, reported with its numbers).
    case layout(String)

    public var description: String {
        switch self {
        case let .mpi(error): return "exchange failed: \(error)"
        case let .layout(detail): return "exchange layout: \(detail)"
        }
    }
}

/// A variable-size all-to-all over one communicator.
///
/// `exchange` is collective: every rank of the communicator calls it with the same `rowBytes`,
/// and `layout.sendCounts[p]` here equals `layout.receiveCounts[here]` on rank p (use
/// `exchangeCounts` when the receiving side does not know its counts). Rows from rank p arrive
/// at `layout.receiveDisplacements[p]`, in the order p packed them. Rows sent to oneself are a
/// local copy, never an MPI message.
@MainActor
public protocol AllToAll: AnyObject {
    var algorithm: AllToAllAlgorithm { get }
    var communicator: Communicator { get }

    func exchange(
        send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int
    ) throws(ExchangeError)
}

extension AllToAll {
    /// Learns the receive counts from the send counts: wraps `MPI_Alltoall` of one count per peer.
    public func exchangeCounts(sendCounts: [Int]) throws(ExchangeError) -> ExchangeLayout {
        guard sendCounts.count == communicator.size else {
            throw .layout("\(sendCounts.count) send counts for \(communicator.size) ranks")
        }
        let receiveCounts: [Int]
        do { receiveCounts = try communicator.allToAllCounts(sendCounts) } catch { throw .mpi(error) }
        guard let layout = ExchangeLayout(sendCounts: sendCounts, receiveCounts: receiveCounts) else {
            throw .layout("negative count in \(sendCounts) / \(receiveCounts)")
        }
        return layout
    }

    /// Exchanges the first `layout.sendRows` rows of `send` into the front of `receive`, both
    /// arrays of any plain element type with `rowBytes` bytes per row. The arrays are reused
    /// buffers: they may be longer than the layout needs, never shorter.
    public func exchange<Element: BitwiseCopyable>(
        _ send: [Element], into receive: inout [Element], layout: ExchangeLayout, rowBytes: Int
    ) throws(ExchangeError) {
        var failure: ExchangeError?
        send.withUnsafeBytes { sendBuffer in
            receive.withUnsafeMutableBytes { receiveBuffer in
                do throws(ExchangeError) {
                    try exchange(send: UnsafeRawBufferPointer(rebasing: sendBuffer[0..<min(sendBuffer.count, layout.sendRows * rowBytes)]),
                                 receive: receiveBuffer, layout: layout, rowBytes: rowBytes)
                } catch { failure = error }
            }
        }
        if let failure { throw failure }
    }

    /// Exchanges rows of `width` floats: `rows` is row-major `[layout.sendRows, width]`, packed by
    /// destination; the result is `[layout.receiveRows, width]`, packed by source. Allocates the
    /// result; hot paths use `exchange(send:receive:layout:rowBytes:)` on reused buffers.
    public func exchange(rows: [Float], width: Int, layout: ExchangeLayout) throws(ExchangeError) -> [Float] {
        guard rows.count == layout.sendRows * width else {
            throw .layout("\(rows.count) floats sent, layout needs \(layout.sendRows) rows of \(width)")
        }
        var received = [Float](repeating: 0, count: layout.receiveRows * width)
        let rowBytes = width * MemoryLayout<Float>.stride
        var failure: ExchangeError?
        rows.withUnsafeBytes { send in
            received.withUnsafeMutableBytes { receive in
                do throws(ExchangeError) { try exchange(send: send, receive: receive, layout: layout, rowBytes: rowBytes) } catch { failure = error }
            }
        }
        if let failure { throw failure }
        return received
    }

    /// Checks buffers against the layout before any message is posted, so a caller bug is an
    /// error on this rank rather than memory corruption.
    func validate(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int) throws(ExchangeError) {
        guard layout.peerCount == communicator.size else {
            throw .layout("layout for \(layout.peerCount) ranks on a communicator of \(communicator.size)")
        }
        guard rowBytes > 0 else { throw .layout("row size \(rowBytes) bytes") }
        guard send.count >= layout.sendRows * rowBytes, receive.count >= layout.receiveRows * rowBytes else {
            throw .layout("buffers of \(send.count) and \(receive.count) bytes for \(layout.sendRows) and \(layout.receiveRows) rows of \(rowBytes) bytes")
        }
        let here = communicator.rank
        guard layout.sendCounts[here] == layout.receiveCounts[here] else {
            throw .layout("rank \(here) sends itself \(layout.sendCounts[here]) rows but expects \(layout.receiveCounts[here])")
        }
    }

    /// Copies the rows this rank sends to itself (no MPI message).
    func copySelfRows(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int) {
        let here = communicator.rank
        let bytes = layout.sendCounts[here] * rowBytes
        guard bytes > 0 else { return }
        (receive.baseAddress! + layout.receiveDisplacements[here] * rowBytes)
            .copyMemory(from: send.baseAddress! + layout.sendDisplacements[here] * rowBytes, byteCount: bytes)
    }
}

/// Makes the named algorithm over `communicator`, learning where its ranks live from the world
/// `topology` (collective over `communicator`: one `MPI_Allgather` of world ranks), with `links`
/// simulated when given.
@MainActor
public func makeAllToAll(
    _ algorithm: AllToAllAlgorithm, communicator: Communicator, worldRank: Int, topology: Topology, links: SimulatedLinks? = nil
) throws(MPIError) -> any AllToAll {
    let nodes = try ExchangeNodes.gather(communicator: communicator, worldRank: worldRank, topology: topology)
    return makeAllToAll(algorithm, communicator: communicator, nodes: nodes, links: links?.view(for: nodes))
}

/// Makes the named algorithm over `communicator`, whose ranks live on `nodes` (the hierarchical
/// algorithm and simulated links use them; without a topology, pass `.singleNode`).
@MainActor
public func makeAllToAll(_ algorithm: AllToAllAlgorithm, communicator: Communicator, nodes: ExchangeNodes,
                         links: LinkSimulator? = nil) -> any AllToAll {
    switch algorithm {
    case .mpi: return LibraryAllToAll(communicator: communicator, links: links)
    case .linear: return LinearAllToAll(communicator: communicator, links: links)
    case .pairwise: return PairwiseAllToAll(communicator: communicator, links: links)
    case .hierarchical: return HierarchicalAllToAll(communicator: communicator, nodes: nodes, links: links)
    }
}
