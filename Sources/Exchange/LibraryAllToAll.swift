import MessagePassing

/// The MPI library's own `MPI_Alltoallv`: the oracle the other algorithms are tested against,
/// and the baseline the benchmarks compare with.
///
/// Under simulated links the library's individual messages cannot be intercepted, so every
/// inter-node message is reserved on the links as if posted when the call starts, and each rank
/// waits after the call until its incoming inter-node messages are delivered.
@MainActor
public final class LibraryAllToAll: AllToAll {
    public let communicator: Communicator
    public var algorithm: AllToAllAlgorithm { .mpi }
    private let links: LinkSimulator?

    public init(communicator: Communicator, links: LinkSimulator? = nil) {
        self.communicator = communicator
        self.links = links
    }

    public func exchange(
        send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int
    ) throws(ExchangeError) {
        try validate(send: send, receive: receive, layout: layout, rowBytes: rowBytes)
        let here = communicator.rank
        let size = communicator.size
        if let links {
            for offset in 1..<max(size, 1) {
                let destination = (here + offset) % size
                links.willSend(from: here, to: destination, bytes: layout.sendCounts[destination] * rowBytes)
            }
        }
        do {
            try communicator.allToAllV(
                send: send, sendCounts: layout.sendCounts, sendDisplacements: layout.sendDisplacements,
                receive: receive, receiveCounts: layout.receiveCounts, receiveDisplacements: layout.receiveDisplacements,
                rowBytes: rowBytes)
        } catch { throw .mpi(error) }
        if let links {
            for source in 0..<size where source != here && layout.receiveCounts[source] > 0 {
                links.awaitDelivery(from: source, to: here)
            }
        }
    }
}
