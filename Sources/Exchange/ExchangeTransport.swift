import MessagePassing

/// Outstanding transfers of one exchange stage, completed together by
/// `ExchangeTransport.wait(_:)`: the MPI requests, and the sources whose simulated delivery the
/// wait must honour. Reused across exchanges (storage only grows).
@MainActor
public final class TransportRequests {
    let requests: RequestList
    /// Sources of the receives posted since the last wait, in posting order.
    var receivedFrom: [Int] = []

    init(capacity: Int) {
        requests = RequestList(capacity: capacity)
        receivedFrom.reserveCapacity(capacity)
    }
}

/// The one layer through which every all-to-all algorithm moves rows between ranks: nonblocking
/// posts, a wait, and the library's own `MPI_Alltoallv`, with the simulated links applied here —
/// so an algorithm written against the transport is simulated by construction, and whatever a
/// later layer adds to every message (wire compression, say) has one place to go.
///
/// The rule for simulated links (`SimulatedLinks`) is the cost model's: a message's links are
/// reserved just before it is posted, and the receiver, once MPI has delivered it, waits until
/// its modelled delivery time. Intra-node messages are never held. Data is never touched.
/// Algorithms must not call `Communicator`'s point-to-point or all-to-all calls directly (the
/// layering test in `Tests/ArchitectureTests` checks it).
@MainActor
public final class ExchangeTransport {
    public let communicator: Communicator
    /// The simulated links as this communicator sees them, or nil (no simulation).
    let links: LinkSimulator?

    public init(communicator: Communicator, links: LinkSimulator? = nil) {
        self.communicator = communicator
        self.links = links
    }

    /// A request list for up to about `capacity` transfers per stage.
    public func makeRequests(capacity: Int) -> TransportRequests { TransportRequests(capacity: capacity) }

    /// Posts a receive of `rows` rows of `rowBytes` bytes from communicator rank `source`
    /// (wraps `MPI_Irecv`). The buffer must stay valid until `wait(requests)`.
    public func postReceive(
        _ buffer: UnsafeMutableRawPointer, rows: Int, rowBytes: Int, from source: Int, tag: Int, into requests: TransportRequests
    ) throws(MPIError) {
        try communicator.receiveNonblocking(buffer, rows: rows, rowBytes: rowBytes, from: source, tag: tag, into: requests.requests)
        if rows > 0 { requests.receivedFrom.append(source) }
    }

    /// Reserves the simulated links for the message, then posts the send (wraps `MPI_Isend`). The
    /// buffer must stay valid and unchanged until `wait(requests)`.
    public func postSend(
        _ buffer: UnsafeRawPointer, rows: Int, rowBytes: Int, to destination: Int, tag: Int, into requests: TransportRequests
    ) throws(MPIError) {
        links?.willSend(from: communicator.rank, to: destination, bytes: rows * rowBytes)
        try communicator.sendNonblocking(buffer, rows: rows, rowBytes: rowBytes, to: destination, tag: tag, into: requests.requests)
    }

    /// Completes every posted transfer (wraps `MPI_Waitall`), then holds until each received
    /// message's simulated delivery time.
    public func wait(_ requests: TransportRequests) throws(MPIError) {
        try requests.requests.waitAll()
        if let links {
            for source in requests.receivedFrom { links.awaitDelivery(from: source, to: communicator.rank) }
        }
        requests.receivedFrom.removeAll(keepingCapacity: true)
    }

    /// The library's `MPI_Alltoallv` in `layout`. Under simulated links the library's own
    /// messages cannot be intercepted, so every message is reserved as if posted when the call
    /// starts, and the rank waits after the call until its incoming messages are delivered.
    public func libraryAllToAll(
        send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int
    ) throws(MPIError) {
        let here = communicator.rank
        let size = communicator.size
        if let links {
            for offset in 1..<max(size, 1) {
                let destination = (here + offset) % size
                links.willSend(from: here, to: destination, bytes: layout.sendCounts[destination] * rowBytes)
            }
        }
        try communicator.allToAllV(
            send: send, sendCounts: layout.sendCounts, sendDisplacements: layout.sendDisplacements,
            receive: receive, receiveCounts: layout.receiveCounts, receiveDisplacements: layout.receiveDisplacements,
            rowBytes: rowBytes)
        if let links {
            for source in 0..<size where source != here && layout.receiveCounts[source] > 0 {
                links.awaitDelivery(from: source, to: here)
            }
        }
    }
}
