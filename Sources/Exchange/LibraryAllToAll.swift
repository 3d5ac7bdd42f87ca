import ClusterTopology
import MessagePassing

/// The MPI library's own `MPI_Alltoallv`: the oracle the other algorithms are tested against,
/// and the baseline the benchmarks compare with.
///
/// Under simulated links the transport reserves every message as if posted when the call starts
/// (`ExchangeTransport.libraryAllToAll`).
@MainActor
public final class LibraryAllToAll: AllToAll {
    public let transport: ExchangeTransport
    public var algorithm: AllToAllAlgorithm { .mpi }
    /// OpenMPI's `basic_linear` alltoallv at 4–63 ranks is a flat exchange (shared/FACTS.md).
    public var modeledSchedule: ModeledSchedule { .flat }

    public init(transport: ExchangeTransport) {
        self.transport = transport
    }

    public func exchange(
        send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int
    ) throws(ExchangeError) {
        try validate(send: send, receive: receive, layout: layout, rowBytes: rowBytes)
        do { try transport.libraryAllToAll(send: send, receive: receive, layout: layout, rowBytes: rowBytes) } catch { throw .mpi(error) }
    }
}
