import Foundation

/// Why a file could not be read or written; `description` names the path.
public struct FileAccessError: Error, Equatable, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}

/// What kind of file a path names, from `stat(2)` after following links.
public enum FileKind: Equatable, Sendable {
    case regular, directory, characterDevice, blockDevice, fifo, socket, other, missing

    public static func of(_ path: String) -> FileKind {
        var status = stat()
        guard stat(path, &status) == 0 else { return .missing }
        return FileKind(mode: status.st_mode)
    }

    /// The kind named by the type bits of a `st_mode`.
    public init(mode: mode_t) {
        switch mode & S_IFMT {
        case S_IFREG: self = .regular
        case S_IFDIR: self = .directory
        case S_IFCHR: self = .characterDevice
        case S_IFBLK: self = .blockDevice
        case S_IFIFO: self = .fifo
        case S_IFSOCK: self = .socket
        default: self = .other
        }
    }

    /// "a FIFO (named pipe)", for messages.
    public var phrase: String {
        switch self {
        case .regular: return "a regular file"
        case .directory: return "a directory"
        case .characterDevice: return "a character device"
        case .blockDevice: return "a block device"
        case .fifo: return "a FIFO (named pipe)"
        case .socket: return "a socket"
        case .other: return "not a regular file"
        case .missing: return "missing"
        }
    }
}

/// Reads whole small files (configuration, topology, stats logs, .npy) with a size cap on the
/// bytes actually read — `stat` says 0 for pipes and devices, so a cap checked against it alone
/// would let `/dev/zero` grow without bound. Only regular files are read: a FIFO, socket or device
/// is refused before anything blocks (the open is non-blocking, and the kind is checked on the
/// open descriptor).
public enum BoundedFileReader {
    /// Largest configuration file we read whole: 16 MiB.
    public static let defaultLimit = 16 << 20

    public static func read(_ path: String, limit: Int = defaultLimit) throws(FileAccessError) -> [UInt8] {
        let descriptor = try openRegularFile(path)
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw FileAccessError(path: path, reason: "cannot be read: \(String(cString: strerror(errno)))") }
        guard Int(status.st_size) <= limit else {
            throw FileAccessError(path: path, reason: "is \(status.st_size) bytes, larger than the \(limit)-byte limit for this kind of file")
        }
        var bytes = [UInt8](repeating: 0, count: Int(status.st_size))
        var total = 0
        // Read until end of file, never past limit + 1 bytes: a file that grows while we read is
        // still bounded.
        while true {
            if total == bytes.count {
                guard total <= limit else { break }
                bytes.append(contentsOf: [UInt8](repeating: 0, count: min(max(4096, total), limit + 1 - total)))
            }
            let count = bytes.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress! + total, $0.count - total) }
            if count < 0 {
                if errno == EINTR { continue }
                throw FileAccessError(path: path, reason: "cannot be read: \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            total += count
        }
        guard total <= limit else {
            throw FileAccessError(path: path, reason: "holds more than the \(limit)-byte limit for this kind of file")
        }
        return Array(bytes[0..<total])
    }

    /// Opens `path` for reading without blocking, and returns the descriptor only if it is a
    /// regular file; anything else is a `FileAccessError` naming what it is.
    public static func openRegularFile(_ path: String) throws(FileAccessError) -> Int32 {
        guard !path.isEmpty else { throw FileAccessError(path: path, reason: "empty path") }
        let descriptor = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else {
            let code = errno
            switch code {
            case ENOENT: throw FileAccessError(path: path, reason: "no such file")
            case EACCES: throw FileAccessError(path: path, reason: "cannot be opened for reading (permission denied)")
            default:
                if FileKind.of(path) == .directory { throw FileAccessError(path: path, reason: "is a directory, not a file") }
                throw FileAccessError(path: path, reason: "cannot be opened: \(String(cString: strerror(code)))")
            }
        }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            close(descriptor)
            throw FileAccessError(path: path, reason: "cannot be read: \(String(cString: strerror(errno)))")
        }
        let kind = FileKind(mode: status.st_mode)
        guard kind == .regular else {
            close(descriptor)
            if kind == .directory { throw FileAccessError(path: path, reason: "is a directory, not a file") }
            throw FileAccessError(path: path, reason: "is \(kind.phrase), not a regular file; give a file")
        }
        // Regular files never block; clear the flag so reads behave normally.
        _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) & ~O_NONBLOCK)
        return descriptor
    }
}
