import Foundation

/// Why a safetensors file was refused; names the file and, where there is one, the tensor.
public struct SafetensorsError: Error, Equatable, CustomStringConvertible {
    public let path: String
    public let tensor: String?
    public let problem: String
    public var description: String { tensor.map { "\(path): tensor '\($0)': \(problem)" } ?? "\(path): \(problem)" }
}

/// One tensor's entry in a safetensors header.
public struct SafetensorsEntry: Equatable, Sendable {
    public let dtype: String
    public let shape: [Int]
    /// Byte range inside the data section (after the header).
    public let dataRange: Range<Int>

    public var elementCount: Int { shape.reduce(1, *) }
}

/// Reads the safetensors format (huggingface/safetensors): 8 bytes little-endian header size N,
/// N bytes of JSON header `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
/// {...}}`, then the data section. Offsets are relative to the data section.
///
/// `open` reads and validates the header only — every entry's dtype, shape and offsets, against
/// the real file size, before anything is allocated from them. `readFloat32` then reads one
/// tensor's byte range with a seek, so a rank reads only the tensors it holds.
public final class SafetensorsReader {
    public let path: String
    public let entries: [String: SafetensorsEntry]
    public let metadata: [String: String]
    /// The file's size in bytes.
    public let fileSize: UInt64
    private let dataStart: UInt64
    private let handle: FileHandle

    /// Largest header accepted: 100 MB (the format's own reference implementation uses the same bound).
    public static let headerSizeLimit = 100_000_000

    public static let elementSizes: [String: Int] = [
        "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
        "F8_E4M3": 1, "F8_E5M2": 1,
    ]

    public init(path: String) throws(SafetensorsError) {
        func fail(_ problem: String, tensor: String? = nil) -> SafetensorsError { SafetensorsError(path: path, tensor: tensor, problem: problem) }
        let descriptor: Int32
        do { descriptor = try BoundedFileReader.openRegularFile(path) } catch { throw fail(error.reason) }
        let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        self.path = path
        self.handle = handle
        let fileSize: UInt64
        let headerBytes: [UInt8]
        do {
            fileSize = try handle.seekToEnd()
            try handle.seek(toOffset: 0)
            guard fileSize >= 8, let prefix = try handle.read(upToCount: 8), prefix.count == 8 else {
                throw fail("file of \(fileSize) bytes is too short for a safetensors header")
            }
            let headerSize = prefix.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
            guard headerSize <= UInt64(Self.headerSizeLimit), headerSize <= fileSize - 8 else {
                throw fail("header claims \(headerSize) bytes but the file has \(fileSize - 8) after the size field (truncated or not safetensors)")
            }
            headerBytes = Array(try handle.read(upToCount: Int(headerSize)) ?? Data())
            guard headerBytes.count == Int(headerSize) else { throw fail("truncated header") }
        } catch let error as SafetensorsError {
            throw error
        } catch {
            throw fail("cannot be read: \(error.localizedDescription)")
        }
        self.fileSize = fileSize
        dataStart = 8 + UInt64(headerBytes.count)
        let dataSize = Int(fileSize - dataStart)
        // Parsing costs about 700 bytes per entry; count entries cheaply before paying for that.
        let entryCount = Self.occurrences(of: Array("\"data_offsets\"".utf8), in: headerBytes)
        guard entryCount <= Self.entryLimit else {
            throw fail("header lists \(entryCount) tensors, more than the \(Self.entryLimit) this reader accepts in one file")
        }
        let document: JSONValue
        do { document = try JSONParser.parse(headerBytes) } catch { throw fail("header is not valid JSON (\(error))") }
        guard case let .object(members) = document else { throw fail("header is not a JSON object") }
        var entries: [String: SafetensorsEntry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in members {
            if name == "__metadata__" {
                guard case let .object(pairs) = value else { throw fail("__metadata__ is not an object") }
                for (key, text) in pairs {
                    guard case let .string(string) = text else { throw fail("__metadata__.\(key) is not a string") }
                    metadata[key] = string
                }
                continue
            }
            entries[name] = try Self.entry(name: name, value, dataSize: dataSize, path: path)
        }
        try Self.checkTiling(entries, dataSize: dataSize, path: path)
        self.entries = entries
        self.metadata = metadata
    }

    /// One header entry, checked against the data section's `dataSize` bytes.
    private static func entry(
        name: String, _ value: JSONValue, dataSize: Int, path: String
    ) throws(SafetensorsError) -> SafetensorsEntry {
        func fail(_ problem: String, tensor: String? = nil) -> SafetensorsError { SafetensorsError(path: path, tensor: tensor, problem: problem) }
        do {
            let entry = try JSONObjectReader(value, path: name)
            try entry.rejectUnknownKeys(allowed: ["dtype", "shape", "data_offsets"])
            let dtype = try entry.string("dtype")
            guard let elementSize = Self.elementSizes[dtype] else { throw fail("unknown dtype \(dtype)", tensor: name) }
            var shape: [Int] = []
            var elements = 1
            for (elementPath, dimension) in try entry.array("shape") {
                let size = try JSONObjectReader.integer(dimension, path: elementPath)
                guard size >= 0 else { throw fail("negative dimension \(size)", tensor: name) }
                let (product, overflow) = elements.multipliedReportingOverflow(by: size)
                guard !overflow, product <= dataSize else { throw fail("shape is larger than the file", tensor: name) }
                elements = product
                shape.append(size)
            }
            let offsets = try entry.array("data_offsets").map { (path: String, value: JSONValue) throws(JSONFieldError) in
                try JSONObjectReader.integer(value, path: path)
            }
            guard offsets.count == 2, offsets[0] >= 0, offsets[0] <= offsets[1] else {
                throw fail("data_offsets must be [begin, end] with 0 ≤ begin ≤ end, got \(offsets)", tensor: name)
            }
            guard offsets[1] <= dataSize else {
                throw fail("data_offsets end \(offsets[1]) is past the data section of \(dataSize) bytes (truncated file?)", tensor: name)
            }
            guard offsets[1] - offsets[0] == elements * elementSize else {
                throw fail("shape \(shape) of \(dtype) needs \(elements * elementSize) bytes but data_offsets span \(offsets[1] - offsets[0])", tensor: name)
            }
            return SafetensorsEntry(dtype: dtype, shape: shape, dataRange: offsets[0]..<offsets[1])
        } catch let error as SafetensorsError {
            throw error
        } catch {
            throw fail("malformed entry: \(error)", tensor: name)
        }
    }

    /// The format requires the data section to be indexed entirely, without holes: tensors in
    /// offset order must tile [0, dataSize) exactly — no overlap, no aliasing, no gap.
    private static func checkTiling(
        _ entries: [String: SafetensorsEntry], dataSize: Int, path: String
    ) throws(SafetensorsError) {
        func fail(_ problem: String, _ tensor: String?) -> SafetensorsError { SafetensorsError(path: path, tensor: tensor, problem: problem) }
        var expected = 0
        for (name, entry) in entries.sorted(by: { ($0.value.dataRange.lowerBound, $0.value.dataRange.upperBound, $0.key) < ($1.value.dataRange.lowerBound, $1.value.dataRange.upperBound, $1.key) }) {
            guard entry.dataRange.lowerBound == expected else {
                throw fail(entry.dataRange.lowerBound < expected
                           ? "data_offsets \(entry.dataRange) overlap the previous tensor's data (ending at \(expected))"
                           : "data_offsets \(entry.dataRange) leave a gap after byte \(expected) of the data section", name)
            }
            expected = entry.dataRange.upperBound
        }
        guard expected == dataSize else {
            throw fail("tensors cover \(expected) of the \(dataSize) bytes of the data section (the format allows no unindexed bytes)", nil)
        }
    }

    /// Most tensors one file may list (a whole 671B-parameter checkpoint has about 92 000, spread
    /// over many shards).
    public static let entryLimit = 200_000

    static func occurrences(of needle: [UInt8], in haystack: [UInt8]) -> Int {
        guard !needle.isEmpty, haystack.count >= needle.count else { return 0 }
        var count = 0
        var index = 0
        let first = needle[0]
        while index <= haystack.count - needle.count {
            if haystack[index] == first && haystack[index..<index + needle.count].elementsEqual(needle) {
                count += 1
                index += needle.count
            } else {
                index += 1
            }
        }
        return count
    }

    deinit { try? handle.close() }

    /// Reads one float32 tensor, checking its dtype and expected shape first.
    public func readFloat32(_ name: String, shape expectedShape: [Int]) throws(SafetensorsError) -> [Float] {
        guard let entry = entries[name] else { throw SafetensorsError(path: path, tensor: name, problem: "missing") }
        guard entry.dtype == "F32" else {
            throw SafetensorsError(path: path, tensor: name, problem: "dtype is \(entry.dtype), expected F32")
        }
        return try readFloats(name, shape: expectedShape)
    }

    /// The floating-point dtypes `readFloats` widens to float32.
    public static let floatDTypes = ["F32", "BF16", "F16"]

    /// Reads one F32, BF16 or F16 tensor as float32 (BF16 and F16 widen exactly), checking its
    /// expected shape first (nil: any shape).
    public func readFloats(_ name: String, shape expectedShape: [Int]?) throws(SafetensorsError) -> [Float] {
        guard let entry = entries[name] else { throw SafetensorsError(path: path, tensor: name, problem: "missing") }
        guard Self.floatDTypes.contains(entry.dtype) else {
            throw SafetensorsError(path: path, tensor: name, problem: "dtype \(entry.dtype) is not supported (\(Self.floatDTypes.joined(separator: ", ")))")
        }
        if let expectedShape, entry.shape != expectedShape {
            throw SafetensorsError(path: path, tensor: name, problem: "shape is \(entry.shape), expected \(expectedShape)")
        }
        let data = try bytes(of: name, entry)
        return data.withUnsafeBytes { raw in
            switch entry.dtype {
            case "BF16":
                return (0..<entry.elementCount).map {
                    Float(bitPattern: UInt32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))) << 16)
                }
            case "F16":
                return (0..<entry.elementCount).map {
                    Self.widenHalf(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)))
                }
            default:
                return (0..<entry.elementCount).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
            }
        }
    }

    /// One tensor's raw bytes (any dtype), checking its expected shape first.
    public func readBytes(_ name: String, shape expectedShape: [Int]) throws(SafetensorsError) -> [UInt8] {
        guard let entry = entries[name] else { throw SafetensorsError(path: path, tensor: name, problem: "missing") }
        guard entry.shape == expectedShape else {
            throw SafetensorsError(path: path, tensor: name, problem: "shape is \(entry.shape), expected \(expectedShape)")
        }
        return [UInt8](try bytes(of: name, entry))
    }

    /// The byte range of one entry, read with a seek.
    private func bytes(of name: String, _ entry: SafetensorsEntry) throws(SafetensorsError) -> Data {
        do {
            try handle.seek(toOffset: dataStart + UInt64(entry.dataRange.lowerBound))
            let data = try handle.read(upToCount: entry.dataRange.count) ?? Data()
            guard data.count == entry.dataRange.count else {
                throw SafetensorsError(path: path, tensor: name, problem: "file ends inside the tensor's data")
            }
            return data
        } catch let error as SafetensorsError {
            throw error
        } catch {
            throw SafetensorsError(path: path, tensor: name, problem: "cannot be read: \(error.localizedDescription)")
        }
    }

    /// IEEE 754 binary16 → float32, exactly (subnormals, infinities and NaN included).
    static func widenHalf(_ bits: UInt16) -> Float {
        let sign = UInt32(bits >> 15) << 31
        let exponent = Int((bits >> 10) & 0x1F)
        let mantissa = UInt32(bits & 0x3FF)
        switch exponent {
        case 0:
            let magnitude = Float(mantissa) * 0x1p-24
            return sign == 0 ? magnitude : -magnitude
        case 31:
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        default:
            return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
        }
    }
}

/// Writes a safetensors file of float32 tensors, in the given order, atomically.
public enum SafetensorsWriter {
    public static func write(
        _ tensors: [(name: String, shape: [Int], values: [Float])], metadata: [String: String] = [:], to path: String
    ) throws(FileAccessError) {
        var members: [(key: String, value: JSONValue)] = []
        if !metadata.isEmpty {
            members.append(("__metadata__", .object(metadata.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })))
        }
        var offset = 0
        for tensor in tensors {
            precondition(tensor.shape.reduce(1, *) == tensor.values.count, "tensor \(tensor.name) does not match its shape")
            let end = offset + tensor.values.count * 4
            members.append((tensor.name, .object([
                ("dtype", .string("F32")), ("shape", .array(tensor.shape.map { .number(Double($0)) })),
                ("data_offsets", .array([.number(Double(offset)), .number(Double(end))])),
            ])))
            offset = end
        }
        var header = Array(JSONValue.object(members).serialized(pretty: false).utf8)
        header += [UInt8](repeating: 0x20, count: (8 - header.count % 8) % 8)  // data section 8-byte aligned
        var bytes = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header
        bytes.reserveCapacity(bytes.count + offset)
        for tensor in tensors { tensor.values.withUnsafeBytes { bytes.append(contentsOf: $0) } }
        try AtomicFileWriter.write(bytes, to: path)
    }
}
