import Foundation

/// A file a command reads or writes, with the option that named it (for messages).
public struct NamedPath: Equatable, Sendable {
    public let option: String
    public let path: String

    public init(option: String, path: String) {
        self.option = option
        self.path = path
    }
}

/// Checks a command's outputs before it computes anything, so a run never ends by destroying a
/// file or failing to write what it computed:
/// - an output that exists must be a regular file (`/dev/null`, `/dev/stdout`, `/dev/stderr` are
///   accepted and written through, see `AtomicFileWriter`) — not a device, FIFO, directory or
///   symbolic link;
/// - an output must not be (after resolving links, or as the same inode) one of the inputs or
///   another output;
/// - an output's folder must exist and be writable.
public enum OutputPaths {
    public static func check(outputs: [NamedPath], inputs: [NamedPath]) throws(FileAccessError) {
        var seen: [(NamedPath, Identity)] = inputs.compactMap { input in Identity.of(input.path).map { (input, $0) } }
        for output in outputs {
            let path = output.path
            func refuse(_ reason: String) -> FileAccessError { FileAccessError(path: "--\(output.option) \(path)", reason: reason) }
            if AtomicFileWriter.writeThroughPaths.contains(path) { continue }
            guard !path.isEmpty else { throw refuse("empty path") }
            let (directory, name) = AtomicFileWriter.split(path)
            guard !name.isEmpty, name != ".", name != ".." else { throw refuse("names a folder, not a file") }
            var status = stat()
            if lstat(path, &status) == 0 {
                if status.st_mode & S_IFMT == S_IFLNK { throw refuse("is a symbolic link; refusing to replace it (name the file itself)") }
                if status.st_mode & S_IFMT != S_IFREG { throw refuse("exists and is \(FileKind(mode: status.st_mode).phrase); refusing to replace it") }
            }
            guard FileKind.of(directory) == .directory else { throw refuse("the folder \(directory) does not exist") }
            guard access(directory, W_OK | X_OK) == 0 else { throw refuse("the folder \(directory) is not writable") }
            guard let identity = Identity.of(path) else { throw refuse("the folder \(directory) cannot be resolved") }
            if let (other, _) = seen.first(where: { $0.1 == identity }) {
                let role = inputs.contains(other) ? "an input" : "another output"
                throw refuse("is the same file as --\(other.option) \(other.path) (\(role)); refusing to overwrite it")
            }
            seen.append((output, identity))
        }
    }

    /// A file's identity: its device and inode when it exists, else its canonical path.
    enum Identity: Equatable {
        case inode(device: UInt64, inode: UInt64)
        case canonical(String)

        static func of(_ path: String) -> Identity? {
            var status = stat()
            if stat(path, &status) == 0 { return .inode(device: UInt64(status.st_dev), inode: UInt64(status.st_ino)) }
            let (directory, name) = AtomicFileWriter.split(path)
            guard let resolved = realpath(directory, nil) else { return nil }
            defer { free(resolved) }
            return .canonical(String(cString: resolved) + "/" + name)
        }
    }
}
