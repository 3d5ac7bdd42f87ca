internal import CMPI

/// Outstanding nonblocking operations, completed together by `waitAll`: wraps an array of
/// `MPI_Request`. Reused across exchanges; its storage only grows, so steady-state exchanges do
/// not allocate.
@MainActor
public final class RequestList {
    private var requests: [OpaquePointer?] = []

    public init(capacity: Int = 0) { requests.reserveCapacity(capacity) }

    public var isEmpty: Bool { requests.isEmpty }
    public var count: Int { requests.count }

    func append(_ request: OpaquePointer?) { requests.append(request) }

    /// Wraps `MPI_Waitall`; afterwards the list is empty (capacity kept).
    public func waitAll() throws(MPIError) {
        guard !requests.isEmpty else { return }
        let count = Int32(requests.count)
        let code = requests.withUnsafeMutableBufferPointer {
            MPI_Waitall(count, $0.baseAddress, cmpi_statuses_ignore())
        }
        requests.removeAll(keepingCapacity: true)
        try MPIError.check(code, "MPI_Waitall")
    }

    /// Wraps `MPI_Testall`: true (and the list emptied) when every request has completed; false
    /// leaves every request outstanding. Each call also lets the library progress messages.
    public func testAll() throws(MPIError) -> Bool {
        guard !requests.isEmpty else { return true }
        let count = Int32(requests.count)
        var flag: Int32 = 0
        let code = requests.withUnsafeMutableBufferPointer {
            MPI_Testall(count, $0.baseAddress, &flag, cmpi_statuses_ignore())
        }
        try MPIError.check(code, "MPI_Testall")
        guard flag != 0 else { return false }
        requests.removeAll(keepingCapacity: true)
        return true
    }
}

extension Communicator {
    /// Wraps `MPI_Isend` of `rows` rows of `rowBytes` bytes to `destination`; the request joins
    /// `requests`. The buffer must stay valid and unchanged until `requests.waitAll()`.
    public func sendNonblocking(
        _ buffer: UnsafeRawPointer?, rows: Int, rowBytes: Int, to destination: Int, tag: Int,
        into requests: RequestList
    ) throws(MPIError) {
        var request: OpaquePointer? = cmpi_request_null()
        let count = try MPIError.int32(rows, "MPI_Isend", "count")
        try MPIError.check(
            MPI_Isend(buffer, count, try rowDatatype(bytes: rowBytes), Int32(destination), Int32(tag), handle, &request),
            "MPI_Isend to rank \(destination)")
        requests.append(request)
    }

    /// Wraps `MPI_Irecv` of `rows` rows of `rowBytes` bytes from `source`; the request joins
    /// `requests`. The buffer must stay valid until `requests.waitAll()`.
    public func receiveNonblocking(
        _ buffer: UnsafeMutableRawPointer?, rows: Int, rowBytes: Int, from source: Int, tag: Int,
        into requests: RequestList
    ) throws(MPIError) {
        var request: OpaquePointer? = cmpi_request_null()
        let count = try MPIError.int32(rows, "MPI_Irecv", "count")
        try MPIError.check(
            MPI_Irecv(buffer, count, try rowDatatype(bytes: rowBytes), Int32(source), Int32(tag), handle, &request),
            "MPI_Irecv from rank \(source)")
        requests.append(request)
    }
}
