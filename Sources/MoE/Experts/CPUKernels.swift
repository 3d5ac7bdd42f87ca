internal import CKernels

/// What the CPU can run, detected once (cpuid and the OS's register support, `CKernels`).
package struct CPUFeatures: OptionSet, Sendable, CustomStringConvertible {
    package let rawValue: UInt32
    package init(rawValue: UInt32) { self.rawValue = rawValue }

    package static let avx2 = CPUFeatures(rawValue: UInt32(SMOE_CPU_AVX2))
    package static let fma = CPUFeatures(rawValue: UInt32(SMOE_CPU_FMA))
    package static let f16c = CPUFeatures(rawValue: UInt32(SMOE_CPU_F16C))
    package static let avx512f = CPUFeatures(rawValue: UInt32(SMOE_CPU_AVX512F))
    package static let avx512bw = CPUFeatures(rawValue: UInt32(SMOE_CPU_AVX512BW))
    package static let avx512vnni = CPUFeatures(rawValue: UInt32(SMOE_CPU_AVX512VNNI))
    package static let avx512bf16 = CPUFeatures(rawValue: UInt32(SMOE_CPU_AVX512BF16))

    /// This machine's features (read once).
    package static let detected = CPUFeatures(rawValue: smoe_cpu_features())

    private static let names: [(CPUFeatures, String)] = [
        (.avx2, "avx2"), (.fma, "fma"), (.f16c, "f16c"), (.avx512f, "avx512f"), (.avx512bw, "avx512bw"),
        (.avx512vnni, "avx512_vnni"), (.avx512bf16, "avx512_bf16"),
    ]

    /// The features as /proc/cpuinfo spells them, space-separated ("none" when empty).
    package var description: String {
        let present = Self.names.filter { contains($0.0) }.map(\.1)
        return present.isEmpty ? "none" : present.joined(separator: " ")
    }
}

/// The instruction-set level SwiftMoE's own kernels may use (`--cpu-isa`): the CPU's best
/// (`native`), or a cap below it so every path can be run on a newer CPU.
package enum CPUISA: String, CaseIterable, Sendable, Comparable {
    /// Plain C, any x86-64 (or other) CPU.
    case portable
    /// AVX2 (with FMA).
    case avx2
    /// AVX-512 (F and BW). SwiftMoE has no AVX-512 kernels of its own yet: this level runs the
    /// AVX2 ones (and is what oneDNN-backed kernels would be allowed).
    case avx512
    /// The best the CPU has.
    case native

    /// The level `native` means on this CPU.
    package static var best: CPUISA {
        let cpu = CPUFeatures.detected
        if cpu.isSuperset(of: [.avx512f, .avx512bw, .avx2, .fma]) { return .avx512 }
        if cpu.isSuperset(of: [.avx2, .fma]) { return .avx2 }
        return .portable
    }

    /// The level to run at, or the one line saying which flag the CPU lacks.
    package func resolved(on cpu: CPUFeatures = .detected) -> Result<CPUISA, CPUISAError> {
        switch self {
        case .native: return .success(Self.best)
        case .portable: return .success(.portable)
        case .avx2:
            for (flag, name) in [(CPUFeatures.avx2, "avx2"), (.fma, "fma")] where !cpu.contains(flag) {
                return .failure(CPUISAError(requested: self, missingFlag: name, cpu: cpu))
            }
            return .success(.avx2)
        case .avx512:
            for (flag, name) in [(CPUFeatures.avx512f, "avx512f"), (.avx512bw, "avx512bw"), (.avx2, "avx2"), (.fma, "fma")] where !cpu.contains(flag) {
                return .failure(CPUISAError(requested: self, missingFlag: name, cpu: cpu))
            }
            return .success(.avx512)
        }
    }

    package static func < (lhs: CPUISA, rhs: CPUISA) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }

    /// The `CKernels` level of this ISA (a resolved one).
    var kernelLevel: Int32 { self >= .avx2 ? Int32(SMOE_ISA_AVX2) : Int32(SMOE_ISA_PORTABLE) }
}

/// `--cpu-isa` asked for a level the CPU does not have.
package struct CPUISAError: Error, Equatable, CustomStringConvertible {
    package let requested: CPUISA
    package let missingFlag: String
    package let cpu: CPUFeatures
    package var description: String {
        "--cpu-isa \(requested.rawValue): this CPU lacks the '\(missingFlag)' flag (it has: \(cpu))"
    }
}

/// The hand-written kernels, Swift-side (`CKernels`; this file is the only one importing it).
package enum CPUKernels {
    /// `bf16(values[i])` as bf16 bit patterns (round to nearest even).
    package static func bf16(_ values: [Float]) -> [UInt16] {
        var result = [UInt16](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { source in
            result.withUnsafeMutableBufferPointer { smoe_f32_to_bf16(source.baseAddress, $0.baseAddress, values.count) }
        }
        return result
    }

    /// `count` floats as bf16 bit patterns (round to nearest even) into `destination`.
    package static func toBF16(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<UInt16>, count: Int) {
        smoe_f32_to_bf16(source, destination, count)
    }

    /// Widens `count` bf16 values to floats.
    package static func widen(_ source: UnsafePointer<UInt16>, into destination: UnsafeMutablePointer<Float>, count: Int, isa: CPUISA) {
        smoe_bf16_to_f32(source, destination, count, isa.kernelLevel)
    }

    /// Rounds `count` floats to their nearest bf16, in place.
    package static func roundToBF16(_ values: UnsafeMutablePointer<Float>, count: Int) { smoe_round_to_bf16(values, count) }

    /// Columns per block of the blocked bf16 layout (`blockedBF16`).
    package static let bf16Block = Int(SMOE_BF16_BLOCK)

    /// Row-major bf16 `[inner, columns]` in the blocked layout: ⌈columns / 32⌉ blocks of
    /// `[inner][32]`, zero-padded, each block one contiguous stream.
    package static func blockedBF16(_ rowMajor: [UInt16], inner: Int, columns: Int) -> [UInt16] {
        let blocks = (columns + bf16Block - 1) / bf16Block
        var result = [UInt16](repeating: 0, count: blocks * inner * bf16Block)
        for k in 0..<inner {
            for n in 0..<columns { result[((n / bf16Block) * inner + k) * bf16Block + n % bf16Block] = rowMajor[k * columns + n] }
        }
        return result
    }

    /// The row-major `[inner, columns]` weights of a blocked layout.
    package static func rowMajorBF16(_ blocked: [UInt16], inner: Int, columns: Int) -> [UInt16] {
        var result = [UInt16](repeating: 0, count: inner * columns)
        for k in 0..<inner {
            for n in 0..<columns { result[k * columns + n] = blocked[((n / bf16Block) * inner + k) * bf16Block + n % bf16Block] }
        }
        return result
    }

    /// Rows `first ..< first + count` of blocked bf16 `[inner, columns]` widened into `panel`
    /// (row-major `[count, columns]`).
    package static func widenRows(_ blocked: UnsafePointer<UInt16>, inner: Int, columns: Int, first: Int, count: Int,
                                  into panel: UnsafeMutablePointer<Float>, isa: CPUISA) {
        smoe_bf16_widen_rows(blocked, inner, columns, first, count, panel, isa.kernelLevel)
    }

    /// `y[rows, columns] (+)= x[rows, inner] · w` with `w` blocked bf16 `[inner, columns]`, each
    /// weight read once for all rows (for few rows).
    package static func bf16GEMMRows(_ x: UnsafePointer<Float>, rows: Int, inner: Int, _ w: UnsafePointer<UInt16>, columns: Int,
                                     into y: UnsafeMutablePointer<Float>, accumulate: Bool, isa: CPUISA) {
        guard rows > 0, columns > 0 else { return }
        smoe_bf16_gemm_rows(x, rows, inner, w, columns, y, accumulate ? 1 : 0, isa.kernelLevel)
    }

    /// Symmetric int8 per row of `x` (`[rows, width]`): codes into `codes`, one scale per row.
    package static func quantizeRows(_ x: UnsafePointer<Float>, rows: Int, width: Int, codes: UnsafeMutablePointer<Int8>,
                                     scales: UnsafeMutablePointer<Float>, isa: CPUISA) {
        smoe_quantize_rows(x, rows, width, codes, scales, isa.kernelLevel)
    }

    /// `out[t, n] (+)= aScale[t] · wScale[n] · Σ_k a[t, k] · w[n, k]` (int32 sums, exact).
    package static func int8GEMM(
        _ a: UnsafePointer<Int8>, aScales: UnsafePointer<Float>, rows: Int, inner: Int,
        _ w: UnsafePointer<Int8>, wScales: UnsafePointer<Float>, columns: Int,
        into out: UnsafeMutablePointer<Float>, accumulate: Bool, isa: CPUISA
    ) {
        guard rows > 0, columns > 0 else { return }
        smoe_int8_gemm(a, aScales, rows, inner, w, wScales, columns, out, accumulate ? 1 : 0, isa.kernelLevel)
    }
}
