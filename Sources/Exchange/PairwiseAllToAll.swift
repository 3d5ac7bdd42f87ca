import ClusterTopology
import MessagePassing

/// The pairwise schedule: in step i (1 ≤ i < G) rank r sends to (r+i) mod G and receives from
/// (r−i) mod G; step 0 is the local copy.
///
/// Each step completes before the next starts, so at most one message is in flight per
/// direction. That bounds contention on a real network, but serialises the steps: when ranks
/// outnumber cores a rank waits for a peer that is not scheduled, and the whole exchange pays
/// G−1 such waits (shared/FACTS.md: 1.2–3.5× slower than posting everything at once).
/// Nonblocking, each step is a stage: a test that finds step i complete posts step i+1.
@MainActor
public final class PairwiseAllToAll: AllToAll {
    public let transport: ExchangeTransport
    public var algorithm: AllToAllAlgorithm { .pairwise }
    public var modeledSchedule: ModeledSchedule { .pairwise }
    private lazy var operations = ChannelOperations { [transport] in PairwiseExchange(transport: transport) }
    static let tag = 7102

    public init(transport: ExchangeTransport) {
        self.transport = transport
    }

    /// Peers of `rank` in `step` of a pairwise exchange over `size` ranks.
    public nonisolated static func peers(rank: Int, size: Int, step: Int) -> (sendTo: Int, receiveFrom: Int) {
        ((rank + step) % size, (rank - step % size + size) % size)
    }

    public func post(
        send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int, channel: Int
    ) throws(ExchangeError) -> any PendingExchange {
        try validate(send: send, receive: receive, layout: layout, rowBytes: rowBytes)
        copySelfRows(send: send, receive: receive, layout: layout, rowBytes: rowBytes)
        let operation = operations[channel]
        operation.begin()
        operation.send = send
        operation.receive = receive
        operation.layout = layout
        operation.rowBytes = rowBytes
        operation.tag = ExchangeChannel.tag(Self.tag, channel: channel)
        operation.step = 0
        do { _ = try operation.advance() } catch { throw .mpi(error) }
        return operation
    }
}

/// One pairwise exchange in flight: the step it is in.
@MainActor
final class PairwiseExchange: StagedExchange {
    var send = UnsafeRawBufferPointer(start: nil, count: 0)
    var receive = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    var layout = ExchangeLayout(sendCounts: [], receiveCounts: [])!
    var rowBytes = 0
    var tag = 0
    /// The step whose transfers are in flight (0: none yet).
    var step = 0

    init(transport: ExchangeTransport) { super.init(transport: transport, stage: transport.makeRequests(capacity: 2)) }

    /// Posts the next step with any rows; false when no step is left.
    override func advance() throws(MPIError) -> Bool {
        let size = transport.communicator.size
        let here = transport.communicator.rank
        while step + 1 < size {
            step += 1
            let (destination, source) = PairwiseAllToAll.peers(rank: here, size: size, step: step)
            let receiving = layout.receiveCounts[source] > 0, sending = layout.sendCounts[destination] > 0
            guard receiving || sending else { continue }
            if receiving {
                try transport.postReceive(
                    receive.baseAddress! + layout.receiveDisplacements[source] * rowBytes,
                    rows: layout.receiveCounts[source], rowBytes: rowBytes, from: source, tag: tag, into: stage)
            }
            if sending {
                try transport.postSend(
                    send.baseAddress! + layout.sendDisplacements[destination] * rowBytes,
                    rows: layout.sendCounts[destination], rowBytes: rowBytes, to: destination, tag: tag, into: stage)
            }
            return true
        }
        return false
    }
}
