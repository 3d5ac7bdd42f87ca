internal import CMPI

/// An MPI call that failed, or a request the wrapper refused before calling MPI.
///
/// MPI errors are returned rather than fatal: `MPIRuntime.initialize` installs
/// `MPI_ERRORS_RETURN` on the world communicator (inherited by every communicator split from it).
public enum MPIError: Error, Equatable, CustomStringConvertible {
    /// `call` returned `code`; `message` is `MPI_Error_string(code)`.
    case callFailed(call: String, code: Int32, message: String)
    /// The arguments cannot be expressed to MPI (a count above `Int32.max`, a buffer too small).
    case invalidArgument(call: String, detail: String)

    public var description: String {
        switch self {
        case let .callFailed(call, code, message): return "\(call) failed with MPI error \(code): \(message)"
        case let .invalidArgument(call, detail): return "\(call): \(detail)"
        }
    }

    /// Turns an MPI return code into a thrown `MPIError` carrying `MPI_Error_string`.
    static func check(_ code: Int32, _ call: @autoclosure () -> String) throws(MPIError) {
        guard code != cmpi_success() else { return }
        throw .callFailed(call: call(), code: code, message: errorString(code))
    }

    static func errorString(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: Int(cmpi_max_error_string()) + 1)
        var length: Int32 = 0
        guard MPI_Error_string(code, &buffer, &length) == cmpi_success() else { return "unknown MPI error" }
        return String(decoding: buffer[..<Int(length)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// An `Int` count or displacement as MPI's `int`, or an error naming the call.
    static func int32(_ value: Int, _ call: String, _ what: String) throws(MPIError) -> Int32 {
        guard let narrow = Int32(exactly: value), narrow >= 0 else {
            throw .invalidArgument(call: call, detail: "\(what) \(value) does not fit MPI's int")
        }
        return narrow
    }
}
