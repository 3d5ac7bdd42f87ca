internal import CKernels
import Synchronization

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

    /// fp32 `C[rows, columns] (+)= A[rows, inner] · B[inner, columns]` with B read once
    /// (`smoe_sgemm_stream`; A's rows `leadingA` apart): decode-sized products of a few rows.
    /// Every element sums k in order with fused multiply-adds, so every ISA gives the same bits.
    package static func multiplyStreaming(rows: Int, columns: Int, inner: Int, _ a: UnsafePointer<Float>, leadingA: Int, _ b: UnsafePointer<Float>,
                                          into c: UnsafeMutablePointer<Float>, accumulate: Bool, isa: CPUISA = .best) {
        smoe_sgemm_stream(a, leadingA, rows, inner, b, columns, c, accumulate ? 1 : 0, isa.kernelLevel)
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

    /// Symmetric int8 per row of `x` (`[rows, width]`) with `levels` steps each side (127: 8
    /// bits; 63: 7 bits): codes into `codes`, one scale (max|x| / levels) per row.
    package static func quantizeRows(_ x: UnsafePointer<Float>, rows: Int, width: Int, codes: UnsafeMutablePointer<Int8>,
                                     scales: UnsafeMutablePointer<Float>, levels: Int = 127, isa: CPUISA) {
        smoe_quantize_rows(x, rows, width, codes, scales, Int32(levels), isa.kernelLevel)
    }

    /// `out[t, n] (+)= aScale[t] · Σ_g wScale[n, g] · Σ_{k ∈ g} a[t, k] · w[n, k]`, groups of
    /// `group` inputs (int32 per group, float over groups in order; the same bits on every ISA).
    package static func int8GEMMGrouped(
        _ a: UnsafePointer<Int8>, aScales: UnsafePointer<Float>, rows: Int, inner: Int,
        _ w: UnsafePointer<Int8>, wScales: UnsafePointer<Float>, group: Int, columns: Int,
        into out: UnsafeMutablePointer<Float>, accumulate: Bool, isa: CPUISA
    ) {
        guard rows > 0, columns > 0 else { return }
        smoe_int8_gemm_grouped(a, aScales, rows, inner, w, wScales, group, columns, out, accumulate ? 1 : 0, isa.kernelLevel)
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

/// oneDNN as SwiftMoE's low-precision experts use it (CKernels' onednn.c): what it can do at an
/// instruction-set level, found out once per process by running it.
///
/// oneDNN's ISA cap applies only before its first primitive, so the first level asked for sets
/// it; a later, different level gets no oneDNN (its backends use SwiftMoE's own kernels), which
/// only happens when one process mixes `--cpu-isa` levels (tests).
package enum OneDNN {
    /// What oneDNN offers at one level.
    package struct Offer: Sendable, Equatable {
        /// The ISA oneDNN runs at (`dnnl_get_effective_cpu_isa`), e.g. "avx2".
        package let isa: String
        /// u8·s8 int8 products: the activation levels (127: 8 bits, on VNNI kernels; 63: 7 bits,
        /// where `vpmaddubsw`'s int16 pair sums would saturate on 8) and the zero point that
        /// shifts codes into u8; nil when no kernel was exact.
        package let int8: Int8Form?
        /// The int8 implementation's name ("gemm:jit", …).
        package let int8Implementation: String?
        /// The bf16 implementation's name, nil when oneDNN refuses bf16 here (below AVX-512).
        package let bf16Implementation: String?
    }

    package struct Int8Form: Sendable, Equatable {
        package let levels: Int
        package let zeroPoint: Int
    }

    private struct State {
        var cap: CPUISA?
        var offers: [CPUISA: Offer?] = [:]
        var exactShapes: [[Int]: Bool] = [:]
    }

    private static let state = Mutex(State())

    /// Threads oneDNN's products use (set with OpenBLAS's: `JobContext.configureBLASThreads`).
    package static func setThreadCount(_ threads: Int) { _ = smoe_dnnl_configure(-1, Int32(max(1, threads))) }

    /// What oneDNN offers at `isa` (a resolved level), or nil: none below AVX2, or another level
    /// already set oneDNN's cap in this process.
    package static func offer(at isa: CPUISA) -> Offer? {
        guard isa >= .avx2 else { return nil }
        return state.withLock { state in
            if let known = state.offers[isa] { return known }
            let cap: CPUISA = isa == .avx2 && CPUISA.best > .avx2 ? .avx2 : .native
            if state.cap == nil {
                state.cap = cap
                if smoe_dnnl_configure(cap == .avx2 ? Int32(SMOE_ISA_AVX2) : -1, Int32(BLAS.threadCount)) != 0 {
                    state.offers[isa] = .some(nil)
                    return nil
                }
            }
            guard state.cap == cap else {
                state.offers[isa] = .some(nil)
                return nil
            }
            let offer = probe()
            state.offers[isa] = offer
            return offer
        }
    }

    /// Runs oneDNN once at a small shape for each product it might serve.
    private static func probe() -> Offer {
        var status: Int32 = 0
        let int8Name = smoe_dnnl_int8_prepare(64, 8, &status).map { String(cString: $0) }
        var form: Int8Form?
        if int8Name != nil {
            // 8 bits when the kernel is exact over the whole u8 range, else 7.
            for candidate in [Int8Form(levels: 127, zeroPoint: 128), Int8Form(levels: 63, zeroPoint: 64)]
            where smoe_dnnl_int8_exact(64, 8, Int32(candidate.levels + candidate.zeroPoint)) == 1 {
                form = candidate
                break
            }
        }
        let bf16Name = smoe_dnnl_bf16_prepare(64, 8, &status).map { String(cString: $0) }
        return Offer(isa: String(cString: smoe_dnnl_effective_isa()), int8: form, int8Implementation: int8Name,
                     bf16Implementation: bf16Name)
    }

    /// Whether oneDNN's u8·s8 product for weights `[columns, inner]` is ready and exact with
    /// activations shifted by `form` (checked once per shape).
    package static func int8Ready(inner: Int, columns: Int, form: Int8Form) -> Bool {
        let key = [inner, columns, form.levels]
        return state.withLock { state in
            if let known = state.exactShapes[key] { return known }
            var status: Int32 = 0
            let ready = smoe_dnnl_int8_prepare(inner, columns, &status) != nil
                && smoe_dnnl_int8_exact(inner, columns, Int32(form.levels + form.zeroPoint)) == 1
            state.exactShapes[key] = ready
            return ready
        }
    }

    /// `out[t, n] (+)= aScale[t] · wScale[n] · Σ_k a[t, k] · w[n, k]` on oneDNN (the codes within
    /// ±`form.levels`; `wSums[n] = Σ_k w[n, k]`): the same numbers as `CPUKernels.int8GEMM`.
    /// False when oneDNN failed (nothing written then is to be trusted; run the own kernel).
    package static func int8GEMM(
        _ a: UnsafePointer<Int8>, aScales: UnsafePointer<Float>, rows: Int, inner: Int,
        _ w: UnsafePointer<Int8>, wScales: UnsafePointer<Float>, wSums: UnsafePointer<Int32>, columns: Int, form: Int8Form,
        into out: UnsafeMutablePointer<Float>, accumulate: Bool
    ) -> Bool {
        smoe_dnnl_int8_gemm(a, aScales, rows, inner, w, wScales, wSums, Int32(form.zeroPoint), columns, out, accumulate ? 1 : 0) == 0
    }

    /// Whether oneDNN's bf16 product for weights `[inner, columns]` is ready (made once per shape).
    package static func bf16Ready(inner: Int, columns: Int) -> Bool {
        var status: Int32 = 0
        return smoe_dnnl_bf16_prepare(inner, columns, &status) != nil
    }

    /// `y (+)= bf16(x) · w` on oneDNN, `w` row-major bf16 `[inner, columns]`; false when it failed.
    package static func bf16GEMM(_ x: UnsafePointer<Float>, rows: Int, inner: Int, _ w: UnsafePointer<UInt16>, columns: Int,
                                 into y: UnsafeMutablePointer<Float>, accumulate: Bool) -> Bool {
        smoe_dnnl_bf16_gemm(x, rows, inner, w, columns, y, accumulate ? 1 : 0) == 0
    }
}
