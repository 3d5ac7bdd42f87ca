/// The number format token rows travel in between ranks (`--exchange-precision`): rows are
/// converted right before they are sent and restored on arrival, so every exchange algorithm,
/// overlap and link simulation carry them unchanged — only the bytes per row differ.
package enum ExchangePrecision: String, CaseIterable, Sendable {
    /// 4 bytes per value, unchanged.
    case fp32
    /// 2 bytes per value, rounded to nearest even.
    case bf16
    /// 1 byte per value and one fp32 scale per row (symmetric, max|x|/127), at the row's front.
    case int8
}

/// Encodes and decodes rows of `width` floats in an `ExchangePrecision` (pure; the dispatcher
/// and the reference use the same one, so a run equals its reference bitwise).
package struct RowCodec: Sendable {
    package let precision: ExchangePrecision
    package let width: Int

    package init(precision: ExchangePrecision, width: Int) {
        self.precision = precision
        self.width = width
    }

    /// Bytes of one encoded row.
    package var rowBytes: Int {
        switch precision {
        case .fp32: return 4 * width
        case .bf16: return 2 * width
        case .int8: return 4 + width
        }
    }

    /// Encodes `rows` rows of `source` (`[rows, width]` floats) into `destination` (`rows × rowBytes`).
    package func encode(_ source: UnsafePointer<Float>, rows: Int, into destination: UnsafeMutableRawPointer, isa: CPUISA) {
        switch precision {
        case .fp32:
            destination.copyMemory(from: source, byteCount: rows * rowBytes)
        case .bf16:
            CPUKernels.toBF16(source, into: destination.assumingMemoryBound(to: UInt16.self), count: rows * width)
        case .int8:
            var scale: Float = 0
            for row in 0..<rows {
                let base = destination + row * rowBytes
                CPUKernels.quantizeRows(source + row * width, rows: 1, width: width, codes: (base + 4).assumingMemoryBound(to: Int8.self),
                                        scales: &scale, isa: isa)
                base.storeBytes(of: scale, as: Float.self)
            }
        }
    }

    /// Decodes `rows` encoded rows of `source` into `destination` (`[rows, width]` floats).
    package func decode(_ source: UnsafeRawPointer, rows: Int, into destination: UnsafeMutablePointer<Float>, isa: CPUISA) {
        switch precision {
        case .fp32:
            UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: rows * rowBytes)
        case .bf16:
            CPUKernels.widen(source.assumingMemoryBound(to: UInt16.self), into: destination, count: rows * width, isa: isa)
        case .int8:
            for row in 0..<rows {
                let base = source + row * rowBytes
                let scale = base.loadUnaligned(as: Float.self)
                let codes = (base + 4).assumingMemoryBound(to: Int8.self)
                let output = destination + row * width
                for index in 0..<width { output[index] = scale * Float(codes[index]) }  // vectorised by the compiler
            }
        }
    }

    /// The values a row holds after a trip through the wire (encode, then decode), in place.
    package func roundTrip(_ values: inout [Float], isa: CPUISA) {
        guard precision != .fp32, !values.isEmpty else { return }
        let rows = values.count / width
        var wire = [UInt8](repeating: 0, count: rows * rowBytes)
        values.withUnsafeMutableBufferPointer { floats in
            wire.withUnsafeMutableBytes { bytes in
                encode(floats.baseAddress!, rows: rows, into: bytes.baseAddress!, isa: isa)
                decode(UnsafeRawPointer(bytes.baseAddress!), rows: rows, into: floats.baseAddress!, isa: isa)
            }
        }
    }
}
