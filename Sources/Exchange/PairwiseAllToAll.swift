import ClusterTopology
import MessagePassing

/// The pairwise schedule: in step i (1 ≤ i < G) rank r sends to (r+i) mod G and receives from
/// (r−i) mod G; step 0 is the local copy.
///
/// Each step completes before the next starts, so at most one message is in flight per
/// direction. That bounds contention on a real network, but serialises the steps: when ranks
/// outnumber cores a rank waits for a peer that is not scheduled, and the whole exchange pays
/// G−1 such waits (shared/FACTS.md: 1.2–3.5× slower than posting everything at once).
@MainActor
public final class PairwiseAllToAll: AllToAll {
    public let transport: ExchangeTransport
    public var algorithm: AllToAllAlgorithm { .pairwise }
    public var modeledSchedule: ModeledSchedule { .pairwise }
    private let requests: TransportRequests
    static let tag = 7102

    public init(transport: ExchangeTransport) {
        self.transport = transport
        requests = transport.makeRequests(capacity: 2)
    }

    /// Peers of `rank` in `step` of a pairwise exchange over `size` ranks.
    public nonisolated static func peers(rank: Int, size: Int, step: Int) -> (sendTo: Int, receiveFrom: Int) {
        ((rank + step) % size, (rank - step % size + size) % size)
    }

    public func exchange(
        send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int
    ) throws(ExchangeError) {
        try validate(send: send, receive: receive, layout: layout, rowBytes: rowBytes)
        let size = communicator.size
        let here = communicator.rank
        copySelfRows(send: send, receive: receive, layout: layout, rowBytes: rowBytes)
        do {
            for step in 1..<max(size, 1) {
                let (destination, source) = Self.peers(rank: here, size: size, step: step)
                if layout.receiveCounts[source] > 0 {
                    try transport.postReceive(
                        receive.baseAddress! + layout.receiveDisplacements[source] * rowBytes,
                        rows: layout.receiveCounts[source], rowBytes: rowBytes, from: source, tag: Self.tag, into: requests)
                }
                if layout.sendCounts[destination] > 0 {
                    try transport.postSend(
                        send.baseAddress! + layout.sendDisplacements[destination] * rowBytes,
                        rows: layout.sendCounts[destination], rowBytes: rowBytes, to: destination, tag: Self.tag, into: requests)
                }
                try transport.wait(requests)
            }
        } catch {
            throw .mpi(error)
        }
    }
}
