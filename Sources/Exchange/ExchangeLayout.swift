/// How many rows each rank sends to and receives from every peer, with the packed offsets.
///
/// Rows bound for peer p occupy rows `sendDisplacements[p] ..< sendDisplacements[p] +
/// sendCounts[p]` of the send buffer: blocks in peer order, no gaps. The receive side is packed
/// the same way, by source rank. A row is `rowBytes` bytes, fixed per exchange.
public struct ExchangeLayout: Equatable, Sendable {
    public let sendCounts: [Int]
    public let receiveCounts: [Int]
    public let sendDisplacements: [Int]
    public let receiveDisplacements: [Int]

    /// Fails (returns nil) when the two sides disagree in peer count or a count is negative.
    public init?(sendCounts: [Int], receiveCounts: [Int]) {
        guard sendCounts.count == receiveCounts.count,
              sendCounts.allSatisfy({ $0 >= 0 }), receiveCounts.allSatisfy({ $0 >= 0 }) else { return nil }
        self.sendCounts = sendCounts
        self.receiveCounts = receiveCounts
        sendDisplacements = ExchangeLayout.exclusivePrefixSum(sendCounts)
        receiveDisplacements = ExchangeLayout.exclusivePrefixSum(receiveCounts)
    }

    public var peerCount: Int { sendCounts.count }
    /// Rows in the whole send buffer.
    public var sendRows: Int { sendCounts.reduce(0, +) }
    /// Rows in the whole receive buffer.
    public var receiveRows: Int { receiveCounts.reduce(0, +) }

    static func exclusivePrefixSum(_ counts: [Int]) -> [Int] {
        var running = 0
        return counts.map { count in
            defer { running += count }
            return running
        }
    }
}
