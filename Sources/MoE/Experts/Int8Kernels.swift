/// int8 experts: weights quantised once per output channel (symmetric, scale = max|w|/127 over
/// the channel's inputs) or, with `Int8Settings.groupSize`, per group of G inputs of a channel
/// (ZeroQuant); activations per token right before each product (scale = max|x|/L); int32 sums,
/// dequantised with both scales, then bias and activation in fp32 as for fp32 experts.
/// (LLM.int8()'s vector-wise scales; ZeroQuant's token-wise activations.) With
/// `Int8Settings.outlierThreshold`, activations of at least that magnitude are taken out before
/// quantising and multiplied in fp32 by their (dequantised) weights: LLM.int8()'s
/// mixed-precision decomposition, per element rather than per column, so a token's result never
/// depends on the other tokens of its batch.
///
/// Two kernels compute the same exact int32 sums, so which one runs never changes a bit:
/// - SwiftMoE's own (`CPUKernels.int8GEMM`): int8 widened to int16, pairs summed into int32
///   (`_mm256_madd_epi16` under AVX2); reads each weight once for all rows, so it serves
///   decode-sized calls (≤ `ownKernelRows` rows), every call on the portable level, and every
///   grouped product;
/// - oneDNN's u8·s8 matmul (`OneDNN`) above that, codes shifted into u8 by a zero point and the
///   shift taken back out with each channel's weight sum. Its AVX2 kernel (`gemm:jit`) adds pairs
///   of u8·s8 products into int16 (`vpmaddubsw`) and saturates beyond 32767, so where oneDNN's
///   kernel is not exact over the whole u8 range (checked at start-up by running its worst case)
///   activations get L = 63 levels (7 bits, u8 ≤ 127); on VNNI kernels L = 127
///   (`Int8Activations` fixes L instead).
/// L is one per backend (per process and `--cpu-isa`), so the reference of the same precision
/// on the same CPU gives the same bits. Weight bytes are a quarter of fp32's plus the scales.
package struct Int8Kernels: ExpertKernels {
    package let isa: CPUISA
    /// Steps each side of an activation's int8 code (127: 8 bits, or 63: 7 bits).
    package let activationLevels: Int
    /// Inputs per weight scale (nil: one scale per output channel).
    package let groupSize: Int?
    /// Activations of at least this magnitude stay fp32 (nil: none).
    package let outlierThreshold: Float?
    /// oneDNN's int8 form at this level, nil when SwiftMoE's own kernel does every product.
    let oneDNN: OneDNN.Int8Form?
    /// oneDNN's implementation name (when `oneDNN` is set).
    let oneDNNImplementation: String?
    /// Most rows a product runs with SwiftMoE's own kernel when oneDNN is there (measured:
    /// `Benchmarks/README.md`).
    static let ownKernelRows = 4

    /// The backend at `isa`, quantising as `settings` say: oneDNN runs the larger per-channel
    /// products when it has a kernel exact for the activation codes.
    package init(isa: CPUISA, settings: Int8Settings = Int8Settings()) {
        let offer = settings.groupSize == nil ? OneDNN.offer(at: isa) : nil
        let best = offer?.int8
        let levels: Int
        switch settings.activations {
        case .auto: levels = best?.levels ?? 127
        case .seven: levels = 63
        case .eight: levels = 127
        }
        // A kernel exact over the whole u8 range is exact over its lower half too.
        let form = best.flatMap { $0.levels >= levels ? OneDNN.Int8Form(levels: levels, zeroPoint: levels + 1) : nil }
        self.init(isa: isa, activationLevels: levels, oneDNN: form, oneDNNImplementation: offer.map { "\($0.int8Implementation ?? "?") (\($0.isa))" },
                  groupSize: settings.groupSize, outlierThreshold: settings.outlierThreshold)
    }

    /// A backend with its activation levels and oneDNN's use given (tests: SwiftMoE's own kernel
    /// at oneDNN's levels gives oneDNN's bits).
    init(isa: CPUISA, activationLevels: Int, oneDNN: OneDNN.Int8Form?, oneDNNImplementation: String? = nil,
         groupSize: Int? = nil, outlierThreshold: Float? = nil) {
        precondition(oneDNN == nil || (oneDNN?.levels == activationLevels && groupSize == nil))
        (self.isa, self.activationLevels, self.oneDNN) = (isa, activationLevels, oneDNN)
        self.oneDNNImplementation = oneDNN == nil ? nil : oneDNNImplementation
        (self.groupSize, self.outlierThreshold) = (groupSize, outlierThreshold)
    }

    package var precision: ExpertPrecision { .int8 }
    package var implementation: String {
        let own = isa == .portable ? "portable C" : "AVX2 madd_epi16"
        let weights = "int8 weights per " + (groupSize.map { "group of \($0) inputs of each output channel" } ?? "output channel") + ", int32 sums"
        let activations = "activations \(activationLevels == 127 ? "8" : "7")-bit per token"
            + (outlierThreshold.map { ", those of magnitude ≥ \($0) in fp32" } ?? "")
        guard let oneDNN, let oneDNNImplementation else {
            return "\(weights), \(own); \(activations)"
                + (isa >= .avx2 && groupSize == nil ? " (no oneDNN u8·s8 kernel here is exact for these codes)" : "")
        }
        return "\(weights): ≤ \(Self.ownKernelRows) rows \(own), more oneDNN u8·s8 \(oneDNNImplementation); \(activations)"
            + (oneDNN.levels == 127 ? "" : " (vpmaddubsw's int16 pair sums would saturate on 8)")
    }

    /// The group length for a matrix of `inner` inputs (`inner` itself when per channel).
    func group(inner: Int) -> Int { min(groupSize ?? inner, inner) }

    package func prepare(_ weights: ExpertWeights, form: FFNForm, dModel: Int) -> any PreparedFFN {
        let dFF = form.dFF
        return Int8FFN(w1: QuantizedMatrix(weights.w1, inner: dModel, columns: dFF, group: group(inner: dModel), isa: isa),
                       w3: form.activation.isGated ? QuantizedMatrix(weights.w3, inner: dModel, columns: dFF, group: group(inner: dModel), isa: isa) : nil,
                       w2: QuantizedMatrix(weights.w2, inner: dFF, columns: dModel, group: group(inner: dFF), isa: isa),
                       biases: FFNBiases(b1: weights.b1, b2: weights.b2, b3: weights.b3), form: form, dModel: dModel, kernels: self)
    }

    package func wireByteCount(form: FFNForm, dModel: Int) -> Int {
        let (matrices, biases) = WireLayout.counts(form: form, dModel: dModel)
        let groupsFromModel = (dModel + group(inner: dModel) - 1) / group(inner: dModel)
        let groupsFromHidden = (form.dFF + group(inner: form.dFF) - 1) / group(inner: form.dFF)
        let scales = form.dFF * groupsFromModel * (form.activation.isGated ? 2 : 1) + dModel * groupsFromHidden
        return matrices + 4 * scales + 4 * biases
    }

    package func restore(wireBytes: UnsafeRawBufferPointer, form: FFNForm, dModel: Int) -> (any PreparedFFN)? {
        guard wireBytes.count == wireByteCount(form: form, dModel: dModel) else { return nil }
        var reader = WireReader(bytes: wireBytes)
        let dFF = form.dFF, gated = form.activation.isGated
        let w1 = reader.matrix(inner: dModel, columns: dFF, group: group(inner: dModel))
        let w2 = reader.matrix(inner: dFF, columns: dModel, group: group(inner: dFF))
        let w3 = gated ? reader.matrix(inner: dModel, columns: dFF, group: group(inner: dModel)) : nil
        guard let biases = reader.biases(form: form, dModel: dModel),
              ([w1, w2] + (w3.map { [$0] } ?? [])).allSatisfy({ $0.scales.allSatisfy { $0.isFinite && $0 > 0 } }) else { return nil }
        return Int8FFN(w1: w1, w3: w3, w2: w2, biases: biases, form: form, dModel: dModel, kernels: self)
    }

    /// oneDNN's form when it runs a product of `rows` rows with `matrix`, else nil.
    func usesOneDNN(rows: Int, _ matrix: QuantizedMatrix) -> OneDNN.Int8Form? {
        guard let oneDNN, rows > Self.ownKernelRows, matrix.oneDNNReady else { return nil }
        return oneDNN
    }
}

/// A weight matrix `[inner, columns]` quantised per output column (or per group of `group`
/// inputs of a column), stored one row per column (`codes[n, k]`, so each output's dot product
/// reads contiguous bytes) with its scales (`[columns, groups]`).
struct QuantizedMatrix {
    let inner: Int
    let columns: Int
    /// Inputs per scale (`inner` when one scale per column; the last group may be shorter).
    let group: Int
    let codes: [Int8]
    let scales: [Float]
    /// `Σ_k codes[n, k]` per column (what takes oneDNN's zero point back out).
    let sums: [Int32]
    /// Whether oneDNN's product at this shape was made and found exact (set by `Int8FFN`).
    var oneDNNReady = false

    var groups: Int { (inner + group - 1) / group }
    var isGrouped: Bool { group < inner }

    init(inner: Int, columns: Int, group: Int, codes: [Int8], scales: [Float]) {
        (self.inner, self.columns, self.group, self.codes, self.scales) = (inner, columns, group, codes, scales)
        sums = (0..<columns).map { n in codes[n * inner..<(n + 1) * inner].reduce(Int32(0)) { $0 + Int32($1) } }
    }

    /// Quantises row-major `[inner, columns]` fp32 weights.
    init(_ weights: [Float], inner: Int, columns: Int, group: Int, isa: CPUISA) {
        var transposed = [Float](repeating: 0, count: inner * columns)
        for k in 0..<inner {
            for n in 0..<columns { transposed[n * inner + k] = weights[k * columns + n] }
        }
        let groups = (inner + group - 1) / group
        var codes = [Int8](repeating: 0, count: inner * columns)
        var scales = [Float](repeating: 1, count: columns * groups)
        transposed.withUnsafeBufferPointer { source in
            codes.withUnsafeMutableBufferPointer { q in
                scales.withUnsafeMutableBufferPointer { s in
                    if groups == 1 {
                        CPUKernels.quantizeRows(source.baseAddress!, rows: columns, width: inner, codes: q.baseAddress!, scales: s.baseAddress!, isa: isa)
                        return
                    }
                    for n in 0..<columns {
                        for g in 0..<groups {
                            let start = n * inner + g * group
                            CPUKernels.quantizeRows(source.baseAddress! + start, rows: 1, width: min(group, inner - g * group), codes: q.baseAddress! + start,
                                                    scales: s.baseAddress! + n * groups + g, isa: isa)
                        }
                    }
                }
            }
        }
        self.init(inner: inner, columns: columns, group: group, codes: codes, scales: scales)
    }

    /// The fp32 weight `W[k, n]` these codes stand for.
    @inline(__always)
    func weight(_ k: Int, _ n: Int) -> Float { Float(codes[n * inner + k]) * scales[n * groups + k / group] }
}

/// One activation taken out of int8 (`Int8Settings.outlierThreshold`): row, input, value.
struct Int8Outlier {
    var row: Int32
    var input: Int32
    var value: Float
}

final class Int8FFN: ProductsFFN {
    let w1: QuantizedMatrix, w3: QuantizedMatrix?, w2: QuantizedMatrix
    let biases: FFNBiases
    let form: FFNForm
    let dModel: Int
    let kernels: Int8Kernels

    init(w1: QuantizedMatrix, w3: QuantizedMatrix?, w2: QuantizedMatrix, biases: FFNBiases, form: FFNForm, dModel: Int, kernels: Int8Kernels) {
        var (w1, w3, w2) = (w1, w3, w2)
        if let oneDNN = kernels.oneDNN {
            w1.oneDNNReady = !w1.isGrouped && OneDNN.int8Ready(inner: w1.inner, columns: w1.columns, form: oneDNN)
            w2.oneDNNReady = !w2.isGrouped && OneDNN.int8Ready(inner: w2.inner, columns: w2.columns, form: oneDNN)
            w3?.oneDNNReady = w1.oneDNNReady
        }
        (self.w1, self.w3, self.w2, self.biases, self.form, self.dModel, self.kernels) = (w1, w3, w2, biases, form, dModel, kernels)
    }

    private var matrices: [QuantizedMatrix] { [w1, w2] + (w3.map { [$0] } ?? []) }

    var bytesHeld: Int {
        matrices.reduce(0) { $0 + $1.codes.count + 4 * $1.scales.count } + 4 * (biases.b1.count + biases.b2.count + biases.b3.count)
    }

    var wireBytes: [UInt8] {
        matrices.flatMap { matrix in matrix.codes.map { UInt8(bitPattern: $0) } + matrix.scales.withUnsafeBytes { Array($0) } } + WireLayout.bytes(biases)
    }

    /// The rows as int8 codes with one scale per row (token); with an outlier threshold, the
    /// outliers first taken out (kept, in row order, for `multiply`) and zeroed in a copy.
    func stage(_ x: UnsafePointer<Float>, rows: Int, width: Int, hidden: Bool, workspace: ExpertWorkspace) -> StagedRows {
        let codes = (hidden ? workspace.hiddenCodes : workspace.inputCodes).reserve(rows * width)
        let scales = (hidden ? workspace.hiddenScales : workspace.inputScales).reserve(rows)
        var source = x
        var outliers: [Int8Outlier] = []
        if let threshold = kernels.outlierThreshold {
            let copy = (hidden ? workspace.stagedHidden : workspace.stagedInput).reserve(rows * width)
            copy.update(from: x, count: rows * width)
            for index in 0..<rows * width where abs(copy[index]) >= threshold {
                outliers.append(Int8Outlier(row: Int32(index / width), input: Int32(index % width), value: copy[index]))
                copy[index] = 0
            }
            source = UnsafePointer(copy)
        }
        CPUKernels.quantizeRows(source, rows: rows, width: width, codes: codes, scales: scales, levels: kernels.activationLevels, isa: kernels.isa)
        if hidden { workspace.hiddenOutliers = outliers } else { workspace.inputOutliers = outliers }
        return .int8(codes: UnsafePointer(codes), scales: UnsafePointer(scales), hidden: hidden)
    }

    func multiply(_ weight: FFNWeight, _ x: StagedRows, rows: Int, columns: Int, inner: Int, into y: UnsafeMutablePointer<Float>,
                  accumulate: Bool, workspace: ExpertWorkspace) {
        guard case let .int8(codes, scales, hidden) = x else { preconditionFailure("int8 products read int8 rows") }
        let matrix: QuantizedMatrix
        switch weight {
        case .w1: matrix = w1
        case .w3: matrix = w3!
        case .w2: matrix = w2
        }
        precondition(matrix.inner == inner && matrix.columns == columns)
        matrix.codes.withUnsafeBufferPointer { w in
            matrix.scales.withUnsafeBufferPointer { s in
                if let oneDNN = kernels.usesOneDNN(rows: rows, matrix),
                   matrix.sums.withUnsafeBufferPointer({ sums in
                       OneDNN.int8GEMM(codes, aScales: scales, rows: rows, inner: inner, w.baseAddress!, wScales: s.baseAddress!,
                                       wSums: sums.baseAddress!, columns: columns, form: oneDNN, into: y, accumulate: accumulate)
                   }) {
                    return
                }
                if matrix.isGrouped {
                    CPUKernels.int8GEMMGrouped(codes, aScales: scales, rows: rows, inner: inner, w.baseAddress!, wScales: s.baseAddress!,
                                               group: matrix.group, columns: columns, into: y, accumulate: accumulate, isa: kernels.isa)
                } else {
                    CPUKernels.int8GEMM(codes, aScales: scales, rows: rows, inner: inner, w.baseAddress!, wScales: s.baseAddress!, columns: columns,
                                        into: y, accumulate: accumulate, isa: kernels.isa)
                }
            }
        }
        // The outliers' share, in fp32: y[t, n] += x[t, k] · W[k, n].
        for outlier in hidden ? workspace.hiddenOutliers : workspace.inputOutliers {
            let row = y + Int(outlier.row) * columns, k = Int(outlier.input)
            for n in 0..<columns { row[n] += outlier.value * matrix.weight(k, n) }
        }
    }
}
