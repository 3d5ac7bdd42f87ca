/// bf16 experts: weights held as bf16 (converted once, at `prepare`), activations rounded to
/// bf16 before each product, fp32 accumulation. Every bf16 product is exact in fp32, so each
/// kernel below is a bf16 GEMM with fp32 accumulation, differing only in summation order:
/// - where oneDNN has a bf16 matmul (AVX-512 CPUs: `brg:avx512_core_bf16` on AVX512-BF16),
///   every product runs there, on row-major weights;
/// - elsewhere (oneDNN 2.6 refuses bf16 below AVX-512), up to `directRows` rows a product reads
///   each bf16 weight once and widens it in registers for all rows (decode-sized calls are bound
///   by the weight bytes, half of fp32's); beyond, it widens the weights to fp32 in panels of
///   `panelRows` rows (which stay in cache) and multiplies on OpenBLAS, on a blocked layout.
package struct BF16Kernels: ExpertKernels {
    package let isa: CPUISA
    /// oneDNN's bf16 implementation ("brg:avx512_core_bf16 (avx512_core_bf16)"), nil when
    /// SwiftMoE's own kernels run every product.
    let oneDNNImplementation: String?
    /// Rows of a weight panel widened at once: 128 × d_ff 4096 floats = 2 MiB.
    static let panelRows = 128
    /// Most rows a product runs with the direct kernel (measured: `Benchmarks/README.md`).
    static let directRows = 32

    package init(isa: CPUISA) { self.init(isa: isa, useOneDNN: true) }

    /// `useOneDNN: false` keeps SwiftMoE's own kernels even where oneDNN has bf16 (tests).
    init(isa: CPUISA, useOneDNN: Bool) {
        self.isa = isa
        let offer = useOneDNN ? OneDNN.offer(at: isa) : nil
        oneDNNImplementation = offer.flatMap { offer in offer.bf16Implementation.map { "\($0) (\(offer.isa))" } }
    }

    package var precision: ExpertPrecision { .bf16 }
    package var implementation: String {
        if let oneDNNImplementation { return "bf16 weights and activations, oneDNN matmul \(oneDNNImplementation), fp32 sums" }
        return "bf16 weights: ≤ \(Self.directRows) rows direct (\(isa == .portable ? "portable C" : "AVX2 FMA")), more widened in "
            + "\(Self.panelRows)-row panels + OpenBLAS sgemm (\(BLAS.coreName)); activations rounded to bf16"
            + (isa >= .avx2 ? " (oneDNN has no bf16 matmul below AVX-512)" : "")
    }

    package func prepare(_ weights: ExpertWeights, form: FFNForm, dModel: Int) -> any PreparedFFN {
        BF16FFN(w1: CPUKernels.bf16(weights.w1), w3: CPUKernels.bf16(weights.w3), w2: CPUKernels.bf16(weights.w2),
                biases: FFNBiases(b1: weights.b1, b2: weights.b2, b3: weights.b3), form: form, dModel: dModel, kernels: self)
    }

    /// The weights ship row-major (unpadded; the receiver lays them out again), then the biases.
    package func wireByteCount(form: FFNForm, dModel: Int) -> Int {
        let (matrices, biases) = WireLayout.counts(form: form, dModel: dModel)
        return 2 * matrices + 4 * biases
    }

    package func restore(wireBytes: UnsafeRawBufferPointer, form: FFNForm, dModel: Int) -> (any PreparedFFN)? {
        guard wireBytes.count == wireByteCount(form: form, dModel: dModel) else { return nil }
        var reader = WireReader(bytes: wireBytes)
        let hidden = dModel * form.dFF
        let gated = form.activation.isGated
        let w1: [UInt16] = reader.take(hidden), w2: [UInt16] = reader.take(hidden), w3: [UInt16] = reader.take(gated ? hidden : 0)
        guard let biases = reader.biases(form: form, dModel: dModel),
              (w1 + w2 + w3).allSatisfy({ $0 & 0x7F80 != 0x7F80 }) else { return nil }  // exponent all ones: inf or NaN
        return BF16FFN(w1: w1, w3: w3, w2: w2, biases: biases, form: form, dModel: dModel, kernels: self)
    }
}

final class BF16FFN: ProductsFFN {
    /// w1, w3 `[dModel, dFF]`, w2 `[dFF, dModel]`: row-major for oneDNN (`onOneDNN`), else in the
    /// blocked layout of the direct kernel (`CPUKernels.blockedBF16`).
    let w1: [UInt16], w3: [UInt16], w2: [UInt16]
    let biases: FFNBiases
    let form: FFNForm
    let dModel: Int
    let isa: CPUISA
    /// Whether oneDNN runs the products (it had a bf16 matmul at both shapes).
    let onOneDNN: Bool

    /// From row-major bf16 weights.
    init(w1: [UInt16], w3: [UInt16], w2: [UInt16], biases: FFNBiases, form: FFNForm, dModel: Int, kernels: BF16Kernels) {
        let dFF = form.dFF
        onOneDNN = kernels.oneDNNImplementation != nil
            && OneDNN.bf16Ready(inner: dModel, columns: dFF) && OneDNN.bf16Ready(inner: dFF, columns: dModel)
        if onOneDNN {
            (self.w1, self.w3, self.w2) = (w1, w3, w2)
        } else {
            self.w1 = CPUKernels.blockedBF16(w1, inner: dModel, columns: dFF)
            self.w3 = w3.isEmpty ? [] : CPUKernels.blockedBF16(w3, inner: dModel, columns: dFF)
            self.w2 = CPUKernels.blockedBF16(w2, inner: dFF, columns: dModel)
        }
        (self.biases, self.form, self.dModel, self.isa) = (biases, form, dModel, kernels.isa)
    }

    var bytesHeld: Int { 2 * (w1.count + w2.count + w3.count) + 4 * (biases.b1.count + biases.b2.count + biases.b3.count) }

    var wireBytes: [UInt8] {
        let dFF = form.dFF
        let rowMajor = { (matrix: [UInt16], inner: Int, columns: Int) in
            self.onOneDNN || matrix.isEmpty ? matrix : CPUKernels.rowMajorBF16(matrix, inner: inner, columns: columns)
        }
        return WireLayout.bytes(rowMajor(w1, dModel, dFF), rowMajor(w2, dFF, dModel), rowMajor(w3, dModel, dFF)) + WireLayout.bytes(biases)
    }

    /// The rows rounded to bf16 (a copy: the caller's rows are left as they are).
    func stage(_ x: UnsafePointer<Float>, rows: Int, width: Int, hidden: Bool, workspace: ExpertWorkspace) -> StagedRows {
        let staged = (hidden ? workspace.stagedHidden : workspace.stagedInput).reserve(rows * width)
        staged.update(from: x, count: rows * width)
        CPUKernels.roundToBF16(staged, count: rows * width)
        return .float(UnsafePointer(staged))
    }

    func multiply(_ weight: FFNWeight, _ x: StagedRows, rows: Int, columns: Int, inner: Int, into y: UnsafeMutablePointer<Float>,
                  accumulate: Bool, workspace: ExpertWorkspace) {
        guard case let .float(a) = x else { preconditionFailure("bf16 products read float rows") }
        let matrix: [UInt16]
        switch weight {
        case .w1: matrix = w1
        case .w3: matrix = w3
        case .w2: matrix = w2
        }
        matrix.withUnsafeBufferPointer { weights in
            let w = weights.baseAddress!
            if onOneDNN {
                if OneDNN.bf16GEMM(a, rows: rows, inner: inner, w, columns: columns, into: y, accumulate: accumulate) { return }
                multiplyInPanels(a, rows: rows, inner: inner, w, columns: columns, into: y, accumulate: accumulate, workspace: workspace)
            } else if rows <= BF16Kernels.directRows {
                CPUKernels.bf16GEMMRows(a, rows: rows, inner: inner, w, columns: columns, into: y, accumulate: accumulate, isa: isa)
            } else {
                multiplyInPanels(a, rows: rows, inner: inner, w, columns: columns, into: y, accumulate: accumulate, workspace: workspace)
            }
        }
    }

    /// `y (+)= a · w`, the weights widened `panelRows` rows at a time (from either layout: a
    /// row-major panel is contiguous) and multiplied on OpenBLAS.
    private func multiplyInPanels(_ a: UnsafePointer<Float>, rows: Int, inner: Int, _ w: UnsafePointer<UInt16>, columns: Int,
                                  into y: UnsafeMutablePointer<Float>, accumulate: Bool, workspace: ExpertWorkspace) {
        let panelRows = BF16Kernels.panelRows
        let panel = workspace.panel.reserve(min(panelRows, inner) * columns)
        var first = 0
        while first < inner {
            let count = min(panelRows, inner - first)
            if onOneDNN {
                CPUKernels.widen(w + first * columns, into: panel, count: count * columns, isa: isa)
            } else {
                CPUKernels.widenRows(w, inner: inner, columns: columns, first: first, count: count, into: panel, isa: isa)
            }
            BLAS.multiply(rows: rows, columns: columns, inner: count, a + first, leadingA: inner, panel, into: y, accumulate: accumulate || first > 0)
            first += count
        }
    }
}

/// An FFN whose backend supplies only the products (`FFNProducts`); bias, activation and their
/// order are `ExpertFFN.forward`'s, the same for every backend.
protocol ProductsFFN: PreparedFFN, FFNProducts {
    var biases: FFNBiases { get }
    var dModel: Int { get }
}

extension ProductsFFN {
    func forward(input: UnsafePointer<Float>, rows: Int, output: UnsafeMutablePointer<Float>, workspace: ExpertWorkspace,
                 between: ProgressHook?) {
        ExpertFFN.forward(self, biases: biases, form: form, dModel: dModel, input: input, rows: rows, output: output,
                          workspace: workspace, between: between)
    }
}

/// The wire layout of a low-precision FFN: its matrices (w1, w2, then w3 for gated forms) in
/// the backend's form, then the fp32 biases b1, b2, b3 (those the form has).
enum WireLayout {
    /// Weight-matrix elements and bias elements of an FFN of `form`.
    static func counts(form: FFNForm, dModel: Int) -> (matrices: Int, biases: Int) {
        let gated = form.activation.isGated
        let matrices = dModel * form.dFF * (gated ? 3 : 2)
        let biases = form.hasBias ? form.dFF + dModel + (gated ? form.dFF : 0) : 0
        return (matrices, biases)
    }

    static func bytes(_ matrices: [UInt16]...) -> [UInt8] { matrices.flatMap { $0.withUnsafeBytes { Array($0) } } }

    static func bytes(_ biases: FFNBiases) -> [UInt8] { (biases.b1 + biases.b2 + biases.b3).withUnsafeBytes { Array($0) } }
}

/// Reads a wire layout front to back (unaligned).
struct WireReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    mutating func take<Element>(_ count: Int) -> [Element] {
        let size = count * MemoryLayout<Element>.stride
        defer { offset += size }
        return [Element](unsafeUninitializedCapacity: count) { buffer, initialized in
            _ = UnsafeMutableRawBufferPointer(buffer).initializeMemory(as: UInt8.self, from: bytes[offset..<offset + size])
            initialized = count
        }
    }

    mutating func matrix(inner: Int, columns: Int, group: Int) -> QuantizedMatrix {
        let codes: [Int8] = take(inner * columns)
        return QuantizedMatrix(inner: inner, columns: columns, group: group, codes: codes, scales: take(columns * ((inner + group - 1) / group)))
    }

    /// The biases the form has, or nil when one is not finite.
    mutating func biases(form: FFNForm, dModel: Int) -> FFNBiases? {
        guard form.hasBias else { return FFNBiases(b1: [], b2: [], b3: []) }
        let b1: [Float] = take(form.dFF), b2: [Float] = take(dModel), b3: [Float] = take(form.activation.isGated ? form.dFF : 0)
        guard (b1 + b2 + b3).allSatisfy(\.isFinite) else { return nil }
        return FFNBiases(b1: b1, b2: b2, b3: b3)
    }
}
