internal import CMPI

extension Communicator {
    /// Wraps `MPI_Barrier`.
    public func barrier() throws(MPIError) {
        try MPIError.check(MPI_Barrier(handle), "MPI_Barrier")
    }

    /// Wraps `MPI_Bcast`: every rank passes an array of the same count; afterwards every rank
    /// holds `root`'s values.
    public func broadcast<T: MessageScalar>(_ values: inout [T], root: Int) throws(MPIError) {
        let count = try MPIError.int32(values.count, "MPI_Bcast", "count")
        let code = values.withUnsafeMutableBytes {
            MPI_Bcast($0.baseAddress, count, T.scalarKind.datatype, Int32(root), handle)
        }
        try MPIError.check(code, "MPI_Bcast")
    }

    /// Broadcasts a byte string of any length from `root` (length first, then the bytes).
    /// `bytes` is read on `root` only.
    public func broadcastBytes(_ bytes: [UInt8], root: Int) throws(MPIError) -> [UInt8] {
        var length = [rank == root ? bytes.count : 0]
        try broadcast(&length, root: root)
        var payload = rank == root ? bytes : [UInt8](repeating: 0, count: length[0])
        try broadcast(&payload, root: root)
        return payload
    }

    /// Wraps `MPI_Allreduce` elementwise over arrays of equal count on every rank.
    public func allReduce<T: MessageScalar>(_ values: [T], _ operation: ReductionOperation) throws(MPIError) -> [T] {
        var result = values
        let count = try MPIError.int32(values.count, "MPI_Allreduce", "count")
        let code = values.withUnsafeBytes { send in
            result.withUnsafeMutableBytes { receive in
                MPI_Allreduce(send.baseAddress, receive.baseAddress, count, T.scalarKind.datatype, operation.op, handle)
            }
        }
        try MPIError.check(code, "MPI_Allreduce")
        return result
    }

    /// `allReduce` of one value.
    public func allReduce<T: MessageScalar>(_ value: T, _ operation: ReductionOperation) throws(MPIError) -> T {
        try allReduce([value], operation)[0]
    }

    /// Wraps `MPI_Allgather`: every rank contributes `values` (same count everywhere); the result
    /// is every rank's values in rank order, `[size * values.count]`.
    public func allGather<T: MessageScalar>(_ values: [T]) throws(MPIError) -> [T] {
        let count = try MPIError.int32(values.count, "MPI_Allgather", "count")
        var result = [T](unsafeUninitializedCapacity: values.count * size) { _, initialized in
            initialized = values.count * size
        }
        let code = values.withUnsafeBytes { send in
            result.withUnsafeMutableBytes { receive in
                MPI_Allgather(send.baseAddress, count, T.scalarKind.datatype,
                              receive.baseAddress, count, T.scalarKind.datatype, handle)
            }
        }
        try MPIError.check(code, "MPI_Allgather")
        return result
    }

    /// Wraps `MPI_Gatherv` of byte strings: each rank contributes `bytes` of any length; `root`
    /// receives every rank's bytes in rank order, other ranks receive `nil`.
    public func gatherBytes(_ bytes: [UInt8], root: Int) throws(MPIError) -> [[UInt8]]? {
        let lengths = try gatherLengths(bytes.count, root: root)
        let counts = try lengths.map { (length: Int) throws(MPIError) -> Int32 in try MPIError.int32(length, "MPI_Gatherv", "length") }
        var displacements = [Int32](repeating: 0, count: counts.count)
        var total = 0
        for index in counts.indices {
            displacements[index] = try MPIError.int32(total, "MPI_Gatherv", "displacement")
            total += Int(counts[index])
        }
        var gathered = [UInt8](repeating: 0, count: total)
        let sendCount = try MPIError.int32(bytes.count, "MPI_Gatherv", "length")
        let code = bytes.withUnsafeBytes { send in
            gathered.withUnsafeMutableBytes { receive in
                MPI_Gatherv(send.baseAddress, sendCount, cmpi_byte(), receive.baseAddress,
                            rank == root ? counts : nil, rank == root ? displacements : nil,
                            cmpi_byte(), Int32(root), handle)
            }
        }
        try MPIError.check(code, "MPI_Gatherv")
        guard rank == root else { return nil }
        return counts.indices.map { index in
            let start = Int(displacements[index])
            return Array(gathered[start..<start + Int(counts[index])])
        }
    }

    private func gatherLengths(_ length: Int, root: Int) throws(MPIError) -> [Int] {
        var lengths = [Int](repeating: 0, count: rank == root ? size : 0)
        let own = [length]
        let code = own.withUnsafeBytes { send in
            lengths.withUnsafeMutableBytes { receive in
                MPI_Gather(send.baseAddress, 1, Int.scalarKind.datatype, receive.baseAddress, 1,
                           Int.scalarKind.datatype, Int32(root), handle)
            }
        }
        try MPIError.check(code, "MPI_Gather")
        return lengths
    }

    /// Wraps `MPI_Alltoall` of one `Int` per peer: `sendCounts[p]` goes to rank p; the result's
    /// element p is what rank p sent here. The usual first step of a variable-size exchange.
    public func allToAllCounts(_ sendCounts: [Int]) throws(MPIError) -> [Int] {
        guard sendCounts.count == size else {
            throw .invalidArgument(call: "MPI_Alltoall", detail: "\(sendCounts.count) counts for \(size) ranks")
        }
        var receiveCounts = [Int](repeating: 0, count: size)
        let code = sendCounts.withUnsafeBytes { send in
            receiveCounts.withUnsafeMutableBytes { receive in
                MPI_Alltoall(send.baseAddress, 1, Int.scalarKind.datatype, receive.baseAddress, 1,
                             Int.scalarKind.datatype, handle)
            }
        }
        try MPIError.check(code, "MPI_Alltoall")
        return receiveCounts
    }

    /// Wraps `MPI_Alltoallv` over rows of `rowBytes` bytes.
    ///
    /// - Parameters:
    ///   - send: rows bound for peer p start at row `sendDisplacements[p]` and number `sendCounts[p]`.
    ///   - receive: rows from peer p land at row `receiveDisplacements[p]`, `receiveCounts[p]` of them.
    /// Counts and displacements are in rows, so they stay within MPI's `int` for large buffers.
    /// Every extent is checked against its buffer before MPI is called.
    public func allToAllV(
        send: UnsafeRawBufferPointer, sendCounts: [Int], sendDisplacements: [Int],
        receive: UnsafeMutableRawBufferPointer, receiveCounts: [Int], receiveDisplacements: [Int],
        rowBytes: Int
    ) throws(MPIError) {
        let call = "MPI_Alltoallv"
        try checkExtents(send: send, sendCounts: sendCounts, sendDisplacements: sendDisplacements,
                         receive: receive, receiveCounts: receiveCounts, receiveDisplacements: receiveDisplacements, rowBytes: rowBytes, call: call)
        let datatype = try rowDatatype(bytes: rowBytes)
        let sc = try sendCounts.map { (value: Int) throws(MPIError) in try MPIError.int32(value, call, "count") }
        let sd = try sendDisplacements.map { (value: Int) throws(MPIError) in try MPIError.int32(value, call, "displacement") }
        let rc = try receiveCounts.map { (value: Int) throws(MPIError) in try MPIError.int32(value, call, "count") }
        let rd = try receiveDisplacements.map { (value: Int) throws(MPIError) in try MPIError.int32(value, call, "displacement") }
        try MPIError.check(
            MPI_Alltoallv(send.baseAddress, sc, sd, datatype, receive.baseAddress, rc, rd, datatype, handle), call)
    }

    /// Wraps `MPI_Ialltoallv` (the nonblocking `allToAllV`); the request joins `requests`. The
    /// buffers must stay valid until `requests` completes; the count and displacement arrays the
    /// library reads meanwhile are kept by `arguments`, which the caller holds as long.
    public func allToAllVNonblocking(
        send: UnsafeRawBufferPointer, sendCounts: [Int], sendDisplacements: [Int],
        receive: UnsafeMutableRawBufferPointer, receiveCounts: [Int], receiveDisplacements: [Int],
        rowBytes: Int, arguments: AllToAllVArguments, into requests: RequestList
    ) throws(MPIError) {
        let call = "MPI_Ialltoallv"
        try checkExtents(send: send, sendCounts: sendCounts, sendDisplacements: sendDisplacements,
                         receive: receive, receiveCounts: receiveCounts, receiveDisplacements: receiveDisplacements, rowBytes: rowBytes, call: call)
        let datatype = try rowDatatype(bytes: rowBytes)
        try arguments.fill(sendCounts, sendDisplacements, receiveCounts, receiveDisplacements, call: call)
        // libnbc (OpenMPI 4.1) treats send == receive as MPI_IN_PLACE and then runs an in-place
        // algorithm whose messages do not match the other ranks' (the job hangs, measured here).
        // Empty Swift arrays share one address, so an empty send and receive would alias: give
        // the send side a distinct address when they do (no byte is read at a zero count).
        let sendAddress = send.baseAddress == UnsafeRawPointer(receive.baseAddress) ? Self.distinctEmptySend : send.baseAddress
        var request: OpaquePointer? = cmpi_request_null()
        try MPIError.check(
            MPI_Ialltoallv(sendAddress, arguments.sendCounts.baseAddress, arguments.sendDisplacements.baseAddress, datatype,
                           receive.baseAddress, arguments.receiveCounts.baseAddress, arguments.receiveDisplacements.baseAddress,
                           datatype, handle, &request), call)
        requests.append(request)
    }

    private static let distinctEmptySend = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64))

    /// Both sides of an all-to-all-v checked against their buffers (`checkExtents`).
    private func checkExtents(
        send: UnsafeRawBufferPointer, sendCounts: [Int], sendDisplacements: [Int],
        receive: UnsafeMutableRawBufferPointer, receiveCounts: [Int], receiveDisplacements: [Int], rowBytes: Int, call: String
    ) throws(MPIError) {
        try Self.checkExtents(counts: sendCounts, displacements: sendDisplacements, rowBytes: rowBytes,
                              bufferBytes: send.count, peers: size, call: call, side: "send")
        try Self.checkExtents(counts: receiveCounts, displacements: receiveDisplacements, rowBytes: rowBytes,
                              bufferBytes: receive.count, peers: size, call: call, side: "receive")
    }

    static func checkExtents(
        counts: [Int], displacements: [Int], rowBytes: Int, bufferBytes: Int, peers: Int, call: String, side: String
    ) throws(MPIError) {
        guard counts.count == peers, displacements.count == peers else {
            throw .invalidArgument(call: call, detail: "\(side) counts/displacements must have \(peers) entries")
        }
        for peer in 0..<peers {
            let end = (displacements[peer] + counts[peer]) * rowBytes
            guard counts[peer] >= 0, displacements[peer] >= 0, end <= bufferBytes else {
                throw .invalidArgument(
                    call: call,
                    detail: "\(side) rows \(displacements[peer])..<\(displacements[peer] + counts[peer]) for rank \(peer) exceed a buffer of \(bufferBytes / max(rowBytes, 1)) rows")
            }
        }
    }

    /// Every rank passes whether it failed; every rank gets the same verdict: `nil` when no rank
    /// failed, otherwise the lowest failing rank (so exactly one rank reports, and the others stop
    /// quietly). Use before any collective that depends on a locally checked input, so no rank is
    /// left waiting for one that gave up.
    /// Every rank learns `root`'s outcome — a value, or the one line that says why it failed:
    /// agree-before-failing when only `root` can fail (it alone creates a file, reads a log).
    /// Other ranks' `outcome` is ignored. Collective over the communicator.
    public func broadcastOutcome(_ outcome: Result<String, RootFailure>, root: Int) throws(MPIError) -> Result<String, RootFailure> {
        let bytes: [UInt8]
        switch outcome {
        case let .success(value): bytes = [0] + Array(value.utf8)
        case let .failure(failure): bytes = [1] + Array(failure.message.utf8)
        }
        let received = try broadcastBytes(bytes, root: root)
        let text = String(decoding: received.dropFirst(), as: UTF8.self)
        return received.first == 0 ? .success(text) : .failure(RootFailure(message: text))
    }

    public func lowestFailingRank(failed: Bool) throws(MPIError) -> Int? {
        let lowest = try allReduce(failed ? rank : size, .minimum)
        return lowest < size ? lowest : nil
    }
}

/// The `int` count and displacement arrays of one `MPI_Ialltoallv`, which the library may read
/// until the request completes: fixed addresses, reused by the next call once it has.
@MainActor
public final class AllToAllVArguments {
    fileprivate private(set) var sendCounts = UnsafeMutableBufferPointer<Int32>(start: nil, count: 0)
    fileprivate private(set) var sendDisplacements = UnsafeMutableBufferPointer<Int32>(start: nil, count: 0)
    fileprivate private(set) var receiveCounts = UnsafeMutableBufferPointer<Int32>(start: nil, count: 0)
    fileprivate private(set) var receiveDisplacements = UnsafeMutableBufferPointer<Int32>(start: nil, count: 0)

    public init() {}

    isolated deinit {
        for buffer in [sendCounts, sendDisplacements, receiveCounts, receiveDisplacements] { buffer.deallocate() }
    }

    fileprivate func fill(_ sc: [Int], _ sd: [Int], _ rc: [Int], _ rd: [Int], call: String) throws(MPIError) {
        func copy(_ values: [Int], into buffer: inout UnsafeMutableBufferPointer<Int32>, what: String) throws(MPIError) {
            if buffer.count != values.count {
                buffer.deallocate()
                buffer = .allocate(capacity: values.count)
            }
            for (index, value) in values.enumerated() { buffer[index] = try MPIError.int32(value, call, what) }
        }
        try copy(sc, into: &sendCounts, what: "count")
        try copy(sd, into: &sendDisplacements, what: "displacement")
        try copy(rc, into: &receiveCounts, what: "count")
        try copy(rd, into: &receiveDisplacements, what: "displacement")
    }
}

/// Why the one rank that could fail did (`Communicator.broadcastOutcome`).
public struct RootFailure: Error, Equatable, Sendable {
    public let message: String
    public init(message: String) { self.message = message }
}
