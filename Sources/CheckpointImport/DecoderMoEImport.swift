import FileFormats
import MoE

/// What every decoder MoE config states the same way: hidden size, layers, RMSNorm ε, routed
/// experts, top-k, and the FFN widths (read when a family asks for them).
struct DecoderShape {
    let checkpoint: HuggingFaceCheckpoint
    let modelType: String
    let hidden: Int
    let layerCount: Int
    let epsilon: Double
    let experts: Int
    let topK: Int
    /// `norm_topk_prob`, when the config has it.
    let normTopK: Bool?

    init(_ checkpoint: HuggingFaceCheckpoint, modelType: String) throws(ImportError) {
        self.checkpoint = checkpoint
        self.modelType = modelType
        hidden = try checkpoint.integer("hidden_size")
        layerCount = try checkpoint.integer("num_hidden_layers")
        guard (1...ModelConfiguration.dimensionLimit).contains(hidden) else { throw checkpoint.unsupported("hidden_size", "must be in 1...\(ModelConfiguration.dimensionLimit), got \(hidden)") }
        guard (1...ModelConfiguration.layerLimit).contains(layerCount) else { throw checkpoint.unsupported("num_hidden_layers", "must be in 1...\(ModelConfiguration.layerLimit), got \(layerCount)") }
        epsilon = try checkpoint.optionalNumber("rms_norm_eps") ?? 1e-6
        var expertCount: Int?
        for key in ["num_local_experts", "num_experts", "n_routed_experts"] where expertCount == nil {
            expertCount = try checkpoint.optionalInteger(key)
        }
        guard let experts = expertCount else {
            throw ImportError("\(checkpoint.directory)/config.json: missing the expert count (num_local_experts, num_experts or n_routed_experts)")
        }
        self.experts = experts
        topK = try checkpoint.integer("num_experts_per_tok")
        guard (1...ModelConfiguration.expertLimit).contains(experts) else { throw checkpoint.unsupported("num_experts", "must be in 1...\(ModelConfiguration.expertLimit), got \(experts)") }
        guard (1...experts).contains(topK) else { throw checkpoint.unsupported("num_experts_per_tok", "must be in 1...\(experts), got \(topK)") }
        normTopK = try checkpoint.optionalBool("norm_topk_prob")
    }

    /// The width in config field `key` (`intermediate_size`, `moe_intermediate_size`, ...).
    func width(_ key: String) throws(ImportError) -> Int { try width(key, try checkpoint.optionalInteger(key)) }

    /// `value`, named `key` in errors, as an FFN width.
    func width(_ key: String, _ value: Int?) throws(ImportError) -> Int {
        guard let value else { throw ImportError("\(checkpoint.directory)/config.json: missing field '\(key)'") }
        guard (1...ModelConfiguration.dimensionLimit).contains(value) else {
            throw checkpoint.unsupported(key, "must be in 1...\(ModelConfiguration.dimensionLimit), got \(value)")
        }
        return value
    }

    /// Refuses an activation other than silu (the gated experts are SwiGLU).
    func requireSiLU() throws(ImportError) {
        let activationName = try checkpoint.optionalString("hidden_act") ?? "silu"
        guard activationName == "silu" else {
            throw checkpoint.unsupported("hidden_act", "'\(activationName)' cannot be honoured: SwiftMoE's gated experts use silu (SwiGLU)")
        }
    }
}

/// A decoder MoE family's answer: the router rule, which layers are dense, the FFN widths, the
/// shared expert, the expert activation and the tensor names.
struct DecoderLayout {
    var rule = GateRule(score: .softmax, selection: .topK, normalization: .chosen)
    var expertWidth: Int
    var denseWidth: Int?
    var isDense: (Int) -> Bool = { _ in false }
    var shared: (width: Int, gated: Bool)?
    var routerBias = false
    var selectionBias = false
    var activation = Activation.swiglu
    var glu = ClampedGLU()
    var ffnBias = false
    var naming = Naming(blocks: ["mlp"], router: "gate", expertProjections: ("gate_proj", "up_proj", "down_proj"))
    /// Config values the import does not apply, for the summary.
    var notes: [String] = []

    /// How one architecture names and lays out its MoE tensors.
    struct Naming {
        /// Candidate module names of the sparse block, tried in order (`mlp`, Mixtral's `block_sparse_moe`).
        var blocks: [String]
        /// The router's module (`gate`, GPT-OSS's `router`).
        var router: String
        /// Per-expert projection names: gate (W1), up (W3), down (W2).
        var expertProjections: (gate: String, up: String, down: String)
        /// The shared expert's module, if the architecture has one.
        var shared: String?
        /// GPT-OSS's fused layout: `gate_up_proj [E, H, 2I]` (gate and up interleaved by
        /// column), biases, `down_proj [E, I, H]`; otherwise transformers 5's
        /// `gate_up_proj [E, 2I, H]` (gate rows first) and `down_proj [E, H, I]`.
        var fusedIsGptOss = false
    }
}

/// A decoder MoE family (Mixtral, Qwen, OLMoE, DeepSeek, GPT-OSS): it states its `layout`; the
/// shared path reads the layers' norms, routers, experts, shared experts and dense MLPs.
protocol DecoderMoEFamily: ArchitectureFamily {
    static func layout(_ shape: DecoderShape) throws(ImportError) -> DecoderLayout
}

extension DecoderMoEFamily {
    static func importModel(_ checkpoint: HuggingFaceCheckpoint, modelType: String, ffnOnly: Bool) throws(ImportError) -> ImportedModel {
        let shape = try DecoderShape(checkpoint, modelType: modelType)
        let layout = try layout(shape)
        var model = DecoderMoEImport.model(shape, layout)
        var reader = TensorReader(checkpoint: checkpoint, hidden: shape.hidden, naming: layout.naming)
        let tensors = try DecoderMoEImport.tensors(model, shape, layout, reader: &reader)
        var ordered = try HuggingFaceImport.inFileOrder(tensors, model: model, checkpoint: checkpoint)
        var summary = DecoderMoEImport.summary(model, shape, layout)
        if ffnOnly {
            summary.append("decoder: not imported (--ffn-only): the model is its MoE layers, for moe run and moe reference")
        } else if let reason = DecoderAttentionImport.unsupported[modelType] {
            summary.append("decoder: not imported — SwiftMoE does not run \(modelType)'s attention yet (\(reason)); the model is its MoE layers")
        } else {
            // The MoE layers stand on their own: a checkpoint whose decoder cannot be read (a
            // missing attention tensor or LM head, a config value not supported) still imports
            // them, and says why the decoder is not there (moe generate refuses the model).
            do {
                let decoder = try DecoderAttentionImport.configuration(shape)
                var decoderReader = reader
                let decoderTensors = try DecoderAttentionImport.tensors(decoder, shape, reader: &decoderReader)
                for tensor in decoderTensors where !tensor.values.allSatisfy(\.isFinite) {
                    throw ImportError("\(checkpoint.directory): the values imported as '\(tensor.name)' hold NaN or infinite values")
                }
                reader = decoderReader
                ordered += decoderTensors
                model.decoder = decoder
                summary.append(DecoderAttentionImport.summary(decoder))
            } catch {
                summary.append("decoder: not imported — \(error); the model is its MoE layers (moe generate refuses it)")
            }
        }
        return ImportedModel(model: model, tensors: ordered, summary: summary, ignored: HuggingFaceImport.ignoredLines(checkpoint, used: reader.used))
    }
}

/// The path every decoder MoE family shares.
enum DecoderMoEImport {
    static func model(_ shape: DecoderShape, _ layout: DecoderLayout) -> ModelConfiguration {
        let layers = (0..<shape.layerCount).map { layer in
            layout.isDense(layer) ? .denseLayer(dFF: layout.denseWidth)
                : LayerConfiguration(experts: shape.experts, topK: shape.topK, capacityFactor: 0, minCapacity: 0, dropPolicy: .none,
                                     gateRule: layout.rule, routerBias: layout.routerBias, selectionBias: layout.selectionBias,
                                     sharedDFF: layout.shared?.width ?? 0, sharedGate: layout.shared?.gated ?? false)
        }
        var model = ModelConfiguration(name: "\(shape.modelType)-import", dModel: shape.hidden, dFF: layout.expertWidth,
                                       activation: layout.activation, layers: layers)
        model.norm = .rms
        model.normEpsilon = shape.epsilon
        model.ffnBias = layout.ffnBias
        model.glu = layout.glu
        let directory = shape.checkpoint.directory
        model.origin = "Hugging Face \(shape.modelType) checkpoint \(directory.split(separator: "/").last.map(String.init) ?? directory)"
        return model
    }

    /// Every tensor the model needs, read and converted (in the order read).
    static func tensors(
        _ model: ModelConfiguration, _ shape: DecoderShape, _ layout: DecoderLayout, reader: inout TensorReader
    ) throws(ImportError) -> [(name: String, shape: [Int], values: [Float])] {
        let hidden = shape.hidden, experts = shape.experts
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        for (index, layer) in model.layers.enumerated() {
            let source = "model.layers.\(index)"
            let target = "layers.\(index)"
            tensors.append(("\(target).norm.scale", [hidden], try reader.read("\(source).post_attention_layernorm.weight", shape: [hidden])))
            if layer.dense {
                tensors += try reader.denseMLP(prefix: "\(source).mlp", width: model.form(.dense, layer: index).dFF, target: "\(target).dense")
                continue
            }
            let block = try reader.block(layer: index)
            let routerName = "\(block).\(layout.naming.router)"
            tensors.append(("\(target).gate.weight", [hidden, experts],
                            transpose(try reader.read("\(routerName).weight", shape: [experts, hidden]), rows: experts, columns: hidden)))
            if layout.routerBias { tensors.append(("\(target).gate.bias", [experts], try reader.read("\(routerName).bias", shape: [experts]))) }
            if layout.selectionBias {
                tensors.append(("\(target).gate.selection_bias", [experts], try reader.read("\(routerName).e_score_correction_bias", shape: [experts])))
            }
            tensors += try reader.experts(block: block, count: experts, width: layout.expertWidth, target: target)
            if let shared = layout.shared, let sharedName = layout.naming.shared {
                tensors += try reader.denseMLP(prefix: "\(block).\(sharedName)", width: shared.width, target: "\(target).shared")
                if shared.gated {
                    tensors.append(("\(target).shared_gate.weight", [hidden], try reader.read("\(block).shared_expert_gate.weight", shape: [1, hidden])))
                }
            }
        }
        return tensors
    }

    static func summary(_ model: ModelConfiguration, _ shape: DecoderShape, _ layout: DecoderLayout) -> [String] {
        let checkpoint = shape.checkpoint
        let denseLayers = model.layers.indices.filter { model.layers[$0].dense }
        var summary = [
            "architecture \(shape.modelType): \(shape.layerCount) layers, hidden \(shape.hidden), RMSNorm ε \(shape.epsilon)",
            "dense layers: " + (denseLayers.isEmpty ? "none" : denseLayers.map(String.init).joined(separator: ", ") + " (d_ff \(layout.denseWidth ?? 0))"),
            "MoE layers: \(shape.layerCount - denseLayers.count), \(shape.experts) experts of d_ff \(layout.expertWidth), top-\(shape.topK), "
                + "\(HuggingFaceImport.describe(layout.rule))" + (layout.routerBias ? ", router bias" : "")
                + (layout.selectionBias ? ", selection-only correction bias" : ""),
            "shared experts: " + (layout.shared.map { "d_ff \($0.width)" + ($0.gated ? ", sigmoid-gated" : ", weight 1") } ?? "none"),
            "expert activation: " + (layout.activation == .clampedGLU ? "clamped GLU (α \(layout.glu.alpha), limit \(layout.glu.limit)), biased" : "SwiGLU, no biases"),
            "dtype: " + checkpoint.dtypesRead.sorted().joined(separator: ", ") + " → float32"
                + (checkpoint.quantisation == .none ? "" : " (dequantised on import: \(checkpoint.quantisation.name))"),
        ]
        if !layout.notes.isEmpty { summary.append("config values not applied: " + layout.notes.joined(separator: "; ")) }
        return summary
    }
}

/// Reads one architecture's FFN tensors and converts them to SwiftMoE's `[in, out]` layout.
struct TensorReader {
    let checkpoint: HuggingFaceCheckpoint
    let hidden: Int
    let naming: DecoderLayout.Naming
    /// Checkpoint tensors read.
    var used: Set<String> = []

    init(checkpoint: HuggingFaceCheckpoint, hidden: Int, naming: DecoderLayout.Naming) {
        self.checkpoint = checkpoint
        self.hidden = hidden
        self.naming = naming
    }

    mutating func read(_ name: String, shape: [Int]) throws(ImportError) -> [Float] {
        used.insert(name)
        if checkpoint.has("\(name)_scale_inv") { used.insert("\(name)_scale_inv") }
        return try checkpoint.read(name, shape: shape)
    }

    /// The sparse block's module path of a layer: the first candidate with a router.
    func block(layer: Int) throws(ImportError) -> String {
        for candidate in naming.blocks where checkpoint.has("model.layers.\(layer).\(candidate).\(naming.router).weight") {
            return "model.layers.\(layer).\(candidate)"
        }
        throw ImportError("\(checkpoint.directory): tensor 'model.layers.\(layer).\(naming.blocks[0]).\(naming.router).weight' (the router of MoE layer \(layer)) is missing")
    }

    /// A bias-free gated MLP stored as three `nn.Linear`s (`gate_proj`, `up_proj`, `down_proj`).
    mutating func denseMLP(prefix: String, width: Int, target: String) throws(ImportError) -> [(name: String, shape: [Int], values: [Float])] {
        let gate = try read("\(prefix).gate_proj.weight", shape: [width, hidden])
        let up = try read("\(prefix).up_proj.weight", shape: [width, hidden])
        let down = try read("\(prefix).down_proj.weight", shape: [hidden, width])
        return [("\(target).w1", [hidden, width], transpose(gate, rows: width, columns: hidden)),
                ("\(target).w2", [width, hidden], transpose(down, rows: hidden, columns: width)),
                ("\(target).w3", [hidden, width], transpose(up, rows: width, columns: hidden))]
    }

    /// Every routed expert of a block, per-expert tensors or a fused layout, whichever the
    /// checkpoint has.
    mutating func experts(block: String, count: Int, width: Int, target: String) throws(ImportError) -> [(name: String, shape: [Int], values: [Float])] {
        let (gateName, upName, downName) = naming.expertProjections
        var result: [(name: String, shape: [Int], values: [Float])] = []
        let fusedName = "\(block).experts.gate_up_proj"
        if !naming.fusedIsGptOss, checkpoint.has("\(block).experts.0.\(gateName).weight") || !checkpoint.has(fusedName) {
            for expert in 0..<count {
                let prefix = "\(block).experts.\(expert)"
                let gate = try read("\(prefix).\(gateName).weight", shape: [width, hidden])
                let up = try read("\(prefix).\(upName).weight", shape: [width, hidden])
                let down = try read("\(prefix).\(downName).weight", shape: [hidden, width])
                result += [("\(target).experts.\(expert).w1", [hidden, width], transpose(gate, rows: width, columns: hidden)),
                           ("\(target).experts.\(expert).w2", [width, hidden], transpose(down, rows: hidden, columns: width)),
                           ("\(target).experts.\(expert).w3", [hidden, width], transpose(up, rows: width, columns: hidden))]
            }
            return result
        }
        if naming.fusedIsGptOss {
            // [E, H, 2I] with gate at even and up at odd columns; [E, 2I] biases; [E, I, H] down.
            // MXFP4 checkpoints store the two matrices as blocks and scales of their transposes.
            let downName = "\(block).experts.down_proj"
            let gateUp: [Float], down: [Float]
            if checkpoint.quantisation == .mxfp4, !checkpoint.has(fusedName) {
                for base in [fusedName, downName] { used.formUnion(["\(base)_blocks", "\(base)_scales"]) }
                gateUp = try checkpoint.readMXFP4(fusedName, experts: count, rows: 2 * width, columns: hidden)
                down = try checkpoint.readMXFP4(downName, experts: count, rows: hidden, columns: width)
            } else {
                gateUp = try read(fusedName, shape: [count, hidden, 2 * width])
                down = try read(downName, shape: [count, width, hidden])
            }
            let gateUpBias = try read("\(fusedName)_bias", shape: [count, 2 * width])
            let downBias = try read("\(downName)_bias", shape: [count, hidden])
            for expert in 0..<count {
                var w1 = [Float](repeating: 0, count: hidden * width), w3 = w1
                let base = expert * hidden * 2 * width
                for row in 0..<hidden {
                    for column in 0..<width {
                        w1[row * width + column] = gateUp[base + row * 2 * width + 2 * column]
                        w3[row * width + column] = gateUp[base + row * 2 * width + 2 * column + 1]
                    }
                }
                let biasBase = expert * 2 * width
                let b1 = (0..<width).map { gateUpBias[biasBase + 2 * $0] }
                let b3 = (0..<width).map { gateUpBias[biasBase + 2 * $0 + 1] }
                let prefix = "\(target).experts.\(expert)"
                result += [("\(prefix).w1", [hidden, width], w1),
                           ("\(prefix).w2", [width, hidden], Array(down[expert * width * hidden..<(expert + 1) * width * hidden])),
                           ("\(prefix).w3", [hidden, width], w3),
                           ("\(prefix).b1", [width], b1), ("\(prefix).b2", [hidden], Array(downBias[expert * hidden..<(expert + 1) * hidden])),
                           ("\(prefix).b3", [width], b3)]
            }
            return result
        }
        // transformers 5's fused layout: gate_up_proj [E, 2I, H] (gate rows, then up rows), down_proj [E, H, I].
        let gateUp = try read(fusedName, shape: [count, 2 * width, hidden])
        let down = try read("\(block).experts.down_proj", shape: [count, hidden, width])
        for expert in 0..<count {
            let base = expert * 2 * width * hidden
            let gate = Array(gateUp[base..<base + width * hidden])
            let up = Array(gateUp[base + width * hidden..<base + 2 * width * hidden])
            let downSlice = Array(down[expert * hidden * width..<(expert + 1) * hidden * width])
            result += [("\(target).experts.\(expert).w1", [hidden, width], transpose(gate, rows: width, columns: hidden)),
                       ("\(target).experts.\(expert).w2", [width, hidden], transpose(downSlice, rows: hidden, columns: width)),
                       ("\(target).experts.\(expert).w3", [hidden, width], transpose(up, rows: width, columns: hidden))]
        }
        return result
    }
}
