import Foundation

/// Writes a file so that readers see either the old file or the complete new one, never a
/// partial write: the bytes go to a temporary name in the same directory, are flushed, then
/// renamed over the target (`rename(2)` is atomic within a file system). An existing file is
/// untouched if anything fails.
///
/// Only regular files are replaced. `/dev/null`, `/dev/stdout` and `/dev/stderr` are written
/// through (never renamed over: renaming over `/dev/null` as root would turn it into a regular
/// file); any other existing path that is not a regular file — a device, a FIFO, a directory, a
/// symbolic link — is refused. Temporaries are named `.NAME.partial-PID`; a writer removes the
/// stale ones of processes that no longer run, so a killed write leaves nothing behind for long.
/// Paths are split by hand, not by Foundation (whose path handling traps on one-letter names).
public enum AtomicFileWriter {
    /// Paths a user may name to discard or print an output; written through.
    public static let writeThroughPaths: Set<String> = ["/dev/null", "/dev/stdout", "/dev/stderr"]

    /// `("dir", "name")` of `dir/name`; the directory is "." for a bare name, "/" for `/name`.
    public static func split(_ path: String) -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }

    public static func write(_ bytes: [UInt8], to path: String) throws(FileAccessError) {
        if writeThroughPaths.contains(path) { return try writeThrough(bytes, to: path) }
        let (directory, name) = split(path)
        guard !name.isEmpty, name != ".", name != ".." else { throw FileAccessError(path: path, reason: "names a folder, not a file") }
        var status = stat()
        if lstat(path, &status) == 0, status.st_mode & S_IFMT != S_IFREG {
            let kind = status.st_mode & S_IFMT == S_IFLNK ? "a symbolic link" : FileKind(mode: status.st_mode).phrase
            throw FileAccessError(path: path, reason: "exists and is \(kind), not a regular file; refusing to replace it")
        }
        removeStaleTemporaries(directory: directory, name: name)
        let temporary = "\(directory)/.\(name).partial-\(getpid())"
        unlink(temporary)  // our own leftover from an earlier write in this process, if any
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        guard descriptor >= 0 else {
            let reason = String(cString: strerror(errno))
            throw FileAccessError(path: path, reason: "cannot be written in \(directory): \(reason)")
        }
        do throws(FileAccessError) {
            try writeAll(bytes, to: descriptor, path: path)
            guard fsync(descriptor) == 0 else { throw FileAccessError(path: path, reason: "cannot be flushed: \(String(cString: strerror(errno)))") }
        } catch {
            close(descriptor)
            unlink(temporary)
            throw error
        }
        guard close(descriptor) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw FileAccessError(path: path, reason: "cannot be written: \(reason)")
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw FileAccessError(path: path, reason: "cannot be renamed into place: \(reason)")
        }
    }

    public static func write(_ text: String, to path: String) throws(FileAccessError) {
        try write(Array(text.utf8), to: path)
    }

    /// Writes every byte to `descriptor`, retrying short writes; an error (a full disk, say) is
    /// a `FileAccessError` naming `path`.
    public static func writeAll(_ bytes: [UInt8], to descriptor: Int32, path: String) throws(FileAccessError) {
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress! + written, $0.count - written) }
            if count < 0 {
                if errno == EINTR { continue }
                throw FileAccessError(path: path, reason: "cannot be written: \(String(cString: strerror(errno)))")
            }
            written += count
        }
    }

    private static func writeThrough(_ bytes: [UInt8], to path: String) throws(FileAccessError) {
        let descriptor = open(path, O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw FileAccessError(path: path, reason: "cannot be opened: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        try writeAll(bytes, to: descriptor, path: path)
    }

    /// Removes `.NAME.partial-PID` files in `directory` whose process no longer exists.
    static func removeStaleTemporaries(directory: String, name: String) {
        let prefix = ".\(name).partial-"
        guard let folder = opendir(directory) else { return }
        defer { closedir(folder) }
        while let entry = readdir(folder) {
            // Read the name in place: copying `entry.pointee` would read the whole declared
            // `dirent` (280 bytes), past the end of a short record at the end of readdir's buffer.
            let nameAddress = UnsafeRawPointer(entry) + MemoryLayout<dirent>.offset(of: \dirent.d_name)!
            let file = String(cString: nameAddress.assumingMemoryBound(to: CChar.self))
            guard file.hasPrefix(prefix), let pid = Int32(file.dropFirst(prefix.count)), pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { unlink("\(directory)/\(file)") }
        }
    }
}
