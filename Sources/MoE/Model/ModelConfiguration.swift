import FileFormats

/// How a layer chooses which routes keep a capacity slot when an expert is full.
package enum DropPolicy: String, CaseIterable, Sendable, Codable {
    /// All first choices claim slots in token order, then all second choices, and so on.
    case inOrder = "in-order"
    /// V-MoE's Batch Prioritized Routing (Riquelme et al. 2021): tokens ordered by priority
    /// (descending, ties by token index), then slots claimed in that order, choice by choice.
    case batchPrioritized = "batch-prioritized"
    /// Dropless: no capacity limit.
    case none
}

/// The score that orders tokens under batch-prioritized routing.
package enum RoutingPriority: String, CaseIterable, Sendable, Codable {
    /// The largest of the token's top-k probabilities (V-MoE's default).
    case max
    /// The sum of the token's top-k probabilities.
    case sum
}

/// What a layer is.
package enum LayerKind: String, Equatable, Sendable {
    /// An MoE layer: gate, experts on their ranks, dispatch and combine.
    case moe
    /// PR-MoE (DeepSpeed-MoE, Rajbhandari et al. 2022): every token also goes through a dense MLP
    /// held by every rank, mixed with its one expert (top-1) by a per-token coefficient
    /// (`ResidualMixture`).
    case residual
    /// One FFN on every rank: no gate, no experts, no exchange.
    case dense
}

/// One layer's routing and size settings.
package struct LayerConfiguration: Equatable, Sendable {
    /// What the layer is; `residual` and `dense` read it.
    package var kind: LayerKind
    /// Number of experts E (≥ 1).
    package var experts: Int
    /// Routes per token k, 1 ≤ k ≤ E.
    package var topK: Int
    /// Capacity factor C ≥ 0; 0 means no capacity limit.
    package var capacityFactor: Double
    /// Lower bound on any expert's capacity per source rank.
    package var minCapacity: Int
    package var dropPolicy: DropPolicy
    package var priority: RoutingPriority
    /// A PR-MoE residual layer (`LayerKind.residual`).
    package var residual: Bool { kind == .residual }
    /// The gate's score function, selection, normalisation and scale (`docs/ROUTING.md`).
    package var gateRule: GateRule
    /// The gate has a learned bias `[E]` added to its logits (GPT-OSS).
    package var routerBias: Bool
    /// The gate has a selection-only bias `[E]` (DeepSeek-V3's `e_score_correction_bias`).
    package var selectionBias: Bool
    /// A dense layer (`LayerKind.dense`): every token goes through one FFN of `denseDFF` held by
    /// every rank; no gate, no experts, no exchange (`experts` and `topK` are 1 and unused).
    package var dense: Bool { kind == .dense }
    /// Hidden width of this layer's experts; nil = the model's `dFF`.
    package var expertDFF: Int?
    /// Hidden width of a dense layer's FFN; nil = the model's `dFF`.
    package var denseDFF: Int?
    /// Hidden width of the shared expert (every token, on its own rank, added to the routed sum;
    /// Qwen2-MoE, DeepSeek); 0 = none.
    package var sharedDFF: Int
    /// The shared expert's output is scaled by `σ(x · w_g)` per token (Qwen2-MoE's
    /// `shared_expert_gate`, `w_g` `[dModel]`); otherwise by 1.
    package var sharedGate: Bool
    /// Fixed slots per expert per capacity group (Switch Transformers' `expert_capacity`),
    /// replacing the capacity-factor formula; nil = the formula. (Whether a group is a rank's
    /// batch or one of its sequences is the batch's: `TokenBatch.sequenceLength`.)
    package var expertCapacity: Int?
    /// The number format this layer's FFNs compute in; nil = the model's `expertPrecision`.
    package var expertPrecision: ExpertPrecision?

    package init(experts: Int, topK: Int, capacityFactor: Double = 1.25, minCapacity: Int = 4,
                dropPolicy: DropPolicy = .inOrder, priority: RoutingPriority = .max, residual: Bool = false,
                gateRule: GateRule = GateRule(), routerBias: Bool = false, selectionBias: Bool = false,
                expertDFF: Int? = nil, sharedDFF: Int = 0, sharedGate: Bool = false) {
        precondition(!residual || topK == 1, "a residual layer routes each token to one expert")
        kind = residual ? .residual : .moe
        self.gateRule = gateRule
        self.routerBias = routerBias
        self.selectionBias = selectionBias
        self.expertDFF = expertDFF
        self.denseDFF = nil
        self.sharedDFF = sharedDFF
        self.sharedGate = sharedGate
        self.expertCapacity = nil
        self.expertPrecision = nil
        self.experts = experts
        self.topK = topK
        self.capacityFactor = capacityFactor
        self.minCapacity = minCapacity
        self.dropPolicy = dropPolicy
        self.priority = priority
    }

    /// A dense FFN layer of width `dFF` (nil = the model's).
    package static func denseLayer(dFF: Int? = nil) -> LayerConfiguration {
        var layer = LayerConfiguration(experts: 1, topK: 1, capacityFactor: 0, dropPolicy: .none)
        layer.kind = .dense
        layer.denseDFF = dFF
        return layer
    }

    /// True when no route is ever dropped (policy `none`, or C = 0).
    package var isDropless: Bool { dropPolicy == .none || (capacityFactor == 0 && expertCapacity == nil) }
}

/// A model: L pre-norm MoE blocks `x ← x + MoE_l(LayerNorm_l(x))` over hidden size `dModel`.
package struct ModelConfiguration: Equatable, Sendable {
    package var name: String
    package var dModel: Int
    package var dFF: Int
    package var activation: Activation
    package var layers: [LayerConfiguration]
    /// The normalisation before each layer's FFN, and its ε.
    package var norm: NormKind = .layer
    package var normEpsilon: Double = LayerNorm.defaultEpsilon
    /// Whether FFNs (experts, shared, dense) carry biases; default: relu, gelu and the clamped
    /// GLU (GPT-OSS) do, SwiGLU does not (`"ffn_bias"` overrides).
    package var ffnBias: Bool
    /// The clamped GLU's constants (activation `clamped-glu`).
    package var glu = ClampedGLU()
    /// The number format every layer's FFNs compute in unless the layer says otherwise.
    package var expertPrecision = ExpertPrecision.fp32
    /// The attention, embeddings and LM head around the layers (`"decoder"`), nil for a model of
    /// MoE layers alone.
    package var decoder: DecoderConfiguration?
    /// Where the model came from (`"source"`: e.g. the Hugging Face checkpoint it was imported
    /// from); informational.
    package var origin: String?
    /// Task-level routing: `taskExperts[task]` lists the k experts a token of that task goes to
    /// (in choice order), bypassing the gate. Empty when the model routes by gate only.
    package var taskExperts: [Int: [Int]]

    package init(name: String, dModel: Int, dFF: Int, activation: Activation, layers: [LayerConfiguration], taskExperts: [Int: [Int]] = [:]) {
        self.name = name
        self.dModel = dModel
        self.dFF = dFF
        self.activation = activation
        self.layers = layers
        self.taskExperts = taskExperts
        ffnBias = activation.hasBiasByDefault
    }

    /// Each layer's precision: `override` for every layer when given (`--expert-precision`),
    /// else the layer's own, else the model's.
    package func precisions(override: ExpertPrecision? = nil) -> [ExpertPrecision] {
        layers.map { override ?? $0.expertPrecision ?? expertPrecision }
    }

    /// Each layer's expert backend at instruction-set level `isa` (`precisions(override:)`).
    package func kernels(isa: CPUISA, override: ExpertPrecision? = nil, int8: Int8Settings = Int8Settings()) -> [any ExpertKernels] {
        precisions(override: override).map { $0.kernels(isa: isa, int8: int8) }
    }

    /// The FFN roles of a layer.
    package enum FFNRole: Sendable { case expert, shared, dense }

    /// The FFN form of `role` in layer `index`: the model's activation and bias choice, the
    /// role's width. A PR-MoE residual layer's dense MLP has the experts' form.
    package func form(_ role: FFNRole, layer index: Int) -> FFNForm {
        let layer = layers[index]
        let width: Int
        switch role {
        case .expert: width = layer.expertDFF ?? dFF
        case .shared: width = layer.sharedDFF
        case .dense: width = layer.dense ? (layer.denseDFF ?? dFF) : (layer.expertDFF ?? dFF)
        }
        return FFNForm(activation: activation, dFF: width, hasBias: ffnBias, glu: glu)
    }

    /// The built-in default: 4 layers, d_model 256, d_ff 1024, GELU, 8 experts, top-2, C 1.25.
    package static let builtInDefault = ModelConfiguration(
        name: "default", dModel: 256, dFF: 1024, activation: .gelu,
        layers: Array(repeating: LayerConfiguration(experts: 8, topK: 2), count: 4))

    /// Largest sizes accepted from a file, so a typo cannot ask for terabytes.
    package static let dimensionLimit = 1 << 16
    package static let layerLimit = 1024
    package static let expertLimit = 1 << 14
}

/// Why a model file was refused; names the file and field.
package struct ModelConfigurationError: Error, Equatable, CustomStringConvertible {
    package let source: String
    package let field: String
    package let problem: String
    package var description: String { field.isEmpty ? "\(source): \(problem)" : "\(source): field '\(field)': \(problem)" }
}

/// A model file as read: the model, and the run knobs older files carry, which
/// `RunConfiguration` owns now (`overlap_degree`: `--overlap-degree`'s default).
package struct ModelFile: Equatable, Sendable {
    package var model: ModelConfiguration
    /// Chunks per layer step (`"overlap_degree"`: an integer or "auto"; 1, the default).
    package var overlapDegree: OverlapDegree = .fixed(1)

    package init(model: ModelConfiguration, overlapDegree: OverlapDegree = .fixed(1)) {
        self.model = model
        self.overlapDegree = overlapDegree
    }

    /// Reads a model file:
    ///
    /// ```json
    /// { "name": "small", "d_model": 64, "d_ff": 128, "activation": "gelu",
    ///   "layer_defaults": { "experts": 8, "top_k": 2, "capacity_factor": 1.25, "min_capacity": 4,
    ///                       "drop_policy": "in-order", "priority": "max" },
    ///   "layers": [ {}, { "top_k": 1 }, { "experts": 16 }, { "residual": true } ],
    ///   "task_experts": { "0": [0, 1], "1": [2, 3] } }
    /// ```
    /// Fields and defaults: `ModelDraft.fields`, `LayerDraft.fields` (docs/MODEL.md lists them).
    /// Each layer is `layer_defaults` overridden by its own fields; `experts` and `top_k` must be
    /// given by one or the other, except that a `residual` layer's `top_k` is 1 (layer_defaults'
    /// top_k does not apply to it; its own top_k, if given, must be 1). Unknown fields are errors.
    package static func load(path: String) throws(ModelConfigurationError) -> ModelFile {
        let bytes: [UInt8]
        do { bytes = try BoundedFileReader.read(path, limit: 1 << 20) } catch {
            throw ModelConfigurationError(source: path, field: "", problem: "cannot be read: \(error.reason)")
        }
        return try parse(bytes, path: path)
    }

    /// Keys of the top level, in the order errors list them.
    static let topLevelKeys = ["name", "d_model", "d_ff", "activation", "layer_defaults", "layers", "task_experts",
                               "norm", "norm_epsilon", "ffn_bias", "glu_alpha", "glu_limit", "source", "expert_precision", "overlap_degree", "decoder"]

    package static func parse(_ bytes: [UInt8], path: String) throws(ModelConfigurationError) -> ModelFile {
        let document: JSONValue
        do { document = try JSONParser.parse(bytes) } catch {
            throw ModelConfigurationError(source: path, field: "", problem: "invalid JSON at \(error)")
        }
        do {
            let root = try JSONObjectReader(document)
            try root.rejectUnknownKeys(allowed: topLevelKeys)
            var draft = ModelDraft()
            try ModelDraft.fields.read(root, into: &draft)
            guard let dModel = draft.dModel else { throw JSONFieldError(path: "d_model", problem: "missing") }
            guard let dFF = draft.dFF else { throw JSONFieldError(path: "d_ff", problem: "missing") }
            let layers = try readLayers(root)
            let taskExperts = try readTaskExperts(root, layers: layers)
            let fileName = path.split(separator: "/").last.map { String($0.split(separator: ".").first ?? $0) } ?? path
            var model = ModelConfiguration(name: draft.name ?? fileName, dModel: dModel, dFF: dFF, activation: draft.activation,
                                           layers: layers, taskExperts: taskExperts)
            model.norm = draft.norm
            model.normEpsilon = draft.normEpsilon
            model.ffnBias = draft.ffnBias ?? draft.activation.hasBiasByDefault
            model.glu = ClampedGLU(alpha: Float(draft.gluAlpha), limit: Float(draft.gluLimit))
            model.origin = draft.source
            model.expertPrecision = draft.expertPrecision
            if let decoder = try root.optionalObject("decoder") {
                try decoder.rejectUnknownKeys(allowed: DecoderDraft.fields.map(\.key))
                var decoderDraft = DecoderDraft()
                try DecoderDraft.fields.read(decoder, into: &decoderDraft)
                model.decoder = try decoderDraft.configuration(dModel: dModel, path: "decoder")
                for (index, layer) in (decoderDraft.slidingWindowLayers ?? []).enumerated() where layer >= model.layers.count {
                    throw JSONFieldError(path: "decoder.sliding_window_layers[\(index)]", problem: "must be below the \(model.layers.count) layers, got \(layer)")
                }
            }
            return ModelFile(model: model, overlapDegree: draft.overlapDegree)
        } catch let error as JSONFieldError {
            throw ModelConfigurationError(source: path, field: error.path, problem: error.problem)
        } catch {
            throw ModelConfigurationError(source: path, field: "", problem: "\(error)")
        }
    }

    /// Every layer entry over `layer_defaults`, then the rules between its fields.
    private static func readLayers(_ root: JSONObjectReader) throws(JSONFieldError) -> [LayerConfiguration] {
        let keys = LayerDraft.fields.map(\.key)
        var base = LayerDraft()
        var defaultsGiven: Set<String> = []
        var defaultTopK: Int?
        if let defaults = try root.optionalObject("layer_defaults") {
            try defaults.rejectUnknownKeys(allowed: keys)
            defaultsGiven = try LayerDraft.fields.read(defaults, into: &base)
            defaultTopK = base.topK
        }
        base.dense = false  // only a layer's own "dense" makes it dense
        let entries = try root.array("layers")
        guard (1...ModelConfiguration.layerLimit).contains(entries.count) else {
            throw JSONFieldError(path: "layers", problem: "must hold 1...\(ModelConfiguration.layerLimit) layers, got \(entries.count)")
        }
        return try entries.map { (layerPath, value) throws(JSONFieldError) in
            let entry = try JSONObjectReader(value, path: layerPath)
            try entry.rejectUnknownKeys(allowed: keys)
            var draft = base
            draft.topK = nil
            let own = try LayerDraft.fields.read(entry, into: &draft)
            return try draft.layer(path: layerPath, own: own, given: own.union(defaultsGiven),
                                   ownTopK: own.contains("top_k") ? draft.topK : nil, defaultTopK: defaultTopK)
        }
    }

    /// `task_experts`: task id → the k experts a token of that task goes to, in every layer.
    private static func readTaskExperts(_ root: JSONObjectReader, layers: [LayerConfiguration]) throws(JSONFieldError) -> [Int: [Int]] {
        guard let tasks = try root.optionalObject("task_experts") else { return [:] }
        var taskExperts: [Int: [Int]] = [:]
        for key in tasks.keys {
            guard let task = Int(key), task >= 0 else {
                throw JSONFieldError(path: tasks.childPath(key), problem: "task ids are non-negative integers written as strings")
            }
            let experts = try tasks.array(key).map { (path: String, value: JSONValue) throws(JSONFieldError) in
                try JSONObjectReader.integer(value, path: path)
            }
            for (index, layer) in layers.enumerated() where !layer.dense {
                guard experts.count == layer.topK else {
                    throw JSONFieldError(path: tasks.childPath(key), problem: "lists \(experts.count) experts but layer \(index) routes each token to top_k = \(layer.topK)")
                }
                guard experts.allSatisfy({ (0..<layer.experts).contains($0) }), Set(experts).count == experts.count else {
                    throw JSONFieldError(path: tasks.childPath(key), problem: "experts must be distinct and below layer \(index)'s \(layer.experts)")
                }
            }
            taskExperts[task] = experts
        }
        if !taskExperts.isEmpty, let index = layers.firstIndex(where: { $0.dense }) {
            throw JSONFieldError(path: "task_experts", problem: "layer \(index) is dense; task routing needs every layer to have experts")
        }
        return taskExperts
    }
}

extension ModelConfiguration {
    /// The model of the file at `path` (its run knobs, if any, are `ModelFile`'s).
    package static func load(path: String) throws(ModelConfigurationError) -> ModelConfiguration { try ModelFile.load(path: path).model }

    /// The model of a model file's bytes (`ModelFile.parse`).
    package static func parse(_ bytes: [UInt8], path: String) throws(ModelConfigurationError) -> ModelConfiguration {
        try ModelFile.parse(bytes, path: path).model
    }
}
