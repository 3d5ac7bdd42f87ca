import Foundation

/// One FFN's parameters (an expert, a shared expert or a dense MLP). Row-major: `w1`, `w3` are
/// `[dModel, dFF]`, `w2` is `[dFF, dModel]`. Biases `b1 [dFF]`, `b3 [dFF]` (gated forms) and
/// `b2 [dModel]` are present exactly when the form has biases (`FFNForm.hasBias`), else empty;
/// `w3` is present exactly for the gated (GLU) activations.
package struct ExpertWeights: Equatable, Sendable {
    package var w1: [Float]
    package var b1: [Float]
    package var w2: [Float]
    package var b2: [Float]
    package var w3: [Float]
    package var b3: [Float]

    package init(w1: [Float], b1: [Float], w2: [Float], b2: [Float], w3: [Float], b3: [Float] = []) {
        self.w1 = w1
        self.b1 = b1
        self.w2 = w2
        self.b2 = b2
        self.w3 = w3
        self.b3 = b3
    }

    /// Every parameter in one buffer, in the order w1, b1, w2, b2, w3, b3 (what an expert
    /// migration sends; `init(flattened:form:dModel:)` reads it back).
    package var flattened: [Float] { w1 + b1 + w2 + b2 + w3 + b3 }

    /// The weights of an FFN of `form` from `flattened` (exactly `form.parameterCount(dModel:)`
    /// floats, in `flattened`'s order), or nil when the count is wrong.
    package init?(flattened values: [Float], form: FFNForm, dModel: Int) {
        guard values.count == form.parameterCount(dModel: dModel) else { return nil }
        let hidden = dModel * form.dFF
        let bias = form.hasBias
        let gated = form.activation.isGated
        var cursor = 0
        func take(_ count: Int) -> [Float] {
            defer { cursor += count }
            return Array(values[cursor..<cursor + count])
        }
        w1 = take(hidden)
        b1 = take(bias ? form.dFF : 0)
        w2 = take(hidden)
        b2 = take(bias ? dModel : 0)
        w3 = take(gated ? hidden : 0)
        b3 = take(bias && gated ? form.dFF : 0)
    }
}

/// The shape of one FFN: its activation, hidden width and whether it has biases. Experts, shared
/// experts and dense MLPs of one model share the activation and the bias choice but may differ
/// in width (`LayerConfiguration.expertDFF`, `sharedDFF`, `denseDFF`).
package struct FFNForm: Equatable, Sendable {
    package var activation: Activation
    /// Hidden width d_ff (≥ 1).
    package var dFF: Int
    /// Whether the projections carry biases (`b1`, `b2`, and `b3` for gated forms).
    package var hasBias: Bool
    /// The clamped GLU's α and limit (GPT-OSS); used by `.clampedGLU` only.
    package var glu: ClampedGLU

    package init(activation: Activation, dFF: Int, hasBias: Bool, glu: ClampedGLU = ClampedGLU()) {
        self.activation = activation
        self.dFF = dFF
        self.hasBias = hasBias
        self.glu = glu
    }

    /// The tensor suffixes of this form and their shapes, for a model of width `dModel`, in
    /// file order: `w1`, `w2`, then `w3` (gated), then the biases.
    package func tensorShapes(dModel: Int) -> [(suffix: String, shape: [Int])] {
        var shapes: [(String, [Int])] = [("w1", [dModel, dFF]), ("w2", [dFF, dModel])]
        if activation.isGated { shapes.append(("w3", [dModel, dFF])) }
        if hasBias {
            shapes += [("b1", [dFF]), ("b2", [dModel])]
            if activation.isGated { shapes.append(("b3", [dFF])) }
        }
        return shapes
    }

    /// Parameters of one FFN of this form.
    package func parameterCount(dModel: Int) -> Int { tensorShapes(dModel: dModel).reduce(0) { $0 + $1.shape.reduce(1, *) } }
}

/// Scratch space for expert forward passes; grows to the largest row count seen, never shrinks,
/// so steady-state steps do not allocate. The staging buffers hold a low-precision backend's
/// converted rows (bf16-rounded floats, int8 codes and their per-row scales) and widened weight
/// panels; their addresses stay valid until the next `reserve`.
package final class ExpertWorkspace {
    var hidden: [Float] = []
    var up: [Float] = []
    let stagedInput = ScratchBuffer<Float>()
    let stagedHidden = ScratchBuffer<Float>()
    let inputCodes = ScratchBuffer<Int8>()
    let hiddenCodes = ScratchBuffer<Int8>()
    let inputScales = ScratchBuffer<Float>()
    let hiddenScales = ScratchBuffer<Float>()
    let panel = ScratchBuffer<Float>()
    /// The activations an int8 backend kept in fp32 (`Int8Settings.outlierThreshold`), per input.
    var inputOutliers: [Int8Outlier] = []
    var hiddenOutliers: [Int8Outlier] = []

    package init() {}

    func reserve(rows: Int, dFF: Int, gated: Bool) {
        let needed = rows * dFF
        if hidden.count < needed { hidden = [Float](repeating: 0, count: needed) }
        if gated, up.count < needed { up = [Float](repeating: 0, count: needed) }
    }
}

/// A heap buffer with a stable address that grows, never shrinks (a workspace's staging area).
final class ScratchBuffer<Element> {
    private(set) var pointer = UnsafeMutablePointer<Element>.allocate(capacity: 1)
    private var capacity = 1

    /// At least `count` elements (contents not kept when it grows).
    func reserve(_ count: Int) -> UnsafeMutablePointer<Element> {
        if count > capacity {
            pointer.deallocate()
            pointer = .allocate(capacity: count)
            capacity = count
        }
        return pointer
    }

    deinit { pointer.deallocate() }
}

/// Which weight matrix of an FFN: `w1` `[dModel, dFF]` (the gate projection of gated forms),
/// `w3` `[dModel, dFF]` (gated forms' up projection), `w2` `[dFF, dModel]`.
enum FFNWeight { case w1, w3, w2 }

/// The rows one product reads, as a backend staged them.
enum StagedRows {
    case float(UnsafePointer<Float>)
    /// `hidden`: the FFN's hidden activations (else its input), which says whose outliers apply.
    case int8(codes: UnsafePointer<Int8>, scales: UnsafePointer<Float>, hidden: Bool)
}

/// How one backend multiplies rows by an FFN's weights. `stage` converts the rows the products
/// read, once per input (the FFN's input, then its hidden activations: `hidden` says which);
/// `multiply` is `y[rows, columns] (+)= x[rows, inner] · W`.
protocol FFNProducts {
    func stage(_ x: UnsafePointer<Float>, rows: Int, width: Int, hidden: Bool, workspace: ExpertWorkspace) -> StagedRows
    func multiply(_ weight: FFNWeight, _ x: StagedRows, rows: Int, columns: Int, inner: Int, into y: UnsafeMutablePointer<Float>,
                  accumulate: Bool, workspace: ExpertWorkspace)
}

/// An FFN's biases (`b1 [dFF]`, `b3 [dFF]`, `b2 [dModel]`; empty without biases), fp32 in every backend.
struct FFNBiases {
    var b1: [Float]
    var b2: [Float]
    var b3: [Float]
}

/// The feed-forward network over all the rows an expert received, as two (gated forms: three)
/// matrix products on one contiguous buffer: no per-token GEMMs, no padding to capacity. The
/// products are the backend's (`FFNProducts`: fp32 `cblas_sgemm`, bf16 panels, int8); bias,
/// activation and the order of operations are the same for all.
enum ExpertFFN {
    /// `output[rows, dModel] = FFN(input[rows, dModel])` for an FFN of shape `form`.
    static func forward<Products: FFNProducts>(
        _ products: Products, biases: FFNBiases, form: FFNForm, dModel: Int,
        input: UnsafePointer<Float>, rows: Int, output: UnsafeMutablePointer<Float>, workspace: ExpertWorkspace,
        between: ProgressHook? = nil
    ) {
        guard rows > 0 else { return }
        let dFF = form.dFF
        let gated = form.activation.isGated
        workspace.reserve(rows: rows, dFF: dFF, gated: gated)
        let staged = products.stage(input, rows: rows, width: dModel, hidden: false, workspace: workspace)
        workspace.hidden.withUnsafeMutableBufferPointer { hiddenBuffer in
            let hidden = hiddenBuffer.baseAddress!
            products.multiply(.w1, staged, rows: rows, columns: dFF, inner: dModel, into: hidden, accumulate: false, workspace: workspace)
            between?()
            if gated {
                workspace.up.withUnsafeMutableBufferPointer { upBuffer in
                    let up = upBuffer.baseAddress!
                    products.multiply(.w3, staged, rows: rows, columns: dFF, inner: dModel, into: up, accumulate: false, workspace: workspace)
                    between?()
                    if form.hasBias {
                        biases.b1.withUnsafeBufferPointer { b1 in Activation.addBias(hidden, rows: rows, bias: b1.baseAddress!, width: dFF) }
                        biases.b3.withUnsafeBufferPointer { b3 in Activation.addBias(up, rows: rows, bias: b3.baseAddress!, width: dFF) }
                    }
                    if form.activation == .clampedGLU {
                        Activation.applyClampedGLU(gate: hidden, up: up, count: rows * dFF, glu: form.glu)
                    } else {
                        Activation.applySwiGLU(gate: hidden, up: up, count: rows * dFF)
                    }
                }
            } else if form.hasBias {
                // Bias and activation in one sweep of `hidden`, row by row while the row is in cache.
                biases.b1.withUnsafeBufferPointer { b1 in
                    Activation.applyBiasAndPointwise(form.activation, hidden, rows: rows, bias: b1.baseAddress!, width: dFF)
                }
            } else {
                Activation.applyPointwise(form.activation, hidden, count: rows * dFF)
            }
            if form.hasBias {
                biases.b2.withUnsafeBufferPointer { b2 in
                    for row in 0..<rows { (output + row * dModel).update(from: b2.baseAddress!, count: dModel) }
                }
            } else {
                output.update(repeating: 0, count: rows * dModel)
            }
            let stagedHidden = products.stage(UnsafePointer(hidden), rows: rows, width: dFF, hidden: true, workspace: workspace)
            products.multiply(.w2, stagedHidden, rows: rows, columns: dModel, inner: dFF, into: output, accumulate: true, workspace: workspace)
        }
    }
}

/// fp32 products: `cblas_sgemm` on the weights as loaded.
struct FP32Products: FFNProducts {
    let weights: ExpertWeights

    func stage(_ x: UnsafePointer<Float>, rows: Int, width: Int, hidden: Bool, workspace: ExpertWorkspace) -> StagedRows { .float(x) }

    func multiply(_ weight: FFNWeight, _ x: StagedRows, rows: Int, columns: Int, inner: Int, into y: UnsafeMutablePointer<Float>,
                  accumulate: Bool, workspace: ExpertWorkspace) {
        guard case let .float(a) = x else { preconditionFailure("fp32 products read float rows") }
        let matrix: [Float]
        switch weight {
        case .w1: matrix = weights.w1
        case .w3: matrix = weights.w3
        case .w2: matrix = weights.w2
        }
        matrix.withUnsafeBufferPointer { b in
            BLAS.multiply(rows: rows, columns: columns, inner: inner, a, b.baseAddress!, into: y, accumulate: accumulate)
        }
    }
}

/// Work to run between an FFN's matrix products: a pipelined layer moves its in-flight
/// exchanges on there, since MPI (`MPI_THREAD_FUNNELED`) moves messages only inside MPI calls
/// made by the main thread — which is also the thread that runs the FFNs.
package struct ProgressHook: @unchecked Sendable {
    private let body: @MainActor () -> Void

    package init(_ body: @escaping @MainActor () -> Void) { self.body = body }

    /// Runs the work; must be called on the main thread (checked at run time).
    package func callAsFunction() { MainActor.assumeIsolated { body() } }
}

/// A shared expert (Qwen2-MoE, DeepSeek): an FFN every token goes through on its own rank, no
/// exchange, added to the routed sum. Qwen2-MoE scales it per token by `σ(x · w_g)` (its
/// `shared_expert_gate`); DeepSeek's weight is 1.
package enum SharedExpert {
    /// `output[t] = σ(x_t · gate) · FFN(x_t)` (without `gate`, when it is empty: `FFN(x_t)`), for
    /// `rows` rows of `input` (`[rows, dModel]`). The gate's dot product is accumulated in Double.
    package static func forward(
        _ ffn: any PreparedFFN, gate: [Float], dModel: Int,
        input: UnsafePointer<Float>, rows: Int, output: UnsafeMutablePointer<Float>, workspace: ExpertWorkspace,
        between: ProgressHook? = nil
    ) {
        ffn.forward(input: input, rows: rows, output: output, workspace: workspace, between: between)
        guard !gate.isEmpty else { return }
        precondition(gate.count == dModel)
        for row in 0..<rows {
            var dot = 0.0
            for index in 0..<dModel { dot += Double(input[row * dModel + index]) * Double(gate[index]) }
            let scale = Float(1 / (1 + exp(-dot)))
            for index in 0..<dModel { output[row * dModel + index] *= scale }
        }
    }
}
