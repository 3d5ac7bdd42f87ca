import Foundation

/// Why a file could not be read or written; `description` names the path.
public struct FileAccessError: Error, Equatable, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}

/// Reads whole small files (configuration, topology) with a size cap checked before reading,
/// so a mistaken path to a multi-gigabyte file is an error, not an allocation.
public enum BoundedFileReader {
    /// Largest configuration file we read whole: 16 MiB.
    public static let defaultLimit = 16 << 20

    public static func read(_ path: String, limit: Int = defaultLimit) throws(FileAccessError) -> [UInt8] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw FileAccessError(path: path, reason: "no such file")
        }
        guard !isDirectory.boolValue else { throw FileAccessError(path: path, reason: "is a directory, not a file") }
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw FileAccessError(path: path, reason: "cannot be opened for reading (permissions?)")
        }
        defer { try? handle.close() }
        let size: UInt64
        do { size = try handle.seekToEnd(); try handle.seek(toOffset: 0) } catch {
            throw FileAccessError(path: path, reason: "cannot be read: \(error.localizedDescription)")
        }
        guard size <= UInt64(limit) else {
            throw FileAccessError(path: path, reason: "is \(size) bytes, larger than the \(limit)-byte limit for this kind of file")
        }
        do { return Array(try handle.readToEnd() ?? Data()) } catch {
            throw FileAccessError(path: path, reason: "cannot be read: \(error.localizedDescription)")
        }
    }
}
