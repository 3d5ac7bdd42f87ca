import MessagePassing
import MoE

/// This rank's experts of one layer, and a residual layer's dense MLP: the compute phase of the
/// layer, over the rows the dispatcher delivered. Every FFN runs through the layer's
/// `ExpertKernels` backend (the precision seam), prepared once at construction or on arrival
/// by migration; the dispatcher and the layer only see `forward`, `dense` and `shared`.
///
/// Each slot's rows (from every source, source by source, slot order) are gathered into one
/// contiguous buffer for one GEMM per weight matrix — the order the reference feeds the expert,
/// which keeps the outputs bitwise equal — and scattered back in place. Buffers grow to the
/// largest step seen and are reused.
final class LocalExperts {
    let dModel: Int
    /// The backend every FFN of this layer runs on (the precision seam).
    let kernels: any ExpertKernels
    /// The logical expert in each of this rank's slots, in slot order.
    private(set) var slotExperts: [Int]
    /// `slotFFNs[i]` is expert `slotExperts[i]`, in the backend's form.
    private(set) var slotFFNs: [any PreparedFFN]
    /// The dense FFN (a dense layer's, or a residual layer's MLP), the shared expert and its
    /// gate vector (`[dModel]`, or empty), in the backend's form.
    private let denseFFN: (any PreparedFFN)?
    private let sharedFFN: (any PreparedFFN)?
    private let sharedGate: [Float]
    private let workspace = ExpertWorkspace()
    private var expertInput: [Float] = []   // [rows, dModel]
    private var expertOutput: [Float] = []  // [rows, dModel]
    /// fp32 copies of the experts this rank started with (`--compare-fp32`), by logical expert,
    /// and how far the backend's outputs were from theirs (slots without a copy are not counted).
    private let fp32Experts: [Int: any PreparedFFN]
    private var fp32Output: [Float] = []    // [rows, dModel]
    private(set) var errorAgainstFP32 = PrecisionError()

    /// Runs the FFNs of `weights` (prepared once per run, for every session).
    init(weights: PreparedLayerWeights, dModel: Int) {
        self.dModel = dModel
        kernels = weights.kernels
        slotExperts = weights.rest.slotExperts
        slotFFNs = weights.experts
        denseFFN = weights.dense
        sharedFFN = weights.shared
        sharedGate = weights.rest.sharedGate
        fp32Experts = weights.fp32Experts
    }

    /// Whether this layer compares its experts with fp32 copies.
    var comparesWithFP32: Bool { !fp32Experts.isEmpty }

    /// Holds `experts` (the FFNs of `slotExperts`, slot by slot) from now on.
    func adopt(slotExperts: [Int], experts: [any PreparedFFN]) {
        precondition(slotExperts.count == experts.count)
        self.slotExperts = slotExperts
        slotFFNs = experts
    }

    /// Runs the fp32 copy over the rows just computed (`expertInput`) and tallies the difference
    /// of `expertOutput` from its outputs.
    private func compare(_ exact: any PreparedFFN, rows: Int) {
        Self.grow(&fp32Output, to: rows * dModel)
        expertInput.withUnsafeBufferPointer { input in
            fp32Output.withUnsafeMutableBufferPointer { reference in
                exact.forward(input: input.baseAddress!, rows: rows, output: reference.baseAddress!, workspace: workspace)
                expertOutput.withUnsafeBufferPointer { output in
                    errorAgainstFP32.add(output.baseAddress!, reference: reference.baseAddress!, count: rows * dModel, rows: rows)
                }
            }
        }
    }

    /// Bytes of weights this rank holds for the layer in the backend's form.
    var bytesHeld: Int { (slotFFNs + [denseFFN, sharedFFN].compactMap { $0 }).reduce(0) { $0 + $1.bytesHeld } }

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
                    slotFFNs[local].forward(input: input.baseAddress!, rows: rows, output: output.baseAddress!, workspace: workspace,
                                            between: between)
                }
            }
            computeSeconds += MPIRuntime.wallTime() - start
            if let exact = fp32Experts[slotExperts[local]] { compare(exact, rows: rows) }
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
        guard let denseFFN, rows > 0 else { return }
        Self.grow(&output, to: rows * dModel)
        input.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { output in
                denseFFN.forward(input: input.baseAddress!, rows: rows, output: output.baseAddress!, workspace: workspace, between: between)
            }
        }
    }

    /// The shared expert over `rows` token rows of `input`, each output row scaled by its
    /// `SharedExpert.gateValues` (nil: 1), into `output` (grown to `[rows, dModel]`). Requires
    /// a shared expert.
    func shared(input: [Float], rows: Int, into output: inout [Float], between: ProgressHook? = nil) {
        guard let sharedFFN, rows > 0 else { return }
        Self.grow(&output, to: rows * dModel)
        input.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { output in
                SharedExpert.forward(sharedFFN, gate: sharedGate, dModel: dModel,
                                     input: input.baseAddress!, rows: rows, output: output.baseAddress!, workspace: workspace,
                                     between: between)
            }
        }
    }
}
