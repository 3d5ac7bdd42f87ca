import Foundation

/// Writes a file so that readers see either the old file or the complete new one, never a
/// partial write: the bytes go to a temporary name in the same directory, are flushed, then
/// renamed over the target (`rename(2)` is atomic within a file system). An existing file is
/// untouched if anything fails.
public enum AtomicFileWriter {
    public static func write(_ bytes: [UInt8], to path: String) throws(FileAccessError) {
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        let temporary = (directory.isEmpty ? "" : directory + "/") + ".\(name).partial-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: nil) ,
              let handle = FileHandle(forWritingAtPath: temporary) else {
            throw FileAccessError(path: path, reason: "cannot be written (does the directory exist and is it writable?)")
        }
        do {
            try handle.write(contentsOf: bytes)
            try handle.synchronize()
            try handle.close()
        } catch {
            try? handle.close()
            unlink(temporary)
            throw FileAccessError(path: path, reason: "cannot be written: \(error.localizedDescription)")
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
}
