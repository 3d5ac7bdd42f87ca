import MoE

enum SwitchTransformersFamily: ArchitectureFamily {
    static let modelTypes = ["switch_transformers"]

    /// Switch Transformers (Fedus et al. 2021) as transformers implements it: the encoder's
    /// feed-forward sublayers (`encoder.block.{i}.layer.1`), T5's RMS layer norm, ReLU experts
    /// `wi`/`wo` without biases, a top-1 softmax router (`router.classifier`) whose weight is the
    /// chosen probability, every `encoder_sparse_step`-th block sparse (block i with
    /// i mod step = 1, or all for step 1), and a fixed `expert_capacity` per expert per sequence:
    /// tokens claim slots in sequence order and a dropped token's sparse output is 0. The
    /// decoder is not imported.
    static func importModel(_ checkpoint: HuggingFaceCheckpoint, modelType: String, ffnOnly: Bool) throws(ImportError) -> ImportedModel {
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
        let ordered = try HuggingFaceImport.inFileOrder(tensors, model: model, checkpoint: checkpoint)
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
        return ImportedModel(model: model, tensors: ordered, summary: summary, ignored: HuggingFaceImport.ignoredLines(checkpoint, used: used))
    }
}
