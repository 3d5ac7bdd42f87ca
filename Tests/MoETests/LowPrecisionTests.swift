import Foundation
import RandomStreams
import Testing
@testable import MoE

private func values(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var random = SeededGenerator(seed: seed)
    return (0..<count).map { _ in random.nextSignedUnitFloat() * scale }
}

/// The ISA levels this CPU can run (portable always; AVX2 where the CPU has it).
private let runnableLevels: [CPUISA] = CPUISA.allCases.filter { $0 != .native && (try? $0.resolved().get()) != nil }

private func ffnWeights(d: Int, ff: Int, gated: Bool, bias: Bool, seed: UInt64) -> ExpertWeights {
    ExpertWeights(w1: values(d * ff, seed: seed, scale: 0.2), b1: bias ? values(ff, seed: seed + 1, scale: 0.1) : [],
                  w2: values(ff * d, seed: seed + 2, scale: 0.2), b2: bias ? values(d, seed: seed + 3, scale: 0.1) : [],
                  w3: gated ? values(d * ff, seed: seed + 4, scale: 0.2) : [], b3: bias && gated ? values(ff, seed: seed + 5, scale: 0.1) : [])
}

/// max|a − b| / max|b|.
private func relativeError(_ a: [Float], _ b: [Float]) -> Float {
    zip(a, b).map { abs($0 - $1) }.max()! / b.map(abs).max()!
}

@Suite("Low-precision kernels (bf16, int8) on every ISA level this CPU has")
struct LowPrecisionTests {
    @Test("which ISA levels this CPU runs (printed; the portable level always)")
    func levels() {
        print("note: CPU features \(CPUFeatures.detected); kernel levels tested here: \(runnableLevels.map(\.rawValue).joined(separator: ", "))"
              + (runnableLevels.contains(.avx512) ? "" : "; AVX-512 levels skipped (the CPU lacks them)"))
        #expect(runnableLevels.contains(.portable))
        #expect(runnableLevels.contains(.avx2) == CPUFeatures.detected.isSuperset(of: [.avx2, .fma]))
    }

    @Test("bf16 rounds to nearest, ties to even; NaN stays NaN; widening is exact on every ISA level")
    func bf16Rounding() {
        let halfway = Float(bitPattern: 0x3F80_8000)  // 1 + 2⁻⁸: exactly between two bf16 values
        let aboveHalf = Float(bitPattern: 0x3F81_8000)  // 1 + 3·2⁻⁸: rounds away (to even 0x3F82)
        let codes = CPUKernels.bf16([1, halfway, aboveHalf, -2.5, .infinity, .nan, 0x1p-130])
        #expect(Array(codes[0..<5]) == [0x3F80, 0x3F80, 0x3F82, 0xC020, 0x7F80])
        #expect(codes[5] & 0x7F80 == 0x7F80 && codes[5] & 0x7F != 0, "NaN stays NaN")
        #expect(codes[6] == UInt16(Float(0x1p-130).bitPattern >> 16), "subnormals keep their bits")
        let wide = values(1000, seed: 3)
        let bf16 = CPUKernels.bf16(wide)
        for isa in runnableLevels {
            var back = [Float](repeating: 0, count: wide.count)
            bf16.withUnsafeBufferPointer { source in back.withUnsafeMutableBufferPointer { CPUKernels.widen(source.baseAddress!, into: $0.baseAddress!, count: wide.count, isa: isa) } }
            #expect(back.map { UInt16($0.bitPattern >> 16) } == bf16, "\(isa): widening is exact")
            #expect(zip(back, wide).allSatisfy { abs($0 - $1) <= abs($1) * 0x1p-8 }, "\(isa): within half a bf16 ulp")
        }
    }

    @Test("int8 rows: scale max|x|/127, codes in −127…127; the GEMM's sums are exact and equal on every ISA level")
    func int8Products() {
        let (rows, inner, columns) = (5, 77, 13)  // not multiples of the vector widths: the tails run too
        let x = values(rows * inner, seed: 7) + [Float](repeating: 0, count: inner)  // an all-zero last row
        var codes = [Int8](repeating: 0, count: (rows + 1) * inner), scales = [Float](repeating: 0, count: rows + 1)
        x.withUnsafeBufferPointer { source in
            codes.withUnsafeMutableBufferPointer { q in
                scales.withUnsafeMutableBufferPointer { CPUKernels.quantizeRows(source.baseAddress!, rows: rows + 1, width: inner, codes: q.baseAddress!, scales: $0.baseAddress!, isa: .portable) }
            }
        }
        #expect(scales[rows] == 1 && codes[(rows * inner)...].allSatisfy { $0 == 0 })
        for isa in runnableLevels {
            var other = [Int8](repeating: 1, count: codes.count), otherScales = [Float](repeating: 0, count: scales.count)
            CPUKernels.quantizeRows(x, rows: rows + 1, width: inner, codes: &other, scales: &otherScales, isa: isa)
            #expect(other == codes && otherScales == scales, "\(isa): quantisation differs")
        }
        for row in 0..<rows {
            let largest = x[row * inner..<(row + 1) * inner].map(abs).max()!
            #expect(scales[row] == largest / 127)
            #expect(codes[row * inner..<(row + 1) * inner].contains(127) || codes[row * inner..<(row + 1) * inner].contains(-127))
        }
        let w = (0..<(columns * inner)).map { Int8(truncatingIfNeeded: ($0 * 37) % 255 - 127) }
        let wScales = values(columns, seed: 9).map { abs($0) + 0.01 }
        var expected = [Float](repeating: 0, count: rows * columns)
        for t in 0..<rows {
            for n in 0..<columns {
                let sum = (0..<inner).reduce(Int32(0)) { $0 + Int32(codes[t * inner + $1]) * Int32(w[n * inner + $1]) }
                expected[t * columns + n] = scales[t] * wScales[n] * Float(sum)
            }
        }
        for isa in runnableLevels {
            var out = [Float](repeating: .nan, count: rows * columns)
            CPUKernels.int8GEMM(codes, aScales: scales, rows: rows, inner: inner, w, wScales: wScales, columns: columns, into: &out, accumulate: false, isa: isa)
            #expect(out == expected, "\(isa)")
        }
    }

    @Test("bf16 and int8 FFNs stay within their bounds of fp32, every form; every ISA level gives the same bits",
          arguments: [(Activation.gelu, true), (.swiglu, false), (.clampedGLU, true), (.relu, false)])
    func ffnAgainstFP32(activation: Activation, bias: Bool) {
        let (d, ff, rows) = (48, 80, 9)
        let form = FFNForm(activation: activation, dFF: ff, hasBias: bias)
        let weights = ffnWeights(d: d, ff: ff, gated: activation.isGated, bias: bias, seed: 21)
        let x = values(rows * d, seed: 22)
        let exact = OpenBLASKernels().prepare(weights, form: form, dModel: d).forward(x, dModel: d, workspace: ExpertWorkspace())
        // Bounds from measurement (max relative error, d 48, d_ff 80, 2026-12-06): bf16 4.0–4.4e-3
        // over these forms (8-bit mantissas on inputs, weights and hidden activations), int8
        // 0.9–1.4e-2 (7-bit codes on the same three). Each bound leaves 2–3× headroom; a kernel
        // that drops a panel, a scale or a sign is off by far more (tens of percent).
        for (precision, bound) in [(ExpertPrecision.bf16, Float(1e-2)), (.int8, Float(4e-2))] {
            var outputs: [[Float]] = []
            for isa in runnableLevels {
                let ffn = precision.kernels(isa: isa).prepare(weights, form: form, dModel: d)
                outputs.append(ffn.forward(x, dModel: d, workspace: ExpertWorkspace()))
            }
            let error = relativeError(outputs[0], exact)
            print("measured: \(precision) \(activation) bias \(bias): max relative error \(error) (bound \(bound))")
            #expect(error < bound && error > 0, "\(precision) \(activation): relative error \(error)")
            #expect(outputs.allSatisfy { $0 == outputs[0] }, "\(precision): ISA levels differ")
        }
    }

    @Test("bf16: the direct kernel (few rows) and the panel path (many rows) agree within fp32 summation error; every ISA the same bits")
    func bf16DirectAndPanels() {
        let (d, ff) = (40, 70)  // 70 columns: a partial last block
        let form = FFNForm(activation: .gelu, dFF: ff, hasBias: true)
        let weights = ffnWeights(d: d, ff: ff, gated: false, bias: true, seed: 41)
        let rows = BF16Kernels.directRows + 3
        let x = values(rows * d, seed: 42)
        for isa in runnableLevels {
            let ffn = BF16Kernels(isa: isa).prepare(weights, form: form, dModel: d)
            let panel = ffn.forward(x, dModel: d, workspace: ExpertWorkspace())  // > directRows: panels
            var direct: [Float] = []
            for start in stride(from: 0, to: rows, by: 4) {  // ≤ directRows: the direct kernel
                direct += ffn.forward(Array(x[start * d..<min(rows, start + 4) * d]), dModel: d, workspace: ExpertWorkspace())
            }
            #expect(relativeError(direct, panel) < 1e-5, "\(isa): \(relativeError(direct, panel))")
        }
        let levels = runnableLevels.map { BF16Kernels(isa: $0).prepare(weights, form: form, dModel: d).forward(Array(x[0..<4 * d]), dModel: d, workspace: ExpertWorkspace()) }
        #expect(levels.allSatisfy { $0 == levels[0] }, "the direct kernel differs between ISA levels")
    }

    @Test("a low-precision FFN's wire bytes restore to the same FFN; wrong sizes and non-finite values are refused")
    func wireRoundTrip() {
        let (d, ff) = (16, 24)
        let form = FFNForm(activation: .swiglu, dFF: ff, hasBias: true)
        let weights = ffnWeights(d: d, ff: ff, gated: true, bias: true, seed: 31)
        let x = values(3 * d, seed: 32)
        for precision in [ExpertPrecision.bf16, .int8] {
            let kernels = precision.kernels(isa: .portable)
            let ffn = kernels.prepare(weights, form: form, dModel: d)
            let bytes = ffn.wireBytes
            #expect(bytes.count == kernels.wireByteCount(form: form, dModel: d) && bytes.count <= ffn.bytesHeld, "held includes bf16's block padding")
            #expect(bytes.count < OpenBLASKernels().wireByteCount(form: form, dModel: d) * (precision == .bf16 ? 6 : 4) / 10, "\(precision) ships fewer bytes")
            let restored = bytes.withUnsafeBytes { kernels.restore(wireBytes: $0, form: form, dModel: d) }
            #expect(restored?.forward(x, dModel: d, workspace: ExpertWorkspace()) == ffn.forward(x, dModel: d, workspace: ExpertWorkspace()))
            #expect(bytes.dropLast().withUnsafeBytes { kernels.restore(wireBytes: $0, form: form, dModel: d) } == nil)
            var poisoned = bytes
            withUnsafeBytes(of: Float.nan) { nan in for index in 0..<4 { poisoned[bytes.count - 4 + index] = nan[index] } }  // the last bias
            #expect(poisoned.withUnsafeBytes { kernels.restore(wireBytes: $0, form: form, dModel: d) } == nil, "\(precision)")
        }
    }

    @Test("--cpu-isa: native is the CPU's best; a level the CPU lacks is refused naming the missing flag")
    func isaResolution() {
        let avx2Only: CPUFeatures = [.avx2, .fma, .f16c]
        #expect(CPUISA.avx512.resolved(on: avx2Only) == .failure(CPUISAError(requested: .avx512, missingFlag: "avx512f", cpu: avx2Only)))
        #expect("\(CPUISAError(requested: .avx512, missingFlag: "avx512f", cpu: avx2Only))" == "--cpu-isa avx512: this CPU lacks the 'avx512f' flag (it has: avx2 fma f16c)")
        #expect(CPUISA.avx2.resolved(on: avx2Only) == .success(.avx2))
        #expect(CPUISA.avx2.resolved(on: []) == .failure(CPUISAError(requested: .avx2, missingFlag: "avx2", cpu: [])))
        #expect(CPUISA.portable.resolved(on: []) == .success(.portable))
        #expect(CPUISA.avx512.resolved(on: [.avx2, .fma, .avx512f, .avx512bw]) == .success(.avx512))
        #expect(CPUISA.native.resolved() == .success(CPUISA.best))
    }
}

@Suite("Exchange rows in bf16 and int8 (RowCodec)")
struct RowCodecTests {
    @Test("bf16 rows: 2 bytes a value, round trip = rounding to bf16; int8 rows: the scale at the front, codes after, round trip within half a step")
    func roundTrips() {
        let width = 37
        let rows = values(3 * width, seed: 51, scale: 3)
        var bf16 = rows
        let codec = RowCodec(precision: .bf16, width: width)
        #expect(codec.rowBytes == 2 * width)
        codec.roundTrip(&bf16, isa: .portable)
        #expect(bf16.map { UInt16($0.bitPattern >> 16) } == CPUKernels.bf16(rows) && bf16.allSatisfy { $0.bitPattern & 0xFFFF == 0 })
        let int8 = RowCodec(precision: .int8, width: width)
        #expect(int8.rowBytes == width + 4)
        var wire = [UInt8](repeating: 0, count: 3 * int8.rowBytes)
        rows.withUnsafeBufferPointer { source in wire.withUnsafeMutableBytes { int8.encode(source.baseAddress!, rows: 3, into: $0.baseAddress!, isa: .portable) } }
        for row in 0..<3 {
            let scale = wire.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: row * int8.rowBytes, as: Float.self) }
            #expect(scale == rows[row * width..<(row + 1) * width].map(abs).max()! / 127)
        }
        var back = rows
        int8.roundTrip(&back, isa: .portable)
        for row in 0..<3 {
            let step = rows[row * width..<(row + 1) * width].map(abs).max()! / 127
            #expect(zip(back[row * width..<(row + 1) * width], rows[row * width..<(row + 1) * width]).allSatisfy { abs($0 - $1) <= step / 2 * 1.0001 })
        }
        var same = rows
        RowCodec(precision: .fp32, width: width).roundTrip(&same, isa: .portable)
        #expect(same == rows)
    }
}
