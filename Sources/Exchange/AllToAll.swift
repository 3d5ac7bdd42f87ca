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
/// `exchange` is collective: every rank of the communicator calls it with the same `rowBytes`,
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

    func exchange(
        send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, layout: ExchangeLayout, rowBytes: Int
    ) throws(ExchangeError)
}

extension AllToAll {
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
