/// What a sender says about its block for one destination, ahead of the rows.
package enum DispatchStatus: Int, Equatable, Sendable {
    /// The rows follow (or, in a count message, will follow) as counted.
    case ready = 0
    /// The sender's router failed this step; no rows follow, and every rank stops.
    case routingFailed = 1
    /// Plan caching only: some block of the sender did not fit its cached size, so this step
    /// falls back to the count exchange.
    case overflow = 2
}

/// The header of one dispatch block: `[status, tokens, rows for each of the destination's
/// experts]` as native Ints, `2 + experts` words. The same bytes are the count message of the
/// count exchange and, under plan caching, the first row of each data block — this is the one
/// place that writes and reads them.
struct DispatchHeader: Equatable {
    var status: DispatchStatus
    /// The sender's token count this step (the capacity-mode plan cache sizes blocks from it).
    var tokens: Int
    /// Kept rows the sender sends each of the destination's experts, in expert order.
    var rowsPerExpert: [Int]

    static func words(experts: Int) -> Int { 2 + experts }
    static func bytes(experts: Int) -> Int { words(experts: experts) * MemoryLayout<Int>.stride }

    /// Writes the header at `address` (no alignment needed).
    func write(to address: UnsafeMutableRawPointer) {
        let word = MemoryLayout<Int>.stride
        address.storeBytes(of: status.rawValue, as: Int.self)
        address.storeBytes(of: tokens, toByteOffset: word, as: Int.self)
        for (position, rows) in rowsPerExpert.enumerated() {
            address.storeBytes(of: rows, toByteOffset: (2 + position) * word, as: Int.self)
        }
    }

    /// Reads a header for a destination holding `experts` experts. A status word that is none
    /// of ours reads as `routingFailed`, which stops every rank rather than trusting the rows.
    static func read(from address: UnsafeRawPointer, experts: Int) -> DispatchHeader {
        let word = MemoryLayout<Int>.stride
        let status = DispatchStatus(rawValue: address.loadUnaligned(as: Int.self)) ?? .routingFailed
        return DispatchHeader(status: status, tokens: address.loadUnaligned(fromByteOffset: word, as: Int.self),
                              rowsPerExpert: (0..<experts).map { address.loadUnaligned(fromByteOffset: (2 + $0) * word, as: Int.self) })
    }
}
