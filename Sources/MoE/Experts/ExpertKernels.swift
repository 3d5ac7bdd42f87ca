import FileFormats

/// The precision seam of expert compute: every FFN SwiftMoE runs — routed experts, shared
/// experts, dense and residual MLPs, in the distributed layer, the reference and the overlap
/// planner's calibration — goes through one `ExpertKernels` backend.
///
/// A backend prepares an FFN's fp32 weights once (at load, or when a migrated expert arrives)
/// into its own form, a `PreparedFFN`, and runs that form over a block of rows. Nothing outside
/// the backend sees the form: migration ships `wireBytes` and the receiver `restore`s them, so a
/// bf16 or int8 backend moves its own (smaller) bytes. To add a backend: a type conforming to
/// `ExpertKernels` with its `PreparedFFN`, and a case in `ExpertPrecision` that returns it.
package protocol ExpertKernels: Sendable {
    /// The precision this backend computes in.
    var precision: ExpertPrecision { get }
    /// A one-line description for banners and benchmark output (library, kernel, ISA).
    var implementation: String { get }
    /// `weights` (fp32, `form`, width `dModel`) in this backend's form. Called once per FFN.
    func prepare(_ weights: ExpertWeights, form: FFNForm, dModel: Int) -> any PreparedFFN
    /// Bytes of `wireBytes` of an FFN of `form` (what a migration receives).
    func wireByteCount(form: FFNForm, dModel: Int) -> Int
    /// The FFN whose `wireBytes` these are, or nil when they are not one of `form` (wrong
    /// count, non-finite values).
    func restore(wireBytes: UnsafeRawBufferPointer, form: FFNForm, dModel: Int) -> (any PreparedFFN)?
}

/// One FFN's weights as a backend holds them, ready to run.
package protocol PreparedFFN: AnyObject, Sendable {
    var form: FFNForm { get }
    /// Bytes of weights held (for memory reports).
    var bytesHeld: Int { get }
    /// The backend's own bytes of these weights (`ExpertKernels.restore` reads them back).
    var wireBytes: [UInt8] { get }
    /// `output[rows, dModel] = FFN(input[rows, dModel])`, row-major fp32 in and out. `between`
    /// runs after every matrix product (a pipelined layer's progress). `rows` may be 0.
    func forward(input: UnsafePointer<Float>, rows: Int, output: UnsafeMutablePointer<Float>, workspace: ExpertWorkspace,
                 between: ProgressHook?)
}

extension PreparedFFN {
    package func forward(input: UnsafePointer<Float>, rows: Int, output: UnsafeMutablePointer<Float>, workspace: ExpertWorkspace) {
        forward(input: input, rows: rows, output: output, workspace: workspace, between: nil)
    }

    /// `FFN(rows)` over a whole array (`[rows.count / dModel, dModel]`), into a new array.
    package func forward(_ rows: [Float], dModel: Int, workspace: ExpertWorkspace) -> [Float] {
        let count = rows.count / dModel
        var output = [Float](repeating: 0, count: rows.count)
        guard count > 0 else { return output }
        rows.withUnsafeBufferPointer { x in
            output.withUnsafeMutableBufferPointer { y in forward(input: x.baseAddress!, rows: count, output: y.baseAddress!, workspace: workspace) }
        }
        return output
    }
}

/// The number format experts compute in (`--expert-precision`, `"expert_precision"`).
package enum ExpertPrecision: String, CaseIterable, Sendable {
    /// fp32 weights and activations, OpenBLAS.
    case fp32
    /// bf16 weights and activations, fp32 accumulation (`BF16Kernels`).
    case bf16
    /// int8 weights per output channel and activations per token, int32 sums (`Int8Kernels`).
    case int8

    /// A precision named in a model file.
    static func read(_ json: JSONValue, path: String) throws(JSONFieldError) -> ExpertPrecision {
        let name = try JSONObjectReader.string(json, path: path)
        guard let precision = ExpertPrecision(rawValue: name) else {
            throw JSONFieldError(path: path, problem: "unknown precision '\(name)' (\(allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return precision
    }

    /// The backend for this precision at instruction-set level `isa` (a resolved `CPUISA`), int8
    /// quantising as `int8` says.
    package func kernels(isa: CPUISA, int8: Int8Settings = Int8Settings()) -> any ExpertKernels {
        switch self {
        case .fp32: return OpenBLASKernels()
        case .bf16: return BF16Kernels(isa: isa)
        case .int8: return Int8Kernels(isa: isa, settings: int8)
        }
    }
}

/// How int8 experts quantise (`--int8-activations`, `--int8-group-size`, `--int8-outliers`).
package struct Int8Settings: Sendable, Equatable {
    /// The activation codes' width.
    package var activations: Int8Activations = .auto
    /// Inputs per weight scale along K (ZeroQuant's group-wise weights), nil: one scale per
    /// output channel. Grouped products run on SwiftMoE's own kernel (oneDNN 2.6 has no
    /// per-group scales).
    package var groupSize: Int?
    /// Activations of at least this magnitude stay fp32 (LLM.int8()'s mixed-precision
    /// decomposition, per element), nil: every activation is quantised.
    package var outlierThreshold: Float?

    package init(activations: Int8Activations = .auto, groupSize: Int? = nil, outlierThreshold: Float? = nil) {
        (self.activations, self.groupSize, self.outlierThreshold) = (activations, groupSize, outlierThreshold)
    }
}

/// How int8 experts code activations (`--int8-activations`).
package enum Int8Activations: String, CaseIterable, Sendable {
    /// 8 bits where the CPU's oneDNN int8 kernel sums the whole u8 range exactly (VNNI), else 7.
    case auto
    /// 7 bits (63 levels a side): what every kernel sums exactly, so every CPU gives the same bits.
    case seven = "7"
    /// 8 bits (127 levels): finer codes; where oneDNN's kernel would saturate (AVX2) SwiftMoE's
    /// own kernel runs every product.
    case eight = "8"
}

/// fp32 experts on OpenBLAS (`cblas_sgemm`): the weights as loaded, two GEMMs per FFN (three
/// for gated forms) over all the rows an expert received.
package struct OpenBLASKernels: ExpertKernels {
    package init() {}

    package var precision: ExpertPrecision { .fp32 }
    package var implementation: String { "fp32 OpenBLAS cblas_sgemm (\(BLAS.coreName))" }

    package func prepare(_ weights: ExpertWeights, form: FFNForm, dModel: Int) -> any PreparedFFN {
        OpenBLASFFN(weights: weights, form: form, dModel: dModel)
    }

    package func wireByteCount(form: FFNForm, dModel: Int) -> Int { form.parameterCount(dModel: dModel) * MemoryLayout<Float>.stride }

    package func restore(wireBytes: UnsafeRawBufferPointer, form: FFNForm, dModel: Int) -> (any PreparedFFN)? {
        guard wireBytes.count == wireByteCount(form: form, dModel: dModel) else { return nil }
        let values = [Float](unsafeUninitializedCapacity: wireBytes.count / 4) { buffer, count in
            count = wireBytes.copyBytes(to: buffer) / 4
        }
        guard values.allSatisfy(\.isFinite), let weights = ExpertWeights(flattened: values, form: form, dModel: dModel) else { return nil }
        return OpenBLASFFN(weights: weights, form: form, dModel: dModel)
    }
}

/// An fp32 FFN: the weights themselves.
final class OpenBLASFFN: PreparedFFN {
    let weights: ExpertWeights
    let form: FFNForm
    let dModel: Int

    init(weights: ExpertWeights, form: FFNForm, dModel: Int) {
        self.weights = weights
        self.form = form
        self.dModel = dModel
    }

    var bytesHeld: Int { form.parameterCount(dModel: dModel) * MemoryLayout<Float>.stride }

    var wireBytes: [UInt8] { weights.flattened.withUnsafeBytes { Array($0) } }

    func forward(input: UnsafePointer<Float>, rows: Int, output: UnsafeMutablePointer<Float>, workspace: ExpertWorkspace,
                 between: ProgressHook?) {
        ExpertFFN.forward(FP32Products(weights: weights), biases: FFNBiases(b1: weights.b1, b2: weights.b2, b3: weights.b3), form: form,
                          dModel: dModel, input: input, rows: rows, output: output, workspace: workspace, between: between)
    }
}
