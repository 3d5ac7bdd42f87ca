import ClusterTopology
import MessagePassing

/// The name of an all-to-all algorithm SwiftMoE implements (`AllToAllAlgorithm.registry` lists
/// them). Every one delivers byte-identical results.
public struct AllToAllAlgorithm: RawRepresentable, Hashable, Sendable, CaseIterable, Codable, CustomStringConvertible {
    public let rawValue: String

    /// A registered algorithm's name; nil for any other name.
    public init?(rawValue: String) {
        guard Self.registry.contains(where: { $0.name == rawValue }) else { return nil }
        self.rawValue = rawValue
    }

    private init(registered name: String) { rawValue = name }

    public static let mpi = AllToAllAlgorithm(registered: "mpi")
    public static let linear = AllToAllAlgorithm(registered: "linear")
    public static let pairwise = AllToAllAlgorithm(registered: "pairwise")
    public static let hierarchical = AllToAllAlgorithm(registered: "hierarchical")

    /// Every algorithm, in registration order: what `--exchange all`, `exchange-check` and the
    /// tests iterate over.
    public static var allCases: [AllToAllAlgorithm] { registry.map { AllToAllAlgorithm(registered: $0.name) } }

    public var description: String { rawValue }
    /// One line on what the algorithm does (for help and reports).
    public var summary: String { Self.registration(rawValue).summary }

    /// How to make one algorithm over a transport whose ranks live on the given nodes.
    struct Registration: Sendable {
        let name: String
        let summary: String
        let make: @MainActor @Sendable (ExchangeTransport, ExchangeNodes) -> any AllToAll
    }

    /// **The one registration of every algorithm.** A new algorithm is a new file with its class
    /// (built on `ExchangeTransport`, stating its `modeledSchedule`) plus one entry here.
    static let registry: [Registration] = [
        Registration(name: "mpi", summary: "the MPI library's MPI_Alltoallv (the oracle)") { transport, _ in
            LibraryAllToAll(transport: transport)
        },
        Registration(name: "linear", summary: "flat: post all receives, then all sends, then one waitall") { transport, _ in
            LinearAllToAll(transport: transport)
        },
        Registration(name: "pairwise", summary: "flat: G steps, step i sends to r+i and receives from r-i") { transport, _ in
            PairwiseAllToAll(transport: transport)
        },
        Registration(name: "hierarchical", summary: "two-stage: intra-node to the local delegate, then one message per node pair") {
            transport, nodes in HierarchicalAllToAll(transport: transport, nodes: nodes)
        },
    ]

    static func registration(_ name: String) -> Registration { registry.first { $0.name == name }! }

    public init(from decoder: any Decoder) throws {
        let name = try decoder.singleValueContainer().decode(String.self)
        guard let algorithm = AllToAllAlgorithm(rawValue: name) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "unknown all-to-all algorithm '\(name)'"))
        }
        self = algorithm
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
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
/// An algorithm moves data only through its `transport` (which applies link simulation to
/// every message) and states which cost-model schedule it follows (`modeledSchedule`), so the
/// benchmarks and any new tool ask the algorithm rather than keep a table of their own.
///
/// Every algorithm is nonblocking at heart: `post` starts an exchange and returns it pending;
/// `test` moves it on (posting its next stage when the last one has completed) and `wait`
/// finishes it. The blocking `exchange` is `post` then `wait`. Exchanges on different
/// `channel`s may be in flight at once (a pipelined layer posts one per chunk); on one channel,
/// one at a time. Every rank must post the same exchanges on the same channels in the same order.
///
/// Exchanges are collective: every rank of the communicator posts them with the same `rowBytes`,
/// and `layout.sendCounts[p]` here equals `layout.receiveCounts[here]` on rank p (use
/// `exchangeCounts` when the receiving side does not know its counts). Rows from rank p arrive
/// at `layout.receiveDisplacements[p]`, in the order p packed them. Rows sent to oneself are a
/// local copy, never an MPI message.
@MainActor
public protocol AllToAll: AnyObject {
    var algorithm: AllToAllAlgorithm { get }
    /// The stages this algorithm runs, as the cost model (`CostModel.predict`) prices them.
    var modeledSchedule: ModeledSchedule { get }
    var transport: ExchangeTransport { get }

    /// Starts an exchange on `channel` (`0..<ExchangeChannel.limit`). `send` and `receive` must
    /// stay valid, and `send` unchanged, until the returned exchange completes; the previous
    /// exchange on `channel` must have completed.
    func post(
        send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int, channel: Int
    ) throws(ExchangeError) -> any PendingExchange
}

/// The channels of in-flight exchanges: each has its own MPI tags, so messages of exchanges in
/// flight at once never match each other's receives.
public enum ExchangeChannel {
    /// Channels per algorithm object.
    public static let limit = 1024
    /// The MPI tag of an algorithm's message kind `base` (7000..<7400, distinct per kind) on
    /// `channel`: `base + 16·channel`, so the tags of different channels never collide and all
    /// stay below 7400 + 16·1024 < 32767, the upper bound MPI guarantees.
    static func tag(_ base: Int, channel: Int) -> Int {
        precondition((0..<limit).contains(channel), "exchange channel \(channel) outside 0..<\(limit)")
        return base + 16 * channel
    }
}

/// An exchange that has been posted and not yet completed.
@MainActor
public protocol PendingExchange: AnyObject {
    /// Whether every row has arrived (and, under simulated links, been delivered).
    var isComplete: Bool { get }
    /// Moves the exchange on without blocking — completes what MPI has finished and posts the
    /// next stage — and returns whether it is complete. Calls after completion return true.
    func test() throws(ExchangeError) -> Bool
    /// Completes the exchange, blocking as needed.
    func wait() throws(ExchangeError)
    /// Under simulated links, once MPI has completed the stage in flight and only its modelled
    /// delivery is left: that delivery time (`ExchangeTransport.now()` seconds). Nil otherwise
    /// (MPI still has work to do, or no simulation).
    var deliveredAt: Double? { get }
    /// Sleeps until `deadline` (`ExchangeTransport.now()` seconds), counted as held by the links.
    func sleep(until deadline: Double)
}

/// The stage machine every algorithm's pending exchange runs: a stage is a set of transfers in
/// one `TransportRequests`; when they complete, `advance` posts the next stage or finishes.
@MainActor
class StagedExchange: PendingExchange {
    let transport: ExchangeTransport
    /// The transfers of the stage in flight.
    var stage: TransportRequests
    private(set) var isComplete = true

    init(transport: ExchangeTransport, stage: TransportRequests) {
        self.transport = transport
        self.stage = stage
    }

    /// Marks the exchange started (its first stage posted into `stage`).
    func begin() {
        precondition(isComplete, "an exchange was posted on a channel whose previous exchange is still in flight")
        isComplete = false
    }

    var deliveredAt: Double? { isComplete ? nil : transport.deliveredAt(stage) }

    func sleep(until deadline: Double) { transport.hold(until: deadline) }

    /// Called when the stage in flight has completed: posts the next stage (into `stage`) and
    /// returns true, or does the final local work and returns false.
    func advance() throws(MPIError) -> Bool { false }

    final func test() throws(ExchangeError) -> Bool {
        do {
            while !isComplete {
                guard try transport.test(stage) else { return false }
                if try !advance() { isComplete = true }
            }
        } catch {
            isComplete = true
            throw .mpi(error)
        }
        return true
    }

    final func wait() throws(ExchangeError) {
        do {
            while !isComplete {
                try transport.wait(stage)
                if try !advance() { isComplete = true }
            }
        } catch {
            isComplete = true
            throw .mpi(error)
        }
    }
}

/// One reusable pending exchange per channel, made on first use.
@MainActor
final class ChannelOperations<Operation: StagedExchange> {
    private var operations: [Int: Operation] = [:]
    private let make: () -> Operation

    init(_ make: @escaping () -> Operation) { self.make = make }

    subscript(channel: Int) -> Operation {
        if let operation = operations[channel] { return operation }
        let operation = make()
        operations[channel] = operation
        return operation
    }
}

extension AllToAll {
    /// Exchanges and waits for completion (`post` on channel 0, then `wait`).
    public func exchange(
        send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int
    ) throws(ExchangeError) {
        try post(send: send, receive: receive, layout: layout, rowBytes: rowBytes, channel: 0).wait()
    }

    /// The communicator the algorithm exchanges over.
    public var communicator: Communicator { transport.communicator }

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
    AllToAllAlgorithm.registration(algorithm.rawValue).make(ExchangeTransport(communicator: communicator, links: links), nodes)
}
