import Foundation

/// Element types of the `.npy` files SwiftMoE reads and writes (little-endian only).
public enum NpyElementType: String, Sendable {
    case float32 = "<f4"
    case int32 = "<i4"
    case int64 = "<i8"

    public var byteCount: Int { self == .int64 ? 8 : 4 }
}

/// Why a `.npy` file was refused; `description` names the file.
public struct NpyError: Error, Equatable, CustomStringConvertible {
    public let path: String
    public let problem: String
    public var description: String { "\(path): \(problem)" }
}

/// A NumPy `.npy` array (format versions 1.0–3.0, C order, little-endian): shape, element type
/// and the raw element bytes.
///
/// Layout (numpy.lib.format): magic `\x93NUMPY`, major and minor version bytes, header length
/// (2 bytes LE in 1.0, 4 bytes in 2.0/3.0), an ASCII Python dict literal
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (T, D), }` padded with spaces and a newline
/// so the data starts on a 64-byte boundary, then the elements.
public struct NpyArray: Equatable, Sendable {
    public let shape: [Int]
    public let elementType: NpyElementType
    /// Elements in C (row-major) order, little-endian.
    public let data: [UInt8]

    public var elementCount: Int { shape.reduce(1, *) }

    public init(shape: [Int], elementType: NpyElementType, data: [UInt8]) {
        precondition(shape.reduce(1, *) * elementType.byteCount == data.count, "npy data does not match its shape")
        self.shape = shape
        self.elementType = elementType
        self.data = data
    }

    /// A float32 array of `shape` from `values` (row-major).
    public init(float32 values: [Float], shape: [Int]) {
        self.init(shape: shape, elementType: .float32, data: values.withUnsafeBytes { Array($0) })
    }

    /// The elements as `Float`; nil unless the element type is float32.
    public var float32Values: [Float]? {
        guard elementType == .float32 else { return nil }
        return data.withUnsafeBytes { raw in (0..<elementCount).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) } }
    }

    /// The elements as `Int`, from int32 or int64; nil for float32.
    public var integerValues: [Int]? {
        switch elementType {
        case .float32: return nil
        case .int32: return data.withUnsafeBytes { raw in (0..<elementCount).map { Int(raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) } }
        case .int64: return data.withUnsafeBytes { raw in (0..<elementCount).map { Int(raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) } }
        }
    }

    /// Largest `.npy` file read: 8 GiB.
    public static let fileSizeLimit = 8 << 30

    /// Reads and validates a `.npy` file: the header must parse, and the file must hold exactly
    /// the bytes its shape needs (checked before the data is read).
    public static func load(path: String) throws(NpyError) -> NpyArray {
        let bytes: [UInt8]
        do { bytes = try BoundedFileReader.read(path, limit: fileSizeLimit) } catch {
            throw NpyError(path: path, problem: error.reason)
        }
        return try parse(bytes, path: path)
    }

    public static func parse(_ bytes: [UInt8], path: String) throws(NpyError) -> NpyArray {
        let header = try parseHeader(bytes, fileSize: bytes.count, path: path)
        return NpyArray(shape: header.shape, elementType: header.elementType, data: Array(bytes[header.dataStart...]))
    }

    /// What the preamble and header say: shape, element type, and where the data starts.
    public struct Header: Equatable, Sendable {
        public let shape: [Int]
        public let elementType: NpyElementType
        public let dataStart: Int
        /// Bytes of one row (all dimensions after the first).
        public var rowBytes: Int { shape.dropFirst().reduce(elementType.byteCount, *) }
    }

    /// Parses the preamble and header from the file's first bytes (`prefix`, at least the whole
    /// header) and checks that a file of `fileSize` bytes holds exactly the data the shape needs.
    public static func parseHeader(_ bytes: [UInt8], fileSize: Int, path: String) throws(NpyError) -> Header {
        func fail(_ problem: String) -> NpyError { NpyError(path: path, problem: problem) }
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else { throw fail("not a .npy file (bad magic)") }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1: headerLength = Int(bytes[8]) | Int(bytes[9]) << 8; headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw fail("truncated header") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default: throw fail("unsupported .npy version \(major).\(bytes[7])")
        }
        guard headerLength <= 1 << 20, headerStart + headerLength <= bytes.count else {
            throw fail("header claims \(headerLength) bytes but the file has \(bytes.count - headerStart) after the preamble")
        }
        guard let header = String(bytes: bytes[headerStart..<headerStart + headerLength], encoding: .ascii) else {
            throw fail("header is not ASCII")
        }
        let fields = try parseHeaderDictionary(header, path: path)
        guard let descr = fields["descr"], let elementType = NpyElementType(rawValue: descr) else {
            throw fail("unsupported dtype \(fields["descr"] ?? "(none)"): expected float32 ('<f4'), int32 ('<i4') or int64 ('<i8')")
        }
        guard let fortranOrder = fields["fortran_order"] else { throw fail("header has no fortran_order") }
        guard fortranOrder == "False" else { throw fail("Fortran-order arrays are not supported (save with C order)") }
        guard let shapeText = fields["shape"] else { throw fail("header has no shape") }
        let shape = try parseShape(shapeText, path: path)
        var expected = elementType.byteCount
        for dimension in shape {
            let (product, overflow) = expected.multipliedReportingOverflow(by: dimension)
            guard !overflow, product <= fileSizeLimit else { throw fail("shape \(shape) is too large") }
            expected = product
        }
        let dataStart = headerStart + headerLength
        guard fileSize - dataStart == expected else {
            throw fail("shape \(shape) of \(descr) needs \(expected) data bytes but the file has \(fileSize - dataStart)")
        }
        return Header(shape: shape, elementType: elementType, dataStart: dataStart)
    }

    /// Reads only rows `slice(totalRows)` of a `.npy` file (its first dimension), seeking past
    /// the rest: a rank that needs a slice of a large input never holds the whole file. Returns
    /// the slice as an array of shape `[rows, ...]` and the file's whole shape.
    public static func loadRows(path: String, slice: (_ totalRows: Int) -> Range<Int>) throws(NpyError) -> (rows: NpyArray, fileShape: [Int]) {
        func fail(_ problem: String) -> NpyError { NpyError(path: path, problem: problem) }
        let descriptor: Int32
        do { descriptor = try BoundedFileReader.openRegularFile(path) } catch { throw fail(error.reason) }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw fail("cannot be read: \(String(cString: strerror(errno)))") }
        let fileSize = Int(status.st_size)
        guard fileSize <= fileSizeLimit else { throw fail("is \(fileSize) bytes, larger than the \(fileSizeLimit)-byte limit") }
        let prefix = try readFully(descriptor, offset: 0, count: min(fileSize, 12 + (1 << 20)), path: path)
        let header = try parseHeader(prefix, fileSize: fileSize, path: path)
        guard let totalRows = header.shape.first else { throw fail("a 0-dimensional array has no rows") }
        let rows = slice(totalRows)
        guard rows.lowerBound >= 0, rows.upperBound <= totalRows else {
            throw fail("has \(totalRows) rows, but rows \(rows.lowerBound)..<\(rows.upperBound) are needed (shape \(header.shape))")
        }
        let data = try readFully(descriptor, offset: header.dataStart + rows.lowerBound * header.rowBytes, count: rows.count * header.rowBytes, path: path)
        return (NpyArray(shape: [rows.count] + header.shape.dropFirst(), elementType: header.elementType, data: data), header.shape)
    }

    /// The header of a `.npy` file (shape, element type), without reading its data.
    public static func header(path: String) throws(NpyError) -> Header {
        let descriptor: Int32
        do { descriptor = try BoundedFileReader.openRegularFile(path) } catch { throw NpyError(path: path, problem: error.reason) }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw NpyError(path: path, problem: "cannot be read: \(String(cString: strerror(errno)))") }
        let prefix = try readFully(descriptor, offset: 0, count: min(Int(status.st_size), 12 + (1 << 20)), path: path)
        return try parseHeader(prefix, fileSize: Int(status.st_size), path: path)
    }

    private static func readFully(_ descriptor: Int32, offset: Int, count: Int, path: String) throws(NpyError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            if got < 0 {
                if errno == EINTR { continue }
                throw NpyError(path: path, problem: "cannot be read: \(String(cString: strerror(errno)))")
            }
            guard got > 0 else { throw NpyError(path: path, problem: "ends early (truncated while reading?)") }
            done += got
        }
        return bytes
    }

    /// Parses `{'key': value, ...}` where values are quoted strings, True/False, or tuples.
    private static func parseHeaderDictionary(_ header: String, path: String) throws(NpyError) -> [String: String] {
        var text = Substring(header.trimmingCharacters(in: .whitespacesAndNewlines))
        guard text.hasPrefix("{"), text.hasSuffix("}") else { throw NpyError(path: path, problem: "header is not a dict literal") }
        text = text.dropFirst().dropLast()
        var fields: [String: String] = [:]
        while true {
            text = text.drop { $0 == " " || $0 == "," }
            if text.isEmpty { break }
            guard text.first == "'", let keyEnd = text.dropFirst().firstIndex(of: "'") else {
                throw NpyError(path: path, problem: "malformed header near \(String(text.prefix(20)))")
            }
            let key = String(text[text.index(after: text.startIndex)..<keyEnd])
            text = text[text.index(after: keyEnd)...].drop { $0 == " " }
            guard text.first == ":" else { throw NpyError(path: path, problem: "malformed header: expected ':' after '\(key)'") }
            text = text.dropFirst().drop { $0 == " " }
            let value: Substring
            if text.first == "'" {
                guard let end = text.dropFirst().firstIndex(of: "'") else { throw NpyError(path: path, problem: "unterminated string in header") }
                value = text[text.index(after: text.startIndex)..<end]
                text = text[text.index(after: end)...]
            } else if text.first == "(" {
                guard let end = text.firstIndex(of: ")") else { throw NpyError(path: path, problem: "unterminated tuple in header") }
                value = text[text.startIndex...end]
                text = text[text.index(after: end)...]
            } else {
                let end = text.firstIndex(of: ",") ?? text.endIndex
                value = text[..<end]
                text = text[end...]
            }
            fields[key] = value.trimmingCharacters(in: .whitespaces)
        }
        return fields
    }

    private static func parseShape(_ text: String, path: String) throws(NpyError) -> [Int] {
        let inner = text.dropFirst().dropLast()
        var shape: [Int] = []
        for part in inner.split(separator: ",") {
            let trimmed = part.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            guard let dimension = Int(trimmed), dimension >= 0 else {
                throw NpyError(path: path, problem: "invalid shape \(text)")
            }
            shape.append(dimension)
        }
        return shape
    }

    /// The file's bytes: version 1.0 header padded to a 64-byte boundary, then the data.
    public func encoded() -> [UInt8] {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(elementType.rawValue)', 'fortran_order': False, 'shape': \(shapeText), }"
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        let length = header.utf8.count
        return [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(length & 0xFF), UInt8(length >> 8)] + Array(header.utf8) + data
    }

    /// Writes the array atomically (temporary name, then rename).
    public func write(to path: String) throws(FileAccessError) {
        try AtomicFileWriter.write(encoded(), to: path)
    }
}
