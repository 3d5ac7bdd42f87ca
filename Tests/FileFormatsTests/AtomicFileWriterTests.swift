import Foundation
import Testing
@testable import FileFormats

@Suite("Atomic file writes and bounded reads")
struct FileAccessTests {
    @Test("a write replaces the file whole and leaves no temporary behind")
    func replaces() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("moe-atomic-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/out.json"
        try AtomicFileWriter.write("first", to: path)
        try AtomicFileWriter.write("second", to: path)
        #expect(try BoundedFileReader.read(path) == Array("second".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["out.json"])
    }

    @Test("writing into a missing directory fails and names the path")
    func missingDirectory() {
        #expect(throws: FileAccessError.self) { try AtomicFileWriter.write("x", to: "/nonexistent-dir-\(UUID())/f") }
    }

    @Test("a file over the limit is refused before it is read")
    func limit() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moe-big-\(UUID())").path
        try AtomicFileWriter.write([UInt8](repeating: 1, count: 100), to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: FileAccessError(path: path, reason: "is 100 bytes, larger than the 99-byte limit for this kind of file")) {
            try BoundedFileReader.read(path, limit: 99)
        }
        #expect(throws: FileAccessError(path: "/nonexistent-\(0)", reason: "no such file")) { try BoundedFileReader.read("/nonexistent-0") }
    }
}
