import MessagePassing
import MoE

/// This rank's experts of one layer, and a residual layer's dense MLP: the compute phase of the
/// layer, over the rows the dispatcher delivered. It is where a new precision backend or a
/// grouped GEMM goes: the dispatcher and the layer only see `forward` and `dense`.
///
/// Each slot's rows (from every source, source by source, slot order) are gathered into one
/// contiguous buffer for one GEMM per weight matrix — the order the reference feeds the expert,
/// which keeps the outputs bitwise equal — and scattered back in place. Buffers grow to the
/// largest step seen and are reused.
final class LocalExperts {
    private(set) var weights: LayerWeights
    let dModel: Int
    /// The forms of the routed experts, and of the dense FFN (a dense layer's, or a residual
    /// layer's MLP) and the shared expert.
    let expertForm: FFNForm
    let denseForm: FFNForm
    let sharedForm: FFNForm
    private let workspace = ExpertWorkspace()
    private var expertInput: [Float] = []   // [rows, dModel]
    private var expertOutput: [Float] = []  // [rows, dModel]

    init(weights: LayerWeights, model: ModelConfiguration, layerIndex: Int) {
        self.weights = weights
        dModel = model.dModel
        expertForm = model.form(.expert, layer: layerIndex)
        denseForm = model.form(.dense, layer: layerIndex)
        sharedForm = model.form(.shared, layer: layerIndex)
    }

    /// The logical expert in each of this rank's slots, in slot order.
    var slotExperts: [Int] { weights.slotExperts }

    /// Holds `experts` (the weights of `slotExperts`, slot by slot) from now on.
    func adopt(slotExperts: [Int], experts: [ExpertWeights]) {
        precondition(slotExperts.count == experts.count)
        weights.slotExperts = slotExperts
        weights.experts = experts
    }

    private static func grow(_ buffer: inout [Float], to count: Int) {
        if buffer.count < count { buffer = [Float](repeating: 0, count: count) }
    }

    /// Runs every local slot's expert over its rows of `received` (the dispatch's receive layout,
    /// `arrival`), replacing each row by the expert's output for it. Returns the seconds spent
    /// inside the FFNs themselves (GEMMs, bias, activation), without gathering and scattering.
    /// `between` runs after every matrix product and every slot (a pipelined layer's progress).
    func forward(received: UnsafeMutableBufferPointer<Float>, arrival: TokenDispatcher.Arrival, between: ProgressHook? = nil) -> Double {
        var computeSeconds = 0.0
        let displacements = arrival.layout.receiveDisplacements
        for (local, rows) in arrival.rowsPerExpert.enumerated() where rows > 0 {
            Self.grow(&expertInput, to: rows * dModel)
            Self.grow(&expertOutput, to: rows * dModel)
            _ = expertInput.withUnsafeMutableBufferPointer { input in
                TokenDispatcher.gather(received: received.baseAddress!, width: dModel, receiveDisplacements: displacements,
                                       rowsFrom: arrival.rowsFrom, localExpert: local, into: input.baseAddress!)
            }
            let start = MPIRuntime.wallTime()
            expertInput.withUnsafeBufferPointer { input in
                expertOutput.withUnsafeMutableBufferPointer { output in
                    ExpertFFN.forward(weights.experts[local], form: expertForm, dModel: dModel,
                                      input: input.baseAddress!, rows: rows, output: output.baseAddress!, workspace: workspace,
                                      between: between)
                }
            }
            computeSeconds += MPIRuntime.wallTime() - start
            expertOutput.withUnsafeBufferPointer { output in
                TokenDispatcher.scatter(expertRows: output.baseAddress!, width: dModel, receiveDisplacements: displacements,
                                        rowsFrom: arrival.rowsFrom, localExpert: local, into: received.baseAddress!)
            }
            between?()
        }
        return computeSeconds
    }

    /// The dense FFN — a residual layer's MLP or a dense layer's FFN — over `rows` token rows
    /// of `input` (`[rows, dModel]`), into `output` (grown to `[rows, dModel]`). Requires one.
    func dense(input: [Float], rows: Int, into output: inout [Float], between: ProgressHook? = nil) {
        guard let dense = weights.residual?.dense ?? weights.dense, rows > 0 else { return }
        Self.grow(&output, to: rows * dModel)
        input.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { output in
                ExpertFFN.forward(dense, form: denseForm, dModel: dModel,
                                  input: input.baseAddress!, rows: rows, output: output.baseAddress!, workspace: workspace, between: between)
            }
        }
    }

    /// The shared expert over `rows` token rows of `input`, each output row scaled by its
    /// `SharedExpert.gateValues` (nil: 1), into `output` (grown to `[rows, dModel]`). Requires
    /// a shared expert.
    func shared(input: [Float], rows: Int, into output: inout [Float], between: ProgressHook? = nil) {
        guard let shared = weights.shared, rows > 0 else { return }
        Self.grow(&output, to: rows * dModel)
        input.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { output in
                SharedExpert.forward(shared, form: sharedForm, gate: weights.sharedGate, dModel: dModel,
                                     input: input.baseAddress!, rows: rows, output: output.baseAddress!, workspace: workspace,
                                     between: between)
            }
        }
    }
}
