import ClusterTopology
import MessagePassing

/// The MPI library's own `MPI_Alltoallv` — nonblocking, `MPI_Ialltoallv`: the oracle the other
/// algorithms are tested against, and the baseline the benchmarks compare with.
///
/// Under simulated links the transport reserves every message as if posted when the call starts
/// (`ExchangeTransport.postLibraryAllToAll`).
@MainActor
public final class LibraryAllToAll: AllToAll {
    public let transport: ExchangeTransport
    public var algorithm: AllToAllAlgorithm { .mpi }
    /// OpenMPI's `basic_linear` alltoallv at 4–63 ranks is a flat exchange (shared/FACTS.md).
    public var modeledSchedule: ModeledSchedule { .flat }
    private lazy var operations = ChannelOperations { [transport] in LibraryExchange(transport: transport) }
    /// The tag the simulated links file the library's messages under (MPI's own are internal).
    static let tag = 7001

    public init(transport: ExchangeTransport) {
        self.transport = transport
    }

    public func post(
        send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int, channel: Int
    ) throws(ExchangeError) -> any PendingExchange {
        try validate(send: send, receive: receive, layout: layout, rowBytes: rowBytes)
        let operation = operations[channel]
        operation.begin()
        do {
            try transport.postLibraryAllToAll(send: send, receive: receive, layout: layout, rowBytes: rowBytes,
                                              tag: ExchangeChannel.tag(Self.tag, channel: channel),
                                              arguments: operation.arguments, into: operation.stage)
        } catch { throw .mpi(error) }
        return operation
    }
}

/// One `MPI_Ialltoallv` in flight, with the argument arrays the library reads until it completes.
@MainActor
final class LibraryExchange: StagedExchange {
    let arguments = AllToAllVArguments()
    init(transport: ExchangeTransport) { super.init(transport: transport, stage: transport.makeRequests(capacity: 1)) }
}
