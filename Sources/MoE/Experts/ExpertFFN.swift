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
/// so steady-state steps do not allocate.
package final class ExpertWorkspace {
    var hidden: [Float] = []
    var up: [Float] = []

    package init() {}

    func reserve(rows: Int, dFF: Int, gated: Bool) {
        let needed = rows * dFF
        if hidden.count < needed { hidden = [Float](repeating: 0, count: needed) }
        if gated, up.count < needed { up = [Float](repeating: 0, count: needed) }
    }
}

/// The feed-forward network over all the rows an expert received, as two (gated forms: three)
/// `cblas_sgemm` calls on one contiguous buffer: no per-token GEMMs, no padding to capacity.
/// The fp32 backend's kernel (`OpenBLASKernels`); everything else runs FFNs through the seam.
enum ExpertFFN {
    /// `output[rows, dModel] = FFN(input[rows, dModel])` for an FFN of shape `form`.
    static func forward(
        _ weights: ExpertWeights, form: FFNForm, dModel: Int,
        input: UnsafePointer<Float>, rows: Int, output: UnsafeMutablePointer<Float>, workspace: ExpertWorkspace,
        between: ProgressHook? = nil
    ) {
        guard rows > 0 else { return }
        let dFF = form.dFF
        let gated = form.activation.isGated
        workspace.reserve(rows: rows, dFF: dFF, gated: gated)
        workspace.hidden.withUnsafeMutableBufferPointer { hiddenBuffer in
            let hidden = hiddenBuffer.baseAddress!
            weights.w1.withUnsafeBufferPointer { w1 in
                BLAS.multiply(rows: rows, columns: dFF, inner: dModel, input, w1.baseAddress!, into: hidden)
                between?()
                if gated {
                    workspace.up.withUnsafeMutableBufferPointer { upBuffer in
                        let up = upBuffer.baseAddress!
                        weights.w3.withUnsafeBufferPointer { w3 in
                            BLAS.multiply(rows: rows, columns: dFF, inner: dModel, input, w3.baseAddress!, into: up)
                        }
                        between?()
                        if form.hasBias {
                            weights.b1.withUnsafeBufferPointer { b1 in Activation.addBias(hidden, rows: rows, bias: b1.baseAddress!, width: dFF) }
                            weights.b3.withUnsafeBufferPointer { b3 in Activation.addBias(up, rows: rows, bias: b3.baseAddress!, width: dFF) }
                        }
                        if form.activation == .clampedGLU {
                            Activation.applyClampedGLU(gate: hidden, up: up, count: rows * dFF, glu: form.glu)
                        } else {
                            Activation.applySwiGLU(gate: hidden, up: up, count: rows * dFF)
                        }
                    }
                } else if form.hasBias {
                    // Bias and activation in one sweep of `hidden`, row by row while the row is in cache.
                    weights.b1.withUnsafeBufferPointer { b1 in
                        Activation.applyBiasAndPointwise(form.activation, hidden, rows: rows, bias: b1.baseAddress!, width: dFF)
                    }
                } else {
                    Activation.applyPointwise(form.activation, hidden, count: rows * dFF)
                }
            }
            if form.hasBias {
                weights.b2.withUnsafeBufferPointer { b2 in
                    for row in 0..<rows { (output + row * dModel).update(from: b2.baseAddress!, count: dModel) }
                }
            } else {
                output.update(repeating: 0, count: rows * dModel)
            }
            weights.w2.withUnsafeBufferPointer { w2 in
                BLAS.multiply(rows: rows, columns: dModel, inner: dFF, hidden, w2.baseAddress!, into: output, accumulate: true)
            }
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
