import Foundation
import Testing
@testable import FileFormats

private func scratchPath(_ name: String) -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("moe-\(UUID())-\(name)").path
}

@Suite("Files: tiling of safetensors data, npy headers, atomic writes, output checks")
struct ReliabilityRoundTwoFileTests {
    func safetensors(_ header: String, dataBytes: Int) throws -> String {
        let path = scratchPath("w.safetensors")
        let headerBytes = Array(header.utf8)
        try AtomicFileWriter.write(withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { Array($0) } + headerBytes
                                   + [UInt8](repeating: 0, count: dataBytes), to: path)
        return path
    }

    @Test("tensors must tile the data section: overlap, aliasing, gaps and unindexed bytes are refused", arguments: [
        (#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#, 12,
         "tensor 'b': data_offsets 4..<12 overlap the previous tensor's data (ending at 8)"),
        (#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, 8,
         "tensor 'b': data_offsets 0..<8 overlap the previous tensor's data (ending at 8)"),
        (#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}"#, 12,
         "tensor 'b': data_offsets 8..<12 leave a gap after byte 4 of the data section"),
        (#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#, 16,
         "tensors cover 4 of the 16 bytes of the data section (the format allows no unindexed bytes)"),
    ])
    func tiling(header: String, dataBytes: Int, message: String) throws {
        let path = try safetensors(header, dataBytes: dataBytes)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect { try SafetensorsReader(path: path) } throws: { "\($0)" == "\(path): \(message)" }
    }

    @Test("tensors in any header order that tile the data are accepted, zero-size ones included")
    func tilingAccepted() throws {
        let path = try safetensors(#"{"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}, "z": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#, dataBytes: 8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try SafetensorsReader(path: path).entries.count == 3)
    }

    @Test("BF16 and F16 tensors widen to float32 exactly")
    func halfPrecisionWidening() throws {
        // BF16 1.5 = 0x3FC0, −2 = 0xC000; F16 1.5 = 0x3E00, 2^-24 (smallest subnormal) = 0x0001, −inf = 0xFC00.
        let bf16: [UInt16] = [0x3FC0, 0xC000]
        let f16: [UInt16] = [0x3E00, 0x0001, 0xFC00]
        let header = #"{"b": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}, "h": {"dtype": "F16", "shape": [3], "data_offsets": [4, 10]}}"#
        let headerBytes = Array(header.utf8)
        let data = (bf16 + f16).flatMap { withUnsafeBytes(of: $0.littleEndian) { Array($0) } }
        let path = scratchPath("half.safetensors")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try AtomicFileWriter.write(withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { Array($0) } + headerBytes + data, to: path)
        let reader = try SafetensorsReader(path: path)
        #expect(try reader.readFloats("b", shape: [2]) == [1.5, -2])
        #expect(try reader.readFloats("h", shape: [3]) == [1.5, 0x1p-24, -.infinity])
        #expect { try reader.readFloat32("b", shape: [2]) } throws: { "\($0)".contains("dtype is BF16, expected F32") }
    }

    @Test("entries are counted before the header is parsed")
    func entryCount() {
        #expect(SafetensorsReader.occurrences(of: Array("\"data_offsets\"".utf8), in: Array(#"{"a":{"data_offsets":[0,0]},"b":{"data_offsets":[0,0]}}"#.utf8)) == 2)
        #expect(SafetensorsReader.entryLimit >= 100_000, "room for a real checkpoint's shard")
    }

    @Test("a .npy header without fortran_order says so")
    func npyWithoutFortranOrder() {
        let header = "{'descr': '<f4', 'shape': (1,), }"
        let padded = header + String(repeating: " ", count: 64 - 10 - header.count - 1) + "\n"
        let bytes: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(padded.count), 0] + Array(padded.utf8) + [0, 0, 128, 63]
        #expect { try NpyArray.parse(bytes, path: "x.npy") } throws: { "\($0)" == "x.npy: header has no fortran_order" }
    }

    @Test("only a slice of rows is read, and a slice past the end is an error")
    func npyRows() throws {
        let path = scratchPath("rows.npy")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try NpyArray(float32: (0..<12).map(Float.init), shape: [4, 3]).write(to: path)
        let (rows, shape) = try NpyArray.loadRows(path: path) { total in 1..<(total - 1) }
        #expect(shape == [4, 3] && rows.shape == [2, 3] && rows.float32Values == [3, 4, 5, 6, 7, 8])
        #expect { try NpyArray.loadRows(path: path) { _ in 2..<9 } } throws: { "\($0)".contains("has 4 rows, but rows 2..<9 are needed") }
    }

    @Test("paths split by hand: bare names, root, nested")
    func split() {
        #expect(AtomicFileWriter.split("a") == (".", "a"))
        #expect(AtomicFileWriter.split("/a") == ("/", "a"))
        #expect(AtomicFileWriter.split("x/y/z.npy") == ("x/y", "z.npy"))
    }

    @Test("the atomic writer replaces a regular file, refuses a symbolic link and a FIFO")
    func writerRefusals() throws {
        let target = scratchPath("t.json")
        let link = scratchPath("l.json")
        let fifo = scratchPath("f")
        defer { for path in [target, link, fifo] { unlink(path) } }
        try AtomicFileWriter.write("old", to: target)
        try AtomicFileWriter.write("new", to: target)
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "new")
        #expect(symlink(target, link) == 0)
        #expect { try AtomicFileWriter.write("x", to: link) } throws: { "\($0)".contains("is a symbolic link") }
        #expect(mkfifo(fifo, 0o644) == 0)
        #expect { try AtomicFileWriter.write("x", to: fifo) } throws: { "\($0)".contains("is a FIFO (named pipe)") }
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "new")
    }

    @Test("an output that is a hard link to an input is the same file")
    func hardLink() throws {
        let input = scratchPath("in.npy")
        let alias = scratchPath("alias.npy")
        defer { unlink(input); unlink(alias) }
        try AtomicFileWriter.write("x", to: input)
        #expect(link(input, alias) == 0)
        #expect {
            try OutputPaths.check(outputs: [NamedPath(option: "output", path: alias)], inputs: [NamedPath(option: "input", path: input)])
        } throws: { "\($0)".contains("is the same file as --input") }
        try OutputPaths.check(outputs: [NamedPath(option: "output", path: scratchPath("other.npy"))], inputs: [NamedPath(option: "input", path: input)])
    }

    @Test("bounded reads cap the bytes read and refuse what is not a regular file")
    func boundedReads() throws {
        let path = scratchPath("big.json")
        defer { unlink(path) }
        try AtomicFileWriter.write([UInt8](repeating: 32, count: 100), to: path)
        #expect(try BoundedFileReader.read(path, limit: 100).count == 100)
        #expect { try BoundedFileReader.read(path, limit: 99) } throws: { "\($0)".contains("larger than the 99-byte limit") }
        #expect { try BoundedFileReader.read(FileManager.default.temporaryDirectory.path) } throws: { "\($0)".contains("is a directory") }
        #expect { try BoundedFileReader.read("/dev/zero") } throws: { "\($0)".contains("is a character device, not a regular file") }
    }
}
