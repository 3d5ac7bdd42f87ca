internal import CMPI

/// The element types that collectives carry, each with its MPI datatype.
public enum ScalarKind: Sendable {
    case byte, int32, int64, float32, float64

    var datatype: OpaquePointer? {
        switch self {
        case .byte: return cmpi_byte()
        case .int32: return cmpi_int32()
        case .int64: return cmpi_int64()
        case .float32: return cmpi_float()
        case .float64: return cmpi_double()
        }
    }
}

/// A fixed-size value MPI can reduce and move: `Int` (64-bit here), `Int32`, `Int64`, `UInt8`,
/// `Float`, `Double`.
public protocol MessageScalar: BitwiseCopyable {
    static var scalarKind: ScalarKind { get }
}

extension UInt8: MessageScalar { public static var scalarKind: ScalarKind { .byte } }
extension Int32: MessageScalar { public static var scalarKind: ScalarKind { .int32 } }
extension Int64: MessageScalar { public static var scalarKind: ScalarKind { .int64 } }
extension Int: MessageScalar {
    // MPI has no `Int`; on the 64-bit platforms MPI runs on here it is an int64_t.
    public static var scalarKind: ScalarKind { MemoryLayout<Int>.size == 8 ? .int64 : .int32 }
}
extension Float: MessageScalar { public static var scalarKind: ScalarKind { .float32 } }
extension Double: MessageScalar { public static var scalarKind: ScalarKind { .float64 } }

/// A reduction for `allReduce`.
public enum ReductionOperation: Sendable {
    case sum, maximum, minimum, logicalAnd, logicalOr

    var op: OpaquePointer? {
        switch self {
        case .sum: return cmpi_op_sum()
        case .maximum: return cmpi_op_max()
        case .minimum: return cmpi_op_min()
        case .logicalAnd: return cmpi_op_land()
        case .logicalOr: return cmpi_op_lor()
        }
    }
}
