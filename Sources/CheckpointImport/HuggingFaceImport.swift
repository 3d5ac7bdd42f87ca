import FileFormats
import MoE

/// A model imported from a Hugging Face checkpoint: SwiftMoE's model and its tensors (float32,
/// SwiftMoE's names and `[in, out]` layout, in `ModelWeights.tensorShapes` order), and what the
/// import took and left.
package struct ImportedModel {
    package var model: ModelConfiguration
    package var tensors: [(name: String, shape: [Int], values: [Float])]
    /// Lines describing what was imported (architecture, layers, experts, top-k, shared experts, dtypes).
    package var summary: [String]
    /// Lines describing what was not imported.
    package var ignored: [String]
}

/// The MoE half of Hugging Face MoE architectures: each decoder layer's
/// `post_attention_layernorm` and its sparse MoE block (or dense MLP), as SwiftMoE layers
/// `h ← h + FFN_l(RMSNorm_l(h))`. The mapping per architecture is in docs/MODEL.md; the
/// routing rules it selects are in docs/ROUTING.md. Attention, embeddings, the input norms, the
/// final norm and the LM head are not imported.
package enum HuggingFaceImport {
    /// The `model_type`s this importer maps.
    package static let supportedTypes = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "gpt_oss",
                                         "switch_transformers"]

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

    package static func run(_ checkpoint: HuggingFaceCheckpoint) throws(ImportError) -> ImportedModel {
        let configPath = "\(checkpoint.directory)/config.json"
        guard let modelType = try checkpoint.optionalString("model_type") else {
            throw ImportError("\(configPath): missing field 'model_type' (supported: \(supportedTypes.joined(separator: ", ")))")
        }
        guard supportedTypes.contains(modelType) else {
            throw ImportError("\(configPath): model_type '\(modelType)' is not supported (supported: \(supportedTypes.joined(separator: ", ")))")
        }
        switch (checkpoint.quantisation, modelType) {
        case (.none, _), (.fp8, "deepseek_v3"), (.mxfp4, "gpt_oss"): break
        default:
            throw checkpoint.unsupported("quantization_config", "\(checkpoint.quantisation.name) checkpoints of \(modelType) are not supported (fp8 is read for deepseek_v3, mxfp4 for gpt_oss)")
        }
        if modelType == "switch_transformers" { return try switchTransformers(checkpoint) }
        let hidden = try checkpoint.integer("hidden_size")
        let layerCount = try checkpoint.integer("num_hidden_layers")
        guard (1...ModelConfiguration.dimensionLimit).contains(hidden) else { throw checkpoint.unsupported("hidden_size", "must be in 1...\(ModelConfiguration.dimensionLimit), got \(hidden)") }
        guard (1...ModelConfiguration.layerLimit).contains(layerCount) else { throw checkpoint.unsupported("num_hidden_layers", "must be in 1...\(ModelConfiguration.layerLimit), got \(layerCount)") }
        let epsilon = try checkpoint.optionalNumber("rms_norm_eps") ?? 1e-6
        var expertCount: Int?
        for key in ["num_local_experts", "num_experts", "n_routed_experts"] where expertCount == nil {
            expertCount = try checkpoint.optionalInteger(key)
        }
        guard let experts = expertCount else {
            throw ImportError("\(configPath): missing the expert count (num_local_experts, num_experts or n_routed_experts)")
        }
        let topK = try checkpoint.integer("num_experts_per_tok")
        guard (1...ModelConfiguration.expertLimit).contains(experts) else { throw checkpoint.unsupported("num_experts", "must be in 1...\(ModelConfiguration.expertLimit), got \(experts)") }
        guard (1...experts).contains(topK) else { throw checkpoint.unsupported("num_experts_per_tok", "must be in 1...\(experts), got \(topK)") }
        let activationName = try checkpoint.optionalString("hidden_act") ?? "silu"
        guard activationName == "silu" || modelType == "gpt_oss" else {
            throw checkpoint.unsupported("hidden_act", "'\(activationName)' cannot be honoured: SwiftMoE's gated experts use silu (SwiGLU)")
        }
        let intermediate = try checkpoint.optionalInteger("intermediate_size")
        let moeIntermediate = try checkpoint.optionalInteger("moe_intermediate_size")
        func width(_ key: String, _ value: Int?) throws(ImportError) -> Int {
            guard let value else { throw ImportError("\(configPath): missing field '\(key)'") }
            guard (1...ModelConfiguration.dimensionLimit).contains(value) else {
                throw checkpoint.unsupported(key, "must be in 1...\(ModelConfiguration.dimensionLimit), got \(value)")
            }
            return value
        }

        // Per architecture: the router rule, which layers are dense, the FFN widths, shared experts, names.
        var rule = GateRule(score: .softmax, selection: .topK, normalization: .chosen)
        var expertWidth: Int
        var denseWidth: Int?
        var isDense: (Int) -> Bool = { _ in false }
        var shared: (width: Int, gated: Bool)?
        var routerBias = false, selectionBias = false
        var activation = Activation.swiglu
        var glu = ClampedGLU()
        var naming = Naming(blocks: ["mlp"], router: "gate", expertProjections: ("gate_proj", "up_proj", "down_proj"))
        var notes: [String] = []
        let normTopK = try checkpoint.optionalBool("norm_topk_prob")
        switch modelType {
        case "mixtral":
            expertWidth = try width("intermediate_size", intermediate)
            naming = Naming(blocks: ["block_sparse_moe", "mlp"], router: "gate", expertProjections: ("w1", "w3", "w2"))
        case "qwen2_moe", "qwen3_moe":
            rule.normalization = normTopK == true ? .chosen : .none
            expertWidth = try width("moe_intermediate_size", moeIntermediate)
            let mlpOnly = Set(try checkpoint.optionalIntegers("mlp_only_layers") ?? [])
            let step = try checkpoint.optionalInteger("decoder_sparse_step") ?? 1
            guard step >= 1 else { throw checkpoint.unsupported("decoder_sparse_step", "must be ≥ 1, got \(step)") }
            isDense = { layer in mlpOnly.contains(layer) || (layer + 1) % step != 0 }
            if (0..<layerCount).contains(where: isDense) { denseWidth = try width("intermediate_size", intermediate) }
            if modelType == "qwen2_moe", let sharedWidth = try checkpoint.optionalInteger("shared_expert_intermediate_size"), sharedWidth > 0 {
                shared = (try width("shared_expert_intermediate_size", sharedWidth), true)
                naming.shared = "shared_expert"
            }
        case "olmoe":
            rule.normalization = normTopK == true ? .chosen : .none
            expertWidth = try width("intermediate_size", intermediate)
        case "deepseek_v2", "deepseek_v3":
            expertWidth = try width("moe_intermediate_size", moeIntermediate)
            let firstDense = try checkpoint.optionalInteger("first_k_dense_replace") ?? 0
            isDense = { $0 < firstDense }
            if firstDense > 0 { denseWidth = try width("intermediate_size", intermediate) }
            if try checkpoint.optionalBool("mlp_bias") == true { throw checkpoint.unsupported("mlp_bias", "biased DeepSeek MLPs are not supported") }
            let sharedCount = try checkpoint.optionalInteger("n_shared_experts") ?? 0
            if sharedCount > 0 {
                shared = (try width("moe_intermediate_size × n_shared_experts", expertWidth * sharedCount), false)
                naming.shared = "shared_experts"
            }
            let scale = try checkpoint.optionalNumber("routed_scaling_factor") ?? 1
            guard scale > 0, scale <= 1e6 else { throw checkpoint.unsupported("routed_scaling_factor", "must be in (0, 1e6], got \(scale)") }
            rule.scalingFactor = Float(scale)
            let groups = try checkpoint.optionalInteger("n_group") ?? 1
            let topGroups = try checkpoint.optionalInteger("topk_group") ?? groups
            guard groups >= 1, experts % groups == 0 else { throw checkpoint.unsupported("n_group", "must divide the \(experts) routed experts into equal groups, got \(groups)") }
            guard (1...groups).contains(topGroups), topK <= topGroups * (experts / groups) else {
                throw checkpoint.unsupported("topk_group", "must be in 1...\(groups) and leave at least top_k = \(topK) experts, got \(topGroups)")
            }
            if modelType == "deepseek_v2" {
                // transformers' DeepseekV2TopkRouter: softmax scores, greedy or group-limited
                // (group score = max), weights = scores × routed_scaling_factor, no renormalisation.
                rule.normalization = .none
                let method = try checkpoint.optionalString("topk_method") ?? "greedy"
                switch method {
                case "greedy": rule.selection = .topK
                case "group_limited_greedy": rule.selection = .groupLimited(groups: groups, topGroups: topGroups, score: .max)
                default: throw checkpoint.unsupported("topk_method", "'\(method)' is not supported (greedy, group_limited_greedy)")
                }
                if normTopK == true { notes.append("norm_topk_prob (transformers' DeepSeek-V2 router does not apply it)") }
            } else {
                // transformers' DeepseekV3TopkRouter: sigmoid scores; choice by score +
                // e_score_correction_bias, group score = sum of the top 2; weights = scores,
                // renormalised if norm_topk_prob, × routed_scaling_factor.
                rule.score = .sigmoid
                rule.selection = .groupLimited(groups: groups, topGroups: topGroups, score: .topTwoSum)
                rule.normalization = normTopK == true ? .chosen : .none
                selectionBias = true
            }
        case "gpt_oss":
            rule = GateRule(score: .softmaxOfChosen, selection: .topK, normalization: .none)
            routerBias = true
            activation = .clampedGLU
            expertWidth = try width("intermediate_size", intermediate)
            glu = ClampedGLU(alpha: Float(try checkpoint.optionalNumber("swiglu_alpha") ?? 1.702),
                             limit: Float(try checkpoint.optionalNumber("swiglu_limit") ?? 7))
            naming = Naming(blocks: ["mlp"], router: "router", expertProjections: ("gate_proj", "up_proj", "down_proj"), fusedIsGptOss: true)
        default:
            preconditionFailure("checked against supportedTypes")
        }

        var layers: [LayerConfiguration] = []
        for layer in 0..<layerCount {
            if isDense(layer) {
                layers.append(.denseLayer(dFF: denseWidth))
                continue
            }
            layers.append(LayerConfiguration(experts: experts, topK: topK, capacityFactor: 0, minCapacity: 0, dropPolicy: .none,
                                             gateRule: rule, routerBias: routerBias, selectionBias: selectionBias,
                                             sharedDFF: shared?.width ?? 0, sharedGate: shared?.gated ?? false))
        }
        var model = ModelConfiguration(name: "\(modelType)-import", dModel: hidden, dFF: expertWidth, activation: activation, layers: layers)
        model.norm = .rms
        model.normEpsilon = epsilon
        model.ffnBias = modelType == "gpt_oss"
        model.glu = glu
        model.origin = "Hugging Face \(modelType) checkpoint \(checkpoint.directory.split(separator: "/").last.map(String.init) ?? checkpoint.directory)"

        var reader = TensorReader(checkpoint: checkpoint, hidden: hidden, naming: naming)
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        for (index, layer) in model.layers.enumerated() {
            let source = "model.layers.\(index)"
            let target = "layers.\(index)"
            tensors.append(("\(target).norm.scale", [hidden], try reader.read("\(source).post_attention_layernorm.weight", shape: [hidden])))
            if layer.dense {
                let form = model.form(.dense, layer: index)
                tensors += try reader.denseMLP(prefix: "\(source).mlp", width: form.dFF, target: "\(target).dense")
                continue
            }
            let block = try reader.block(layer: index)
            let routerName = "\(block).\(naming.router)"
            tensors.append(("\(target).gate.weight", [hidden, experts],
                            transpose(try reader.read("\(routerName).weight", shape: [experts, hidden]), rows: experts, columns: hidden)))
            if routerBias { tensors.append(("\(target).gate.bias", [experts], try reader.read("\(routerName).bias", shape: [experts]))) }
            if selectionBias {
                tensors.append(("\(target).gate.selection_bias", [experts], try reader.read("\(routerName).e_score_correction_bias", shape: [experts])))
            }
            tensors += try reader.experts(block: block, count: experts, width: expertWidth, target: target)
            if let shared, let sharedName = naming.shared {
                tensors += try reader.denseMLP(prefix: "\(block).\(sharedName)", width: shared.width, target: "\(target).shared")
                if shared.gated {
                    tensors.append(("\(target).shared_gate.weight", [hidden], try reader.read("\(block).shared_expert_gate.weight", shape: [1, hidden])))
                }
            }
        }
        let ordered = try inFileOrder(tensors, model: model, checkpoint: checkpoint)

        let denseLayers = model.layers.indices.filter { model.layers[$0].dense }
        var summary = [
            "architecture \(modelType): \(layerCount) layers, hidden \(hidden), RMSNorm ε \(epsilon)",
            "dense layers: " + (denseLayers.isEmpty ? "none" : denseLayers.map(String.init).joined(separator: ", ") + " (d_ff \(denseWidth ?? 0))"),
            "MoE layers: \(layerCount - denseLayers.count), \(experts) experts of d_ff \(expertWidth), top-\(topK), "
                + "\(describe(rule))" + (routerBias ? ", router bias" : "") + (selectionBias ? ", selection-only correction bias" : ""),
            "shared experts: " + (shared.map { "d_ff \($0.width)" + ($0.gated ? ", sigmoid-gated" : ", weight 1") } ?? "none"),
            "expert activation: " + (activation == .clampedGLU ? "clamped GLU (α \(glu.alpha), limit \(glu.limit)), biased" : "SwiGLU, no biases"),
            "dtype: " + checkpoint.dtypesRead.sorted().joined(separator: ", ") + " → float32"
                + (checkpoint.quantisation == .none ? "" : " (dequantised on import: \(checkpoint.quantisation.name))"),
        ]
        if !notes.isEmpty { summary.append("config values not applied: " + notes.joined(separator: "; ")) }
        return ImportedModel(model: model, tensors: ordered, summary: summary, ignored: ignoredLines(checkpoint, used: reader.used))
    }

    /// The tensors in the model's own file order, proving every tensor the model needs is present
    /// and finite.
    static func inFileOrder(
        _ tensors: [(name: String, shape: [Int], values: [Float])], model: ModelConfiguration, checkpoint: HuggingFaceCheckpoint
    ) throws(ImportError) -> [(name: String, shape: [Int], values: [Float])] {
        let byName = Dictionary(tensors.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let ordered = ModelWeights.tensorShapes(model).map { entry -> (name: String, shape: [Int], values: [Float]) in
            guard let tensor = byName[entry.name], tensor.shape == entry.shape else {
                preconditionFailure("import produced no or a misshapen \(entry.name)")
            }
            return tensor
        }
        for tensor in ordered where !tensor.values.allSatisfy(\.isFinite) {
            throw ImportError("\(checkpoint.directory): the values imported as '\(tensor.name)' hold NaN or infinite values")
        }
        return ordered
    }

    static func ignoredLines(_ checkpoint: HuggingFaceCheckpoint, used: Set<String>) -> [String] {
        let left = checkpoint.tensorNames.filter { !used.contains($0) }
        return ["not imported (SwiftMoE runs the feed-forward half of each layer): \(left.count) tensors — " + describeIgnored(left)]
    }

    /// Switch Transformers (Fedus et al. 2021) as transformers implements it: the encoder's
    /// feed-forward sublayers (`encoder.block.{i}.layer.1`), T5's RMS layer norm, ReLU experts
    /// `wi`/`wo` without biases, a top-1 softmax router (`router.classifier`) whose weight is the
    /// chosen probability, every `encoder_sparse_step`-th block sparse (block i with
    /// i mod step = 1, or all for step 1), and a fixed `expert_capacity` per expert per sequence:
    /// tokens claim slots in sequence order and a dropped token's sparse output is 0. The
    /// decoder is not imported.
    static func switchTransformers(_ checkpoint: HuggingFaceCheckpoint) throws(ImportError) -> ImportedModel {
        let hidden = try checkpoint.integer("d_model")
        let width = try checkpoint.integer("d_ff")
        let layerCount = try checkpoint.integer("num_layers")
        let experts = try checkpoint.integer("num_experts")
        let capacity = try checkpoint.integer("expert_capacity")
        let step = try checkpoint.optionalInteger("encoder_sparse_step") ?? 1
        let epsilon = try checkpoint.optionalNumber("layer_norm_epsilon") ?? 1e-6
        for (key, value) in [("d_model", hidden), ("d_ff", width)] where !(1...ModelConfiguration.dimensionLimit).contains(value) {
            throw checkpoint.unsupported(key, "must be in 1...\(ModelConfiguration.dimensionLimit), got \(value)")
        }
        guard (1...ModelConfiguration.layerLimit).contains(layerCount) else { throw checkpoint.unsupported("num_layers", "must be in 1...\(ModelConfiguration.layerLimit), got \(layerCount)") }
        guard (1...ModelConfiguration.expertLimit).contains(experts) else { throw checkpoint.unsupported("num_experts", "must be in 1...\(ModelConfiguration.expertLimit), got \(experts)") }
        guard (0...(1 << 30)).contains(capacity) else { throw checkpoint.unsupported("expert_capacity", "must be in 0...\(1 << 30), got \(capacity)") }
        let activationName = try checkpoint.optionalString("dense_act_fn") ?? "relu"
        guard activationName == "relu" else {
            throw checkpoint.unsupported("dense_act_fn", "'\(activationName)' cannot be honoured: SwiftMoE's Switch experts use relu")
        }
        if try checkpoint.optionalBool("is_gated_act") == true { throw checkpoint.unsupported("is_gated_act", "gated Switch FFNs are not supported") }
        let routerBias = try checkpoint.optionalBool("router_bias") ?? false
        func isSparse(_ block: Int) -> Bool { step > 0 && (step == 1 || block % step == 1) }
        var layers: [LayerConfiguration] = []
        for block in 0..<layerCount {
            guard isSparse(block) else { layers.append(.denseLayer()); continue }
            var layer = LayerConfiguration(experts: experts, topK: 1, capacityFactor: 1, minCapacity: 0, dropPolicy: .inOrder,
                                           gateRule: GateRule(score: .softmax, selection: .topK, normalization: .none), routerBias: routerBias)
            layer.expertCapacity = capacity
            layers.append(layer)
        }
        var model = ModelConfiguration(name: "switch_transformers-import", dModel: hidden, dFF: width, activation: .relu, layers: layers)
        model.norm = .rms
        model.normEpsilon = epsilon
        model.ffnBias = false
        model.origin = "Hugging Face switch_transformers checkpoint \(checkpoint.directory.split(separator: "/").last.map(String.init) ?? checkpoint.directory) (encoder)"
        var used: Set<String> = []
        func read(_ name: String, _ shape: [Int]) throws(ImportError) -> [Float] {
            used.insert(name)
            return try checkpoint.read(name, shape: shape)
        }
        func ffn(_ prefix: String, target: String) throws(ImportError) -> [(name: String, shape: [Int], values: [Float])] {
            [("\(target).w1", [hidden, width], transpose(try read("\(prefix).wi.weight", [width, hidden]), rows: width, columns: hidden)),
             ("\(target).w2", [width, hidden], transpose(try read("\(prefix).wo.weight", [hidden, width]), rows: hidden, columns: width))]
        }
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        for (index, layer) in layers.enumerated() {
            let source = "encoder.block.\(index).layer.1"
            let target = "layers.\(index)"
            tensors.append(("\(target).norm.scale", [hidden], try read("\(source).layer_norm.weight", [hidden])))
            if layer.dense {
                tensors += try ffn("\(source).mlp", target: "\(target).dense")
                continue
            }
            let router = "\(source).mlp.router.classifier"
            tensors.append(("\(target).gate.weight", [hidden, experts], transpose(try read("\(router).weight", [experts, hidden]), rows: experts, columns: hidden)))
            if routerBias { tensors.append(("\(target).gate.bias", [experts], try read("\(router).bias", [experts]))) }
            for expert in 0..<experts {
                tensors += try ffn("\(source).mlp.experts.expert_\(expert)", target: "\(target).experts.\(expert)")
            }
        }
        let ordered = try inFileOrder(tensors, model: model, checkpoint: checkpoint)
        let dense = layers.indices.filter { layers[$0].dense }
        let summary = [
            "architecture switch_transformers (encoder feed-forward sublayers): \(layerCount) layers, hidden \(hidden), T5 RMS norm ε \(epsilon)",
            "dense layers: " + (dense.isEmpty ? "none" : dense.map(String.init).joined(separator: ", ") + " (d_ff \(width))"),
            "MoE layers: \(layerCount - dense.count), \(experts) experts of d_ff \(width), top-1, softmax scores, weight = the chosen probability"
                + (routerBias ? ", router bias" : ""),
            "capacity: \(capacity) slots per expert per sequence (expert_capacity), in token order; a dropped token's sparse output is 0 — "
                + "run with --sequence-length S to count capacity per sequence of S tokens as transformers does",
            "shared experts: none",
            "expert activation: ReLU, no biases",
            "dtype: " + checkpoint.dtypesRead.sorted().joined(separator: ", ") + " → float32",
        ]
        return ImportedModel(model: model, tensors: ordered, summary: summary, ignored: ignoredLines(checkpoint, used: used))
    }

    static func describe(_ rule: GateRule) -> String {
        var parts = ["\(rule.score.rawValue) scores"]
        if case let .groupLimited(groups, topGroups, score) = rule.selection {
            parts.append("group-limited (\(topGroups) of \(groups) groups by \(score.rawValue))")
        }
        switch rule.normalization {
        case .chosen: parts.append("top-k renormalised")
        case .none: parts.append("top-k not renormalised")
        case .survivors: parts.append("renormalised over kept routes")
        }
        if rule.scalingFactor != 1 { parts.append("scaled by \(rule.scalingFactor)") }
        return parts.joined(separator: ", ")
    }

    /// Groups tensor names by their kind for the "not imported" line.
    static func describeIgnored(_ names: [String]) -> String {
        var kinds: [String: Int] = [:]
        for name in names {
            let kind: String
            if name.contains("self_attn") || name.contains("attention") { kind = "attention" }
            else if name.contains("embed") || name == "shared.weight" { kind = "embeddings" }
            else if name.hasPrefix("decoder.") { kind = "decoder" }
            else if name.hasPrefix("encoder.block.") && name.contains(".layer.0.") { kind = "attention" }
            else if name.hasSuffix("final_layer_norm.weight") { kind = "final norm" }
            else if name.hasPrefix("lm_head") { kind = "LM head" }
            else if name.contains("input_layernorm") { kind = "input norms" }
            else if name == "model.norm.weight" { kind = "final norm" }
            else { kind = "other (\(name))" }
            kinds[kind, default: 0] += 1
        }
        return kinds.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    }
}

/// `[rows, columns]` row-major → `[columns, rows]`.
func transpose(_ values: [Float], rows: Int, columns: Int) -> [Float] {
    var result = [Float](repeating: 0, count: values.count)
    for row in 0..<rows {
        for column in 0..<columns { result[column * rows + row] = values[row * columns + column] }
    }
    return result
}

/// Reads one architecture's FFN tensors and converts them to SwiftMoE's `[in, out]` layout.
struct TensorReader {
    let checkpoint: HuggingFaceCheckpoint
    let hidden: Int
    let naming: HuggingFaceImport.Naming
    /// Checkpoint tensors read.
    var used: Set<String> = []

    init(checkpoint: HuggingFaceCheckpoint, hidden: Int, naming: HuggingFaceImport.Naming) {
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
