/// bf16 experts: weights held as bf16 (converted once, at `prepare`), activations rounded to
/// bf16 before each product, fp32 accumulation. Up to `directRows` rows, a product reads each
/// bf16 weight once and widens it in registers for all rows (decode-sized calls are bound by the
/// weight bytes, half of fp32's); beyond, it widens the weights to fp32 in panels of `panelRows`
/// rows (which stay in cache) and multiplies on OpenBLAS. Every bf16 product is exact in fp32,
/// so both are a bf16 GEMM with fp32 accumulation up to summation order.
/// (oneDNN's bf16 matmul for AVX512-BF16 CPUs is not built yet: see the issue's note.)
package struct BF16Kernels: ExpertKernels {
    package let isa: CPUISA
    /// Rows of a weight panel widened at once: 128 × d_ff 4096 floats = 2 MiB.
    static let panelRows = 128
    /// Most rows a product runs with the direct kernel (measured: `Benchmarks/README.md`).
    static let directRows = 32

    package init(isa: CPUISA) { self.isa = isa }

    package var precision: ExpertPrecision { .bf16 }
    package var implementation: String {
        "bf16 weights: ≤ \(Self.directRows) rows direct (\(isa == .portable ? "portable C" : "AVX2 FMA")), more widened in \(Self.panelRows)-row panels + OpenBLAS sgemm (\(BLAS.coreName)); activations rounded to bf16"
    }

    package func prepare(_ weights: ExpertWeights, form: FFNForm, dModel: Int) -> any PreparedFFN {
        BF16FFN(w1: CPUKernels.bf16(weights.w1), w3: CPUKernels.bf16(weights.w3), w2: CPUKernels.bf16(weights.w2),
                biases: FFNBiases(b1: weights.b1, b2: weights.b2, b3: weights.b3), form: form, dModel: dModel, isa: isa)
    }

    /// The weights ship row-major (unpadded; the receiver blocks them again), then the biases.
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
        return BF16FFN(w1: w1, w3: w3, w2: w2, biases: biases, form: form, dModel: dModel, isa: isa)
    }
}

final class BF16FFN: ProductsFFN {
    /// The weights in the blocked layout (`CPUKernels.blockedBF16`): w1, w3 `[dModel, dFF]`, w2 `[dFF, dModel]`.
    let w1: [UInt16], w3: [UInt16], w2: [UInt16]
    let biases: FFNBiases
    let form: FFNForm
    let dModel: Int
    let isa: CPUISA

    /// From row-major bf16 weights.
    init(w1: [UInt16], w3: [UInt16], w2: [UInt16], biases: FFNBiases, form: FFNForm, dModel: Int, isa: CPUISA) {
        let dFF = form.dFF
        self.w1 = CPUKernels.blockedBF16(w1, inner: dModel, columns: dFF)
        self.w3 = w3.isEmpty ? [] : CPUKernels.blockedBF16(w3, inner: dModel, columns: dFF)
        self.w2 = CPUKernels.blockedBF16(w2, inner: dFF, columns: dModel)
        (self.biases, self.form, self.dModel, self.isa) = (biases, form, dModel, isa)
    }

    var bytesHeld: Int { 2 * (w1.count + w2.count + w3.count) + 4 * (biases.b1.count + biases.b2.count + biases.b3.count) }

    var wireBytes: [UInt8] {
        let dFF = form.dFF
        return WireLayout.bytes(CPUKernels.rowMajorBF16(w1, inner: dModel, columns: dFF), CPUKernels.rowMajorBF16(w2, inner: dFF, columns: dModel),
                                w3.isEmpty ? [] : CPUKernels.rowMajorBF16(w3, inner: dModel, columns: dFF)) + WireLayout.bytes(biases)
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
        if rows <= BF16Kernels.directRows {
            matrix.withUnsafeBufferPointer { weights in
                CPUKernels.bf16GEMMRows(a, rows: rows, inner: inner, weights.baseAddress!, columns: columns, into: y, accumulate: accumulate, isa: isa)
            }
            return
        }
        let panelRows = BF16Kernels.panelRows
        let panel = workspace.panel.reserve(min(panelRows, inner) * columns)
        matrix.withUnsafeBufferPointer { weights in
            var first = 0
            while first < inner {
                let count = min(panelRows, inner - first)
                CPUKernels.widenRows(weights.baseAddress!, inner: inner, columns: columns, first: first, count: count, into: panel, isa: isa)
                BLAS.multiply(rows: rows, columns: columns, inner: count, a + first, leadingA: inner, panel, into: y,
                              accumulate: accumulate || first > 0)
                first += count
            }
        }
    }
}

/// int8 experts: weights quantised once per output channel (symmetric, scale = max|w|/127 over
/// the channel's inputs), activations per token right before each product (scale = max|x|/127),
/// int32 sums, dequantised with both scales, then bias and activation in fp32 as for fp32
/// experts. (LLM.int8()'s vector-wise scales; ZeroQuant's token-wise activations.) The product
/// widens int8 to int16 and sums pairs into int32 (`_mm256_madd_epi16` under AVX2): exact, no
/// saturation, so every ISA — and the reference — gives the same bits. Weight bytes are a
/// quarter of fp32's (plus one scale per channel).
package struct Int8Kernels: ExpertKernels {
    package let isa: CPUISA

    package init(isa: CPUISA) { self.isa = isa }

    package var precision: ExpertPrecision { .int8 }
    package var implementation: String {
        "int8 weights per output channel, int8 activations per token, int32 sums (\(isa == .portable ? "portable C" : "AVX2 madd_epi16"))"
    }

    package func prepare(_ weights: ExpertWeights, form: FFNForm, dModel: Int) -> any PreparedFFN {
        let dFF = form.dFF
        return Int8FFN(w1: QuantizedMatrix(weights.w1, inner: dModel, columns: dFF, isa: isa),
                       w3: form.activation.isGated ? QuantizedMatrix(weights.w3, inner: dModel, columns: dFF, isa: isa) : nil,
                       w2: QuantizedMatrix(weights.w2, inner: dFF, columns: dModel, isa: isa),
                       biases: FFNBiases(b1: weights.b1, b2: weights.b2, b3: weights.b3), form: form, dModel: dModel, isa: isa)
    }

    package func wireByteCount(form: FFNForm, dModel: Int) -> Int {
        let (matrices, biases) = WireLayout.counts(form: form, dModel: dModel)
        let channels = form.dFF * (form.activation.isGated ? 2 : 1) + dModel
        return matrices + 4 * channels + 4 * biases
    }

    package func restore(wireBytes: UnsafeRawBufferPointer, form: FFNForm, dModel: Int) -> (any PreparedFFN)? {
        guard wireBytes.count == wireByteCount(form: form, dModel: dModel) else { return nil }
        var reader = WireReader(bytes: wireBytes)
        let dFF = form.dFF, gated = form.activation.isGated
        let w1 = reader.matrix(inner: dModel, columns: dFF)
        let w2 = reader.matrix(inner: dFF, columns: dModel)
        let w3 = gated ? reader.matrix(inner: dModel, columns: dFF) : nil
        guard let biases = reader.biases(form: form, dModel: dModel),
              ([w1, w2] + (w3.map { [$0] } ?? [])).allSatisfy({ $0.scales.allSatisfy { $0.isFinite && $0 > 0 } }) else { return nil }
        return Int8FFN(w1: w1, w3: w3, w2: w2, biases: biases, form: form, dModel: dModel, isa: isa)
    }
}

/// A weight matrix `[inner, columns]` quantised per output column, stored one row per column
/// (`codes[n, k]`, so each output's dot product reads contiguous bytes) with its scale.
struct QuantizedMatrix {
    let inner: Int
    let columns: Int
    let codes: [Int8]
    let scales: [Float]

    init(inner: Int, columns: Int, codes: [Int8], scales: [Float]) {
        (self.inner, self.columns, self.codes, self.scales) = (inner, columns, codes, scales)
    }

    /// Quantises row-major `[inner, columns]` fp32 weights.
    init(_ weights: [Float], inner: Int, columns: Int, isa: CPUISA) {
        var transposed = [Float](repeating: 0, count: inner * columns)
        for k in 0..<inner {
            for n in 0..<columns { transposed[n * inner + k] = weights[k * columns + n] }
        }
        var codes = [Int8](repeating: 0, count: inner * columns)
        var scales = [Float](repeating: 1, count: columns)
        transposed.withUnsafeBufferPointer { source in
            codes.withUnsafeMutableBufferPointer { q in
                scales.withUnsafeMutableBufferPointer { s in
                    CPUKernels.quantizeRows(source.baseAddress!, rows: columns, width: inner, codes: q.baseAddress!, scales: s.baseAddress!, isa: isa)
                }
            }
        }
        self.init(inner: inner, columns: columns, codes: codes, scales: scales)
    }
}

final class Int8FFN: ProductsFFN {
    let w1: QuantizedMatrix, w3: QuantizedMatrix?, w2: QuantizedMatrix
    let biases: FFNBiases
    let form: FFNForm
    let dModel: Int
    let isa: CPUISA

    init(w1: QuantizedMatrix, w3: QuantizedMatrix?, w2: QuantizedMatrix, biases: FFNBiases, form: FFNForm, dModel: Int, isa: CPUISA) {
        (self.w1, self.w3, self.w2, self.biases, self.form, self.dModel, self.isa) = (w1, w3, w2, biases, form, dModel, isa)
    }

    private var matrices: [QuantizedMatrix] { [w1, w2] + (w3.map { [$0] } ?? []) }

    var bytesHeld: Int {
        matrices.reduce(0) { $0 + $1.codes.count + 4 * $1.scales.count } + 4 * (biases.b1.count + biases.b2.count + biases.b3.count)
    }

    var wireBytes: [UInt8] {
        matrices.flatMap { matrix in matrix.codes.map { UInt8(bitPattern: $0) } + matrix.scales.withUnsafeBytes { Array($0) } } + WireLayout.bytes(biases)
    }

    /// The rows as int8 codes with one scale per row (token).
    func stage(_ x: UnsafePointer<Float>, rows: Int, width: Int, hidden: Bool, workspace: ExpertWorkspace) -> StagedRows {
        let codes = (hidden ? workspace.hiddenCodes : workspace.inputCodes).reserve(rows * width)
        let scales = (hidden ? workspace.hiddenScales : workspace.inputScales).reserve(rows)
        CPUKernels.quantizeRows(x, rows: rows, width: width, codes: codes, scales: scales, isa: isa)
        return .int8(codes: UnsafePointer(codes), scales: UnsafePointer(scales))
    }

    func multiply(_ weight: FFNWeight, _ x: StagedRows, rows: Int, columns: Int, inner: Int, into y: UnsafeMutablePointer<Float>,
                  accumulate: Bool, workspace: ExpertWorkspace) {
        guard case let .int8(codes, scales) = x else { preconditionFailure("int8 products read int8 rows") }
        let matrix: QuantizedMatrix
        switch weight {
        case .w1: matrix = w1
        case .w3: matrix = w3!
        case .w2: matrix = w2
        }
        precondition(matrix.inner == inner && matrix.columns == columns)
        matrix.codes.withUnsafeBufferPointer { w in
            matrix.scales.withUnsafeBufferPointer { s in
                CPUKernels.int8GEMM(codes, aScales: scales, rows: rows, inner: inner, w.baseAddress!, wScales: s.baseAddress!, columns: columns,
                                    into: y, accumulate: accumulate, isa: isa)
            }
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

    mutating func matrix(inner: Int, columns: Int) -> QuantizedMatrix {
        let codes: [Int8] = take(inner * columns)
        return QuantizedMatrix(inner: inner, columns: columns, codes: codes, scales: take(columns))
    }

    /// The biases the form has, or nil when one is not finite.
    mutating func biases(form: FFNForm, dModel: Int) -> FFNBiases? {
        guard form.hasBias else { return FFNBiases(b1: [], b2: [], b3: []) }
        let b1: [Float] = take(form.dFF), b2: [Float] = take(dModel), b3: [Float] = take(form.activation.isGated ? form.dFF : 0)
        guard (b1 + b2 + b3).allSatisfy(\.isFinite) else { return nil }
        return FFNBiases(b1: b1, b2: b2, b3: b3)
    }
}
