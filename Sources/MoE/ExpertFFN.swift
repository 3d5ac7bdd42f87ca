/// One expert's parameters. Row-major: `w1`, `w3` are `[dModel, dFF]`, `w2` is `[dFF, dModel]`.
/// relu/gelu experts have biases `b1 [dFF]` and `b2 [dModel]`; SwiGLU experts have `w3` and no
/// biases (as in the gated-FFN formulation of Shazeer 2020).
package struct ExpertWeights: Equatable, Sendable {
    package var w1: [Float]
    package var b1: [Float]
    package var w2: [Float]
    package var b2: [Float]
    package var w3: [Float]

    package init(w1: [Float], b1: [Float], w2: [Float], b2: [Float], w3: [Float]) {
        self.w1 = w1
        self.b1 = b1
        self.w2 = w2
        self.b2 = b2
        self.w3 = w3
    }
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

/// The expert feed-forward network over all the rows an expert received, as two (SwiGLU: three)
/// `cblas_sgemm` calls on one contiguous buffer: no per-token GEMMs, no padding to capacity.
package enum ExpertFFN {
    /// `output[rows, dModel] = FFN(input[rows, dModel])`.
    package static func forward(
        _ weights: ExpertWeights, activation: Activation, dModel: Int, dFF: Int,
        input: UnsafePointer<Float>, rows: Int, output: UnsafeMutablePointer<Float>, workspace: ExpertWorkspace
    ) {
        guard rows > 0 else { return }
        let gated = activation == .swiglu
        workspace.reserve(rows: rows, dFF: dFF, gated: gated)
        workspace.hidden.withUnsafeMutableBufferPointer { hiddenBuffer in
            let hidden = hiddenBuffer.baseAddress!
            weights.w1.withUnsafeBufferPointer { w1 in
                if gated {
                    BLAS.multiply(rows: rows, columns: dFF, inner: dModel, input, w1.baseAddress!, into: hidden)
                    workspace.up.withUnsafeMutableBufferPointer { upBuffer in
                        weights.w3.withUnsafeBufferPointer { w3 in
                            BLAS.multiply(rows: rows, columns: dFF, inner: dModel, input, w3.baseAddress!, into: upBuffer.baseAddress!)
                        }
                        Activation.applySwiGLU(gate: hidden, up: upBuffer.baseAddress!, count: rows * dFF)
                    }
                } else {
                    // Product first, then bias and activation in one sweep of `hidden`, row by
                    // row while the row is in cache.
                    BLAS.multiply(rows: rows, columns: dFF, inner: dModel, input, w1.baseAddress!, into: hidden)
                    weights.b1.withUnsafeBufferPointer { b1 in
                        Activation.applyBiasAndPointwise(activation, hidden, rows: rows, bias: b1.baseAddress!, width: dFF)
                    }
                }
            }
            if gated {
                output.update(repeating: 0, count: rows * dModel)
            } else {
                weights.b2.withUnsafeBufferPointer { b2 in
                    for row in 0..<rows { (output + row * dModel).update(from: b2.baseAddress!, count: dModel) }
                }
            }
            weights.w2.withUnsafeBufferPointer { w2 in
                BLAS.multiply(rows: rows, columns: dModel, inner: dFF, hidden, w2.baseAddress!, into: output, accumulate: true)
            }
        }
    }
}
