import MessagePassing

/// The MPI library's own `MPI_Alltoallv`: the oracle the other algorithms are tested against,
/// and the baseline the benchmarks compare with.
@MainActor
public final class LibraryAllToAll: AllToAll {
    public let communicator: Communicator
    public var algorithm: AllToAllAlgorithm { .mpi }

    public init(communicator: Communicator) { self.communicator = communicator }

    public func exchange(
        send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int
    ) throws(ExchangeError) {
        try validate(send: send, receive: receive, layout: layout, rowBytes: rowBytes)
        do {
            try communicator.allToAllV(
                send: send, sendCounts: layout.sendCounts, sendDisplacements: layout.sendDisplacements,
                receive: receive, receiveCounts: layout.receiveCounts, receiveDisplacements: layout.receiveDisplacements,
                rowBytes: rowBytes)
        } catch { throw .mpi(error) }
    }
}
