import MessagePassing

/// Outstanding transfers of one exchange stage, completed together by
/// `ExchangeTransport.test(_:)` or `wait(_:)`: the MPI requests, and the messages whose
/// simulated delivery must pass before the stage counts as complete. Reused across exchanges
/// (storage only grows).
@MainActor
public final class TransportRequests {
    let requests: RequestList
    /// Source and tag of the receives posted since the stage began, in posting order.
    var receivedFrom: [(source: Int, tag: Int)] = []
    /// Whether MPI has completed every request of the stage (only the simulated delivery is left).
    var transferred = false
    /// The latest simulated delivery time of the stage's messages (`SimulatedLinks.now()` seconds).
    var deliveredAt = 0.0

    init(capacity: Int) {
        requests = RequestList(capacity: capacity)
        receivedFrom.reserveCapacity(capacity)
    }

    func reset() {
        receivedFrom.removeAll(keepingCapacity: true)
        transferred = false
        deliveredAt = 0
    }
}

/// The one layer through which every all-to-all algorithm moves rows between ranks: nonblocking
/// posts, a test and a wait, and the library's own `MPI_Ialltoallv`, with the simulated links
/// applied here — so an algorithm written against the transport is simulated by construction,
/// and whatever a later layer adds to every message (wire compression, say) has one place to go.
///
/// The rule for simulated links (`SimulatedLinks`) is the cost model's: a message's links are
/// reserved just before it is posted, and the receiver may use it only from its modelled
/// delivery time on. `test` reports a stage complete only after that time (the rank computes
/// meanwhile); `wait` sleeps until it. Intra-node messages are never held. Data is never touched.
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
    /// (wraps `MPI_Irecv`). The buffer must stay valid until the stage completes.
    public func postReceive(
        _ buffer: UnsafeMutableRawPointer, rows: Int, rowBytes: Int, from source: Int, tag: Int, into requests: TransportRequests
    ) throws(MPIError) {
        try communicator.receiveNonblocking(buffer, rows: rows, rowBytes: rowBytes, from: source, tag: tag, into: requests.requests)
        if rows > 0 { requests.receivedFrom.append((source, tag)) }
    }

    /// Reserves the simulated links for the message, then posts the send (wraps `MPI_Isend`). The
    /// buffer must stay valid and unchanged until the stage completes.
    public func postSend(
        _ buffer: UnsafeRawPointer, rows: Int, rowBytes: Int, to destination: Int, tag: Int, into requests: TransportRequests
    ) throws(MPIError) {
        links?.willSend(from: communicator.rank, to: destination, bytes: rows * rowBytes, tag: tag)
        try communicator.sendNonblocking(buffer, rows: rows, rowBytes: rowBytes, to: destination, tag: tag, into: requests.requests)
    }

    /// Whether every transfer of the stage has completed and been delivered, without blocking
    /// (wraps `MPI_Testall`, which also lets MPI progress). True resets `requests` for the next
    /// stage.
    public func test(_ requests: TransportRequests) throws(MPIError) -> Bool {
        if !requests.transferred {
            guard try requests.requests.testAll() else { return false }
            settleTransfers(requests)
        }
        guard links == nil || LinkSimulator.now() >= requests.deliveredAt else { return false }
        requests.reset()
        return true
    }

    /// Completes every transfer of the stage (wraps `MPI_Waitall`), then sleeps until each
    /// received message's simulated delivery time. Resets `requests` for the next stage.
    public func wait(_ requests: TransportRequests) throws(MPIError) {
        if !requests.transferred {
            try requests.requests.waitAll()
            settleTransfers(requests)
        }
        links?.hold(until: requests.deliveredAt)
        requests.reset()
    }

    /// The stage's simulated delivery time once MPI has completed it; nil before, or without links.
    func deliveredAt(_ requests: TransportRequests) -> Double? {
        links != nil && requests.transferred ? requests.deliveredAt : nil
    }

    /// Sleeps until `deadline` under simulated links (counted as held); without links, returns.
    func hold(until deadline: Double) { links?.hold(until: deadline) }

    /// Seconds on the clock simulated delivery times use (the host's monotonic clock).
    public static func now() -> Double { LinkSimulator.now() }

    /// MPI completed the stage: learn the simulated delivery time of its slowest message.
    private func settleTransfers(_ requests: TransportRequests) {
        requests.transferred = true
        guard let links else { return }
        for (source, tag) in requests.receivedFrom {
            if let delivery = links.deliveryTime(from: source, tag: tag) { requests.deliveredAt = max(requests.deliveredAt, delivery) }
        }
    }

    /// Posts the library's `MPI_Ialltoallv` in `layout` into `requests` (`arguments` must live
    /// until it completes). Under simulated links the library's own messages cannot be
    /// intercepted, so every message is reserved as if posted now, under `tag`, and the stage
    /// completes when the incoming ones are delivered.
    public func postLibraryAllToAll(
        send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int,
        tag: Int, arguments: AllToAllVArguments, into requests: TransportRequests
    ) throws(MPIError) {
        let here = communicator.rank
        let size = communicator.size
        if let links {
            for offset in 1..<max(size, 1) {
                let destination = (here + offset) % size
                links.willSend(from: here, to: destination, bytes: layout.sendCounts[destination] * rowBytes, tag: tag)
            }
            for source in 0..<size where source != here && layout.receiveCounts[source] > 0 {
                requests.receivedFrom.append((source, tag))
            }
        }
        try communicator.allToAllVNonblocking(
            send: send, sendCounts: layout.sendCounts, sendDisplacements: layout.sendDisplacements,
            receive: receive, receiveCounts: layout.receiveCounts, receiveDisplacements: layout.receiveDisplacements,
            rowBytes: rowBytes, arguments: arguments, into: requests.requests)
    }
}
