internal import CMPI

/// A group of ranks that talk to each other: wraps an `MPI_Comm`.
///
/// Rank and size are read once at creation. Sub-communicators from `split` and
/// `splitBySharedMemory` live until `MPI_Finalize` (they are few and long-lived, and freeing a
/// communicator in `deinit` could run after finalisation). Not `Sendable`: MPI is driven from the
/// main thread only.
@MainActor
public final class Communicator {
    let handle: OpaquePointer?
    /// This process's rank in the communicator, `0..<size`.
    public let rank: Int
    /// Number of ranks in the communicator.
    public let size: Int
    private let ownsHandle: Bool
    /// Contiguous datatypes of N bytes, committed on first use and kept until `MPI_Finalize`.
    private var rowDatatypes: [Int: OpaquePointer?] = [:]

    init(handle: OpaquePointer?, ownsHandle: Bool) throws(MPIError) {
        self.handle = handle
        self.ownsHandle = ownsHandle
        var rank: Int32 = 0
        var size: Int32 = 0
        try MPIError.check(MPI_Comm_rank(handle, &rank), "MPI_Comm_rank")
        try MPIError.check(MPI_Comm_size(handle, &size), "MPI_Comm_size")
        self.rank = Int(rank)
        self.size = Int(size)
    }

    /// Wraps `MPI_Comm_split`: ranks with the same `color` form a new communicator, ordered by
    /// `key` then by rank here. A negative `color` means "not in any group" and yields `nil`.
    public func split(color: Int, key: Int) throws(MPIError) -> Communicator? {
        var newHandle: OpaquePointer? = cmpi_comm_null()
        let mpiColor = color < 0 ? cmpi_undefined() : try MPIError.int32(color, "MPI_Comm_split", "color")
        let mpiKey = try MPIError.int32(key, "MPI_Comm_split", "key")
        try MPIError.check(MPI_Comm_split(handle, mpiColor, mpiKey, &newHandle), "MPI_Comm_split")
        if newHandle == cmpi_comm_null() { return nil }
        return try Communicator(handle: newHandle, ownsHandle: true)
    }

    /// Wraps `MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)`: the ranks that share memory with this
    /// one (on a cluster, the ranks of this node), ordered by rank here.
    public func splitBySharedMemory() throws(MPIError) -> Communicator {
        var newHandle: OpaquePointer? = cmpi_comm_null()
        try MPIError.check(
            MPI_Comm_split_type(handle, cmpi_comm_type_shared(), Int32(rank), cmpi_info_null(), &newHandle),
            "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)")
        return try Communicator(handle: newHandle, ownsHandle: true)
    }

    /// Wraps `MPI_Get_processor_name`: the host this rank runs on.
    public nonisolated static func processorName() -> String {
        var buffer = [CChar](repeating: 0, count: Int(cmpi_max_processor_name()) + 1)
        var length: Int32 = 0
        guard MPI_Get_processor_name(&buffer, &length) == cmpi_success() else { return "unknown" }
        return String(decoding: buffer[..<Int(length)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// An MPI datatype of `bytes` contiguous bytes (`MPI_Type_contiguous` of `MPI_BYTE`), so
    /// counts and displacements can be given in rows and stay within MPI's `int` for large
    /// buffers. One-byte rows use `MPI_BYTE` itself.
    func rowDatatype(bytes: Int) throws(MPIError) -> OpaquePointer? {
        if bytes == 1 { return cmpi_byte() }
        if let cached = rowDatatypes[bytes] { return cached }
        guard bytes > 0 else { throw .invalidArgument(call: "MPI_Type_contiguous", detail: "row of \(bytes) bytes") }
        var datatype: OpaquePointer? = cmpi_datatype_null()
        let count = try MPIError.int32(bytes, "MPI_Type_contiguous", "row size")
        try MPIError.check(MPI_Type_contiguous(count, cmpi_byte(), &datatype), "MPI_Type_contiguous")
        try MPIError.check(MPI_Type_commit(&datatype), "MPI_Type_commit")
        rowDatatypes[bytes] = datatype
        return datatype
    }
}
