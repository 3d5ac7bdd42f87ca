import Foundation
import Testing
@testable import FileFormats

private func temporaryPath(_ name: String) -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("moe-\(UUID())-\(name)").path
}

@Suite(".npy files")
struct NpyTests {
    @Test("a float32 array round-trips, with the data on a 64-byte boundary")
    func roundTrip() throws {
        let array = NpyArray(float32: [1, -2, 3.5, 0, 5, 6], shape: [2, 3])
        let bytes = array.encoded()
        #expect((bytes.count - 24) % 64 == 0)
        let parsed = try NpyArray.parse(bytes, path: "a.npy")
        #expect(parsed == array)
        #expect(parsed.float32Values == [1, -2, 3.5, 0, 5, 6])
    }

    @Test("a header written by numpy is read (1-D int64 with trailing comma in the shape)")
    func numpyHeader() throws {
        let header = "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }"
        let padded = header + String(repeating: " ", count: 128 - 10 - header.count - 1) + "\n"
        var bytes: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(padded.count), 0] + Array(padded.utf8)
        for value: Int64 in [7, -1, 2] { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        #expect(try NpyArray.parse(bytes, path: "ids.npy").integerValues == [7, -1, 2])
    }

    @Test("bad files are refused with the reason", arguments: [
        ("magic", "x.npy: not a .npy file (bad magic)"),
        ("truncated", "x.npy: shape [2, 3] of <f4 needs 24 data bytes but the file has 20"),
        ("fortran", "x.npy: Fortran-order arrays are not supported (save with C order)"),
        ("huge", "x.npy: shape [1000000000000000, 1000000] is too large"),
        ("dtype", "x.npy: unsupported dtype <f8: expected float32 ('<f4'), int32 ('<i4') or int64 ('<i8')"),
    ])
    func invalid(kind: String, message: String) {
        var bytes = NpyArray(float32: [1, 2, 3, 4, 5, 6], shape: [2, 3]).encoded()
        // Edits the header in place, keeping its length (the padding absorbs the difference).
        func replaceHeader(_ from: String, _ to: String) {
            let length = Int(bytes[8]) | Int(bytes[9]) << 8
            let header = String(decoding: bytes[10..<10 + length], as: UTF8.self)
            let edited = header.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: from, with: to)
            let padded = edited + String(repeating: " ", count: length - edited.utf8.count - 1) + "\n"
            bytes.replaceSubrange(10..<10 + length, with: Array(padded.utf8))
        }
        switch kind {
        case "magic": bytes[1] = 0
        case "truncated": bytes.removeLast(4)
        case "fortran": replaceHeader("False", "True ")
        case "huge": replaceHeader("(2, 3)", "(1000000000000000, 1000000)")
        default: replaceHeader("<f4", "<f8")
        }
        #expect { try NpyArray.parse(bytes, path: "x.npy") } throws: { "\($0)" == message }
    }
}

@Suite("safetensors files")
struct SafetensorsTests {
    @Test("write then read one tensor by name, with metadata")
    func roundTrip() throws {
        let path = temporaryPath("w.safetensors")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try SafetensorsWriter.write([("a", [2, 2], [1, 2, 3, 4]), ("b.c", [3], [5, 6, 7])], metadata: ["seed": "1"], to: path)
        let reader = try SafetensorsReader(path: path)
        #expect(reader.metadata == ["seed": "1"])
        #expect(reader.entries["b.c"] == SafetensorsEntry(dtype: "F32", shape: [3], dataRange: 16..<28))
        #expect(try reader.readFloat32("b.c", shape: [3]) == [5, 6, 7])
        #expect(try reader.readFloat32("a", shape: [2, 2]) == [1, 2, 3, 4])
    }

    @Test("a missing tensor or a wrong shape names the tensor")
    func missingAndShape() throws {
        let path = temporaryPath("w.safetensors")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try SafetensorsWriter.write([("a", [2, 2], [1, 2, 3, 4])], to: path)
        let reader = try SafetensorsReader(path: path)
        #expect { try reader.readFloat32("layers.0.experts.5.w1", shape: [2, 2]) } throws: {
            "\($0)" == "\(path): tensor 'layers.0.experts.5.w1': missing"
        }
        #expect { try reader.readFloat32("a", shape: [4]) } throws: { "\($0)" == "\(path): tensor 'a': shape is [2, 2], expected [4]" }
    }

    @Test("a truncated file is refused when opened, naming the tensor whose data is cut")
    func truncated() throws {
        let path = temporaryPath("w.safetensors")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try SafetensorsWriter.write([("a", [2], [1, 2]), ("b", [4], [1, 2, 3, 4])], to: path)
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.truncate(atOffset: try handle.seekToEnd() - 4)
        try handle.close()
        #expect { try SafetensorsReader(path: path) } throws: {
            "\($0)" == "\(path): tensor 'b': data_offsets end 24 is past the data section of 20 bytes (truncated file?)"
        }
    }

    @Test("a header that claims 10^15 bytes is an error, not an allocation")
    func hugeHeader() throws {
        let path = temporaryPath("w.safetensors")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let size = withUnsafeBytes(of: UInt64(1_000_000_000_000_000).littleEndian) { Array($0) }
        try AtomicFileWriter.write(size + Array("{}".utf8), to: path)
        #expect { try SafetensorsReader(path: path) } throws: { "\($0)".contains("header claims 1000000000000000 bytes") }
    }

    @Test("inconsistent entries are refused", arguments: [
        (#"{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#, "tensor 'a': shape [3] of F32 needs 12 bytes but data_offsets span 8"),
        (#"{"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 4]}}"#, "tensor 'a': unknown dtype Q4"),
        (#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}"#, "tensor 'a': data_offsets must be [begin, end] with 0 ≤ begin ≤ end, got [8, 4]"),
        (#"{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#, "tensor 'a': negative dimension -1"),
        (#"{"a": 3}"#, "tensor 'a': malformed entry: field 'a': expected an object, found a number"),
    ])
    func inconsistent(header: String, message: String) throws {
        let path = temporaryPath("w.safetensors")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let headerBytes = Array(header.utf8)
        try AtomicFileWriter.write(withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { Array($0) } + headerBytes + [UInt8](repeating: 0, count: 16), to: path)
        #expect { try SafetensorsReader(path: path) } throws: { "\($0)" == "\(path): \(message)" }
    }
}
