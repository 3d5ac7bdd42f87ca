internal import CMPI
#if canImport(Glibc)
import Glibc
#endif

/// The MPI library's lifetime in this process: `MPI_Init_thread` to `MPI_Finalize`.
///
/// Exactly one per process, created by the executable's `main` and passed down; there is no
/// global world communicator. MPI is initialised with `MPI_THREAD_FUNNELED`: only the main thread
/// calls MPI, which `@MainActor` makes the compiler check. Works in singleton mode (a binary
/// started without `mpirun` is a world of one rank).
@MainActor
public final class MPIRuntime {
    /// Every rank of the job.
    public let world: Communicator
    private var finalized = false

    private init(world: Communicator) { self.world = world }

    /// Wraps `MPI_Init_thread(MPI_THREAD_FUNNELED)` and installs `MPI_ERRORS_RETURN` on
    /// `MPI_COMM_WORLD`, so failures come back as `MPIError` instead of killing the job.
    public static func initialize() throws(MPIError) -> MPIRuntime {
        var provided: Int32 = 0
        try MPIError.check(MPI_Init_thread(nil, nil, cmpi_thread_funneled(), &provided), "MPI_Init_thread")
        let world = cmpi_comm_world()
        try MPIError.check(MPI_Comm_set_errhandler(world, cmpi_errors_return()), "MPI_Comm_set_errhandler")
        return MPIRuntime(world: try Communicator(handle: world, ownsHandle: false))
    }

    /// Wraps `MPI_Finalize`. Call once, after the last collective; later calls do nothing.
    public func finalize() {
        guard !finalized else { return }
        finalized = true
        _ = MPI_Finalize()
    }

    /// Ends every rank of the job: prints `message` as one line on standard error, then wraps
    /// `MPI_Abort(MPI_COMM_WORLD, exitCode)`. For failures some ranks may not know about (a rank
    /// that cannot continue while others wait in a collective); failures every rank agrees on
    /// should instead finalize and exit, which keeps `mpirun`'s output short.
    public func abortAll(_ message: String, exitCode: Int32 = 1) -> Never {
        writeStandardError(message + "\n")
        _ = MPI_Abort(cmpi_comm_world(), exitCode)
        exit(exitCode)
    }

    /// `MPI_Wtime`: seconds since an arbitrary origin, monotonic within this process.
    public nonisolated static func wallTime() -> Double { MPI_Wtime() }

    /// The MPI library's own version string (`MPI_Get_library_version`), first line only.
    public nonisolated static func libraryVersion() -> String {
        var buffer = [CChar](repeating: 0, count: 8192)
        var length: Int32 = 0
        guard MPI_Get_library_version(&buffer, &length) == cmpi_success() else { return "unknown" }
        let text = String(decoding: buffer[..<Int(length)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return text.split(separator: "\n").first.map { String($0).trimmingCharacters(in: " ,\u{0}") } ?? text
    }
}

/// Writes text to standard error unbuffered, so it is not lost if the process is killed next.
public func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    bytes.withUnsafeMutableBytes { buffer in
        var offset = 0
        while offset < buffer.count {
            let written = write(2, buffer.baseAddress! + offset, buffer.count - offset)
            if written <= 0 { break }
            offset += written
        }
    }
}

private extension String {
    func trimmingCharacters(in characters: String) -> String {
        var slice = Substring(self)
        while let first = slice.first, characters.contains(first) { slice.removeFirst() }
        while let last = slice.last, characters.contains(last) { slice.removeLast() }
        return String(slice)
    }
}
