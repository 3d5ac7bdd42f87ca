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
        for isa in runnableLevels {  // 7 bits (oneDNN's AVX2 form): codes within ±63, scale max|x|/63
            var seven = [Int8](repeating: 0, count: codes.count), sevenScales = [Float](repeating: 0, count: scales.count)
            CPUKernels.quantizeRows(x, rows: rows + 1, width: inner, codes: &seven, scales: &sevenScales, levels: 63, isa: isa)
            #expect(seven.allSatisfy { abs(Int($0)) <= 63 } && seven.contains(63) && sevenScales[0] == x[0..<inner].map(abs).max()! / 63, "\(isa)")
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
        // 0.9–1.4e-2 with 8-bit activations and 1.6–2.6e-2 with 7-bit ones (oneDNN's AVX2 form).
        // Each bound leaves ≥ 1.5× headroom; a kernel that drops a panel, a scale or a sign is off by
        // far more (tens of percent).
        let int8Backends = [127, 63].map { levels in { (isa: CPUISA) -> any ExpertKernels in
            Int8Kernels(isa: isa, activationLevels: levels, oneDNN: nil) } }
        let backends: [(String, (CPUISA) -> any ExpertKernels, Float)] = [
            ("bf16", { BF16Kernels(isa: $0, useOneDNN: false) }, 1e-2),
            ("int8 8-bit", int8Backends[0], 3e-2), ("int8 7-bit", int8Backends[1], 4e-2),
        ]
        for (name, backend, bound) in backends {
            var outputs: [[Float]] = []
            for isa in runnableLevels {
                let ffn = backend(isa).prepare(weights, form: form, dModel: d)
                outputs.append(ffn.forward(x, dModel: d, workspace: ExpertWorkspace()))
            }
            let error = relativeError(outputs[0], exact)
            print("measured: \(name) \(activation) bias \(bias): max relative error \(error) (bound \(bound))")
            #expect(error < bound && error > 0, "\(name) \(activation): relative error \(error)")
            #expect(outputs.allSatisfy { $0 == outputs[0] }, "\(name): ISA levels differ")
        }
    }

    @Test("int8 on oneDNN (u8·s8, codes shifted by a zero point) gives the bits of SwiftMoE's own kernel at the same activation levels")
    func int8OneDNNMatchesOwnKernel() throws {
        guard let offer = OneDNN.offer(at: CPUISA.best), let form = offer.int8 else {
            print("note: oneDNN has no exact u8·s8 kernel on this CPU (\(CPUFeatures.detected)): skipped")
            return
        }
        // The probe's choice follows the kernel it ran: 8-bit codes only where it summed them
        // exactly (VNNI), 7-bit where vpmaddubsw's int16 pair sums saturate (AVX2).
        #expect(form.levels == 127 || form.levels == 63, "oneDNN at \(offer.isa) chose \(form.levels) levels")
        if !offer.isa.contains("vnni") && !offer.isa.contains("avx512") { #expect(form.levels == 63, "AVX2 oneDNN cannot sum 8-bit codes exactly") }
        print("note: oneDNN \(offer.int8Implementation ?? "?") at \(offer.isa): \(form.levels == 127 ? 8 : 7)-bit activations")
        for (activation, bias) in [(Activation.swiglu, false), (.gelu, true)] {
            let (d, ff) = (40, 72)
            let rows = Int8Kernels.ownKernelRows + 13
            let ffnForm = FFNForm(activation: activation, dFF: ff, hasBias: bias)
            let weights = ffnWeights(d: d, ff: ff, gated: activation.isGated, bias: bias, seed: 51)
            let x = values(rows * d, seed: 52, scale: 3)
            let withOneDNN = Int8Kernels(isa: CPUISA.best)
            #expect(withOneDNN.oneDNN == form && withOneDNN.activationLevels == form.levels)
            let own = Int8Kernels(isa: CPUISA.best, activationLevels: form.levels, oneDNN: nil)
            let a = withOneDNN.prepare(weights, form: ffnForm, dModel: d).forward(x, dModel: d, workspace: ExpertWorkspace())
            let b = own.prepare(weights, form: ffnForm, dModel: d).forward(x, dModel: d, workspace: ExpertWorkspace())
            let same = a == b
            #expect(same, "\(activation): oneDNN and the own kernel differ (max \(relativeError(a, b)))")
            let ffn = try #require(withOneDNN.prepare(weights, form: ffnForm, dModel: d) as? Int8FFN)
            #expect(ffn.w1.oneDNNReady && ffn.w2.oneDNNReady, "oneDNN was not used at this shape")
        }
    }

    @Test("bf16 on oneDNN (AVX-512 CPUs) agrees with SwiftMoE's own kernels within fp32 summation error")
    func bf16OneDNNMatchesOwnKernels() {
        guard let offer = OneDNN.offer(at: CPUISA.best), let name = offer.bf16Implementation else {
            print("note: oneDNN has no bf16 matmul on this CPU (\(CPUFeatures.detected); oneDNN 2.6 needs AVX-512): skipped")
            return
        }
        print("note: oneDNN bf16 \(name) at \(offer.isa)")
        let (d, ff, rows) = (40, 72, 37)
        let form = FFNForm(activation: .swiglu, dFF: ff, hasBias: true)
        let weights = ffnWeights(d: d, ff: ff, gated: true, bias: true, seed: 61)
        let x = values(rows * d, seed: 62)
        let a = BF16Kernels(isa: CPUISA.best).prepare(weights, form: form, dModel: d).forward(x, dModel: d, workspace: ExpertWorkspace())
        let b = BF16Kernels(isa: CPUISA.best, useOneDNN: false).prepare(weights, form: form, dModel: d).forward(x, dModel: d, workspace: ExpertWorkspace())
        #expect(relativeError(a, b) < 1e-5, "oneDNN bf16 against the own kernels: \(relativeError(a, b))")
    }

    @Test("group-wise int8 weights (ZeroQuant): closer to fp32 than per-channel when magnitudes vary along K; the same bits on every ISA; wire round trip")
    func groupWiseWeights() throws {
        let (d, ff, rows) = (64, 96, 7)
        let form = FFNForm(activation: .gelu, dFF: ff, hasBias: true)
        var weights = ffnWeights(d: d, ff: ff, gated: false, bias: true, seed: 81)
        // The first 32 inputs of every channel 50× larger: one per-channel scale leaves the
        // other weights a few codes; a group of 32 gives the large ones a scale of their own.
        for k in 0..<32 { for n in 0..<ff { weights.w1[k * ff + n] *= 50 } }
        func reconstructionError(_ matrix: QuantizedMatrix) -> Float {  // max over channels of max|ŵ − w| / max|w| on the small weights
            (0..<ff).map { n in (32..<d).map { abs(matrix.weight($0, n) - weights.w1[$0 * ff + n]) }.max()! / (32..<d).map { abs(weights.w1[$0 * ff + n]) }.max()! }.max()!
        }
        let perChannel = reconstructionError(QuantizedMatrix(weights.w1, inner: d, columns: ff, group: d, isa: .portable))
        let perGroup = reconstructionError(QuantizedMatrix(weights.w1, inner: d, columns: ff, group: 32, isa: .portable))
        print("measured: int8 weights' error on the small inputs: per channel \(perChannel), groups of 32 \(perGroup)")
        #expect(perGroup < perChannel / 10, "groups of 32: \(perGroup) against per channel \(perChannel)")
        let x = values(rows * d, seed: 82)
        let exact = OpenBLASKernels().prepare(weights, form: form, dModel: d).forward(x, dModel: d, workspace: ExpertWorkspace())
        let grouped = runnableLevels.map { Int8Kernels(isa: $0, activationLevels: 127, oneDNN: nil, groupSize: 32) }
        let outputs = grouped.map { $0.prepare(weights, form: form, dModel: d).forward(x, dModel: d, workspace: ExpertWorkspace()) }
        #expect(relativeError(outputs[0], exact) < 3e-2, "grouped FFN against fp32: \(relativeError(outputs[0], exact))")
        #expect(outputs.allSatisfy { $0 == outputs[0] }, "grouped kernels differ between ISA levels")
        let ffn = grouped[0].prepare(weights, form: form, dModel: d)
        let restored = try #require(ffn.wireBytes.withUnsafeBytes { grouped[0].restore(wireBytes: $0, form: form, dModel: d) })
        #expect(restored.forward(x, dModel: d, workspace: ExpertWorkspace()) == outputs[0])
        #expect(ffn.wireBytes.count == grouped[0].wireByteCount(form: form, dModel: d))
    }

    @Test("int8 outliers (LLM.int8()) in fp32: closer to fp32 when a few features are large; a row's result does not depend on its batch")
    func outliersInFP32() {
        let (d, ff, rows) = (48, 80, 9)
        let form = FFNForm(activation: .swiglu, dFF: ff, hasBias: false)
        let weights = ffnWeights(d: d, ff: ff, gated: true, bias: false, seed: 91)
        var x = values(rows * d, seed: 92)
        for row in 0..<rows where row % 2 == 0 { x[row * d + 5] = 25; x[row * d + 17] = -30 }  // outlier features, as in LLMs
        let exact = OpenBLASKernels().prepare(weights, form: form, dModel: d).forward(x, dModel: d, workspace: ExpertWorkspace())
        let plain = Int8Kernels(isa: .portable, activationLevels: 127, oneDNN: nil)
        let plainError = relativeError(plain.prepare(weights, form: form, dModel: d).forward(x, dModel: d, workspace: ExpertWorkspace()), exact)
        let levels = runnableLevels.map { Int8Kernels(isa: $0, activationLevels: 127, oneDNN: nil, outlierThreshold: 6) }
        let outputs = levels.map { $0.prepare(weights, form: form, dModel: d).forward(x, dModel: d, workspace: ExpertWorkspace()) }
        let outlierError = relativeError(outputs[0], exact)
        print("measured: int8 without outliers \(plainError), with |x| ≥ 6 in fp32 \(outlierError) (max relative error)")
        #expect(outlierError < plainError / 2, "outliers in fp32: \(outlierError) against \(plainError)")
        #expect(outputs.allSatisfy { $0 == outputs[0] }, "ISA levels differ with outliers")
        // Row 1 (no outliers) alone gives the bits it gets among rows that have them.
        let ffn = Int8Kernels(isa: CPUISA.best, settings: Int8Settings(outlierThreshold: 6)).prepare(weights, form: form, dModel: d)
        let batch = ffn.forward(x, dModel: d, workspace: ExpertWorkspace())
        let alone = ffn.forward(Array(x[d..<2 * d]), dModel: d, workspace: ExpertWorkspace())
        #expect(Array(batch[d..<2 * d]) == alone, "row 1 depends on its batch")
    }

    @Test("a NaN in one row stays in that row's outputs: the other rows equal a run without it (int8 scales are per token)")
    func nanStaysInItsRow() {
        let (d, ff, rows) = (24, 40, 12)  // 12 rows: above Int8Kernels.ownKernelRows, so oneDNN runs where it can
        let form = FFNForm(activation: .swiglu, dFF: ff, hasBias: true)
        let weights = ffnWeights(d: d, ff: ff, gated: true, bias: true, seed: 71)
        var x = values(rows * d, seed: 72)
        let backends: [any ExpertKernels] = [Int8Kernels(isa: CPUISA.best), Int8Kernels(isa: .portable), BF16Kernels(isa: CPUISA.best)]
        for kernels in backends {
            let ffn = kernels.prepare(weights, form: form, dModel: d)
            let clean = ffn.forward(x, dModel: d, workspace: ExpertWorkspace())
            x[4 * d + 7] = .nan
            let dirty = ffn.forward(x, dModel: d, workspace: ExpertWorkspace())
            x[4 * d + 7] = values(rows * d, seed: 72)[4 * d + 7]
            let nanRow = dirty[4 * d..<5 * d].allSatisfy { $0.isNaN }
            #expect(nanRow, "\(kernels.implementation): the NaN row's outputs")
            let others = (0..<rows).filter { $0 != 4 }.allSatisfy { row in dirty[row * d..<(row + 1) * d] == clean[row * d..<(row + 1) * d] }
            #expect(others, "\(kernels.implementation): a NaN leaked into other rows")
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
            let ffn = BF16Kernels(isa: isa, useOneDNN: false).prepare(weights, form: form, dModel: d)
            let panel = ffn.forward(x, dModel: d, workspace: ExpertWorkspace())  // > directRows: panels
            var direct: [Float] = []
            for start in stride(from: 0, to: rows, by: 4) {  // ≤ directRows: the direct kernel
                direct += ffn.forward(Array(x[start * d..<min(rows, start + 4) * d]), dModel: d, workspace: ExpertWorkspace())
            }
            #expect(relativeError(direct, panel) < 1e-5, "\(isa): \(relativeError(direct, panel))")
        }
        let levels = runnableLevels.map { BF16Kernels(isa: $0, useOneDNN: false).prepare(weights, form: form, dModel: d).forward(Array(x[0..<4 * d]), dModel: d, workspace: ExpertWorkspace()) }
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
