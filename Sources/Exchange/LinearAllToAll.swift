import ClusterTopology
import MessagePassing

/// The naive flat exchange: post every receive, then every send, then one `MPI_Waitall`.
///
/// Receives are posted before any send so that every incoming message finds its buffer (eager
/// messages need no unexpected-message copy). Peers are visited starting at r+1 (sends) and r−1
/// (receives) rather than at rank 0, so that G ranks do not all target the same peer first.
/// Zero-row peers post nothing: both sides know the count, so neither waits for the other.
/// Nonblocking, it is one stage: everything is posted at once, and the exchange is complete when
/// every transfer is.
@MainActor
public final class LinearAllToAll: AllToAll {
    public let transport: ExchangeTransport
    public var algorithm: AllToAllAlgorithm { .linear }
    public var modeledSchedule: ModeledSchedule { .flat }
    private lazy var operations = ChannelOperations { [transport] in
        StagedExchange(transport: transport, stage: transport.makeRequests(capacity: 2 * transport.communicator.size))
    }
    /// Tag of this algorithm's messages (per channel, `ExchangeChannel.tag`); distinct per
    /// algorithm so a misuse cannot cross-match.
    static let tag = 7101

    public init(transport: ExchangeTransport) {
        self.transport = transport
    }

    public func post(
        send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int, channel: Int
    ) throws(ExchangeError) -> any PendingExchange {
        try validate(send: send, receive: receive, layout: layout, rowBytes: rowBytes)
        let operation = operations[channel]
        operation.begin()
        let size = communicator.size
        let here = communicator.rank
        let tag = ExchangeChannel.tag(Self.tag, channel: channel)
        do {
            for offset in 1..<max(size, 1) {
                let source = (here - offset + size) % size
                guard layout.receiveCounts[source] > 0 else { continue }
                try transport.postReceive(
                    receive.baseAddress! + layout.receiveDisplacements[source] * rowBytes,
                    rows: layout.receiveCounts[source], rowBytes: rowBytes, from: source, tag: tag, into: operation.stage)
            }
            for offset in 1..<max(size, 1) {
                let destination = (here + offset) % size
                guard layout.sendCounts[destination] > 0 else { continue }
                try transport.postSend(
                    send.baseAddress! + layout.sendDisplacements[destination] * rowBytes,
                    rows: layout.sendCounts[destination], rowBytes: rowBytes, to: destination, tag: tag, into: operation.stage)
            }
        } catch {
            throw .mpi(error)
        }
        copySelfRows(send: send, receive: receive, layout: layout, rowBytes: rowBytes)
        return operation
    }
}
