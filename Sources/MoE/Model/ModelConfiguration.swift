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

/// One MoE layer's routing and size settings.
package struct LayerConfiguration: Equatable, Sendable {
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
    /// PR-MoE residual layer (DeepSpeed-MoE, Rajbhandari et al. 2022): every token also goes
    /// through a dense MLP held by every rank, mixed with its one expert (top-1) by a per-token
    /// coefficient. See `ResidualMixture`.
    package var residual: Bool
    /// The gate's score function, selection, normalisation and scale (`docs/ROUTING.md`).
    package var gateRule: GateRule
    /// The gate has a learned bias `[E]` added to its logits (GPT-OSS).
    package var routerBias: Bool
    /// The gate has a selection-only bias `[E]` (DeepSeek-V3's `e_score_correction_bias`).
    package var selectionBias: Bool
    /// A dense layer: every token goes through one FFN of `denseDFF` held by every rank; no gate,
    /// no experts, no exchange (`experts` and `topK` are 1 and unused).
    package var dense: Bool
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
    /// replacing the capacity-factor formula; nil = the formula.
    package var expertCapacity: Int?
    /// Tokens per capacity group: capacity is counted per sequence of this many tokens (a run
    /// option, `--sequence-length`; each rank holds whole sequences); nil = per rank's batch.
    package var sequenceLength: Int?

    package init(experts: Int, topK: Int, capacityFactor: Double = 1.25, minCapacity: Int = 4,
                dropPolicy: DropPolicy = .inOrder, priority: RoutingPriority = .max, residual: Bool = false,
                gateRule: GateRule = GateRule(), routerBias: Bool = false, selectionBias: Bool = false,
                expertDFF: Int? = nil, sharedDFF: Int = 0, sharedGate: Bool = false) {
        precondition(!residual || topK == 1, "a residual layer routes each token to one expert")
        self.residual = residual
        self.gateRule = gateRule
        self.routerBias = routerBias
        self.selectionBias = selectionBias
        self.dense = false
        self.expertDFF = expertDFF
        self.denseDFF = nil
        self.sharedDFF = sharedDFF
        self.sharedGate = sharedGate
        self.expertCapacity = nil
        self.sequenceLength = nil
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
        layer.dense = true
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
    /// Where the model came from (`"source"`: e.g. the Hugging Face checkpoint it was imported
    /// from); informational.
    package var origin: String?
    /// Task-level routing: `taskExperts[task]` lists the k experts a token of that task goes to
    /// (in choice order), bypassing the gate. Empty when the model routes by gate only.
    package var taskExperts: [Int: [Int]]
    /// Chunks per layer step for overlapping exchange and experts (`"overlap_degree"`: an
    /// integer or "auto"; 1, the default, is the sequential layer). A runtime choice: it never
    /// changes routing, and outputs stay within 1e-6 relative of degree 1.
    package var overlapDegree: OverlapDegree = .fixed(1)

    package init(name: String, dModel: Int, dFF: Int, activation: Activation, layers: [LayerConfiguration], taskExperts: [Int: [Int]] = [:]) {
        self.name = name
        self.dModel = dModel
        self.dFF = dFF
        self.activation = activation
        self.layers = layers
        self.taskExperts = taskExperts
        ffnBias = activation.hasBiasByDefault
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

extension ModelConfiguration {
    /// Reads a model file:
    ///
    /// ```json
    /// { "name": "small", "d_model": 64, "d_ff": 128, "activation": "gelu",
    ///   "layer_defaults": { "experts": 8, "top_k": 2, "capacity_factor": 1.25, "min_capacity": 4,
    ///                       "drop_policy": "in-order", "priority": "max" },
    ///   "layers": [ {}, { "top_k": 1 }, { "experts": 16 }, { "residual": true } ],
    ///   "task_experts": { "0": [0, 1], "1": [2, 3] } }
    /// ```
    /// Each layer is `layer_defaults` overridden by its own fields; `experts` and `top_k` must be
    /// given by one or the other, except that a `residual` layer's `top_k` is 1 (layer_defaults'
    /// top_k does not apply to it; its own top_k, if given, must be 1). Unknown fields are errors.
    package static func load(path: String) throws(ModelConfigurationError) -> ModelConfiguration {
        let bytes: [UInt8]
        do { bytes = try BoundedFileReader.read(path, limit: 1 << 20) } catch {
            throw ModelConfigurationError(source: path, field: "", problem: "cannot be read: \(error.reason)")
        }
        return try parse(bytes, path: path)
    }

    package static func parse(_ bytes: [UInt8], path: String) throws(ModelConfigurationError) -> ModelConfiguration {
        let document: JSONValue
        do { document = try JSONParser.parse(bytes) } catch {
            throw ModelConfigurationError(source: path, field: "", problem: "invalid JSON at \(error)")
        }
        let layerKeys = ["experts", "top_k", "capacity_factor", "min_capacity", "drop_policy", "priority", "residual",
                         "dense", "expert_d_ff", "dense_d_ff", "shared_d_ff", "shared_gate", "expert_capacity", "score", "normalize_top_k",
                         "scaling_factor", "router_bias", "selection_bias", "groups", "top_groups", "group_score"]
        do {
            let root = try JSONObjectReader(document)
            try root.rejectUnknownKeys(allowed: ["name", "d_model", "d_ff", "activation", "layer_defaults", "layers", "task_experts",
                                                "norm", "norm_epsilon", "ffn_bias", "glu_alpha", "glu_limit", "source", "overlap_degree"])
            let dModel = try root.integer("d_model")
            let dFF = try root.integer("d_ff")
            for (key, value) in [("d_model", dModel), ("d_ff", dFF)] where !(1...dimensionLimit).contains(value) {
                throw JSONFieldError(path: key, problem: "must be in 1...\(dimensionLimit), got \(value)")
            }
            let activationName = try root.optionalString("activation") ?? "gelu"
            guard let activation = Activation(rawValue: activationName) else {
                throw JSONFieldError(path: "activation", problem: "unknown activation '\(activationName)' (\(Activation.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            let normName = try root.optionalString("norm") ?? "layer"
            guard let norm = NormKind(rawValue: normName) else {
                throw JSONFieldError(path: "norm", problem: "unknown norm '\(normName)' (\(NormKind.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            let normEpsilon = try root.optionalNumber("norm_epsilon") ?? LayerNorm.defaultEpsilon
            guard normEpsilon > 0, normEpsilon <= 1 else {
                throw JSONFieldError(path: "norm_epsilon", problem: "must be in (0, 1], got \(normEpsilon)")
            }
            let gluAlpha = try root.optionalNumber("glu_alpha") ?? Double(ClampedGLU().alpha)
            let gluLimit = try root.optionalNumber("glu_limit") ?? Double(ClampedGLU().limit)
            guard gluAlpha.isFinite, gluLimit > 0, gluLimit.isFinite else {
                throw JSONFieldError(path: "glu_limit", problem: "glu_alpha must be finite and glu_limit positive, got \(gluAlpha), \(gluLimit)")
            }
            let defaults = try root.optionalObject("layer_defaults")
            try defaults?.rejectUnknownKeys(allowed: layerKeys)
            let layerEntries = try root.array("layers")
            guard (1...layerLimit).contains(layerEntries.count) else {
                throw JSONFieldError(path: "layers", problem: "must hold 1...\(layerLimit) layers, got \(layerEntries.count)")
            }
            var layers: [LayerConfiguration] = []
            for (layerPath, value) in layerEntries {
                let layer = try JSONObjectReader(value, path: layerPath)
                try layer.rejectUnknownKeys(allowed: layerKeys)
                func pick<T>(_ key: String, _ read: (JSONObjectReader, String) throws(JSONFieldError) -> T?) throws(JSONFieldError) -> T? {
                    if let own = try read(layer, key) { return own }
                    if let defaults { return try read(defaults, key) }
                    return nil
                }
                let intReader: (JSONObjectReader, String) throws(JSONFieldError) -> Int? = { (reader, key) throws(JSONFieldError) in try reader.optionalInteger(key) }
                let stringReader: (JSONObjectReader, String) throws(JSONFieldError) -> String? = { (reader, key) throws(JSONFieldError) in try reader.optionalString(key) }
                let boolReader: (JSONObjectReader, String) throws(JSONFieldError) -> Bool? = { (reader, key) throws(JSONFieldError) in try reader.optionalBool(key) }
                let numberReader: (JSONObjectReader, String) throws(JSONFieldError) -> Double? = { (reader, key) throws(JSONFieldError) in try reader.optionalNumber(key) }
                func width(_ key: String) throws(JSONFieldError) -> Int? {
                    guard let value = try pick(key, intReader) else { return nil }
                    guard (1...dimensionLimit).contains(value) else {
                        throw JSONFieldError(path: "\(layerPath).\(key)", problem: "must be in 1...\(dimensionLimit), got \(value)")
                    }
                    return value
                }
                if try layer.optionalBool("dense") == true {
                    for key in layerKeys where !["dense", "dense_d_ff"].contains(key) && layer.keys.contains(key) {
                        throw JSONFieldError(path: "\(layerPath).\(key)", problem: "a dense layer has no gate or experts; only dense_d_ff applies")
                    }
                    layers.append(.denseLayer(dFF: try width("dense_d_ff")))
                    continue
                }
                guard let experts = try pick("experts", intReader) else {
                    throw JSONFieldError(path: "\(layerPath).experts", problem: "missing (give it here or in layer_defaults)")
                }
                let residual = try pick("residual", boolReader) ?? false
                // A residual layer is top-1 unless the layer itself says otherwise (which is then refused).
                let ownTopK = try layer.optionalInteger("top_k")
                guard let topK = try ownTopK ?? (residual ? 1 : pick("top_k", intReader)) else {
                    throw JSONFieldError(path: "\(layerPath).top_k", problem: "missing (give it here or in layer_defaults)")
                }
                guard !residual || topK == 1 else {
                    throw JSONFieldError(path: "\(layerPath).top_k", problem: "a residual layer sends each token to one expert (top_k 1) beside its dense MLP, got \(topK)")
                }
                guard (1...expertLimit).contains(experts) else {
                    throw JSONFieldError(path: "\(layerPath).experts", problem: "must be in 1...\(expertLimit), got \(experts)")
                }
                guard (1...experts).contains(topK) else {
                    throw JSONFieldError(path: "\(layerPath).top_k", problem: "must be in 1...\(experts) (the layer's experts), got \(topK)")
                }
                let capacityFactor = try pick("capacity_factor", numberReader) ?? 1.25
                guard capacityFactor >= 0, capacityFactor <= 1e6 else {
                    throw JSONFieldError(path: "\(layerPath).capacity_factor", problem: "must be in 0...1e6 (0 = no limit), got \(capacityFactor)")
                }
                let minCapacity = try pick("min_capacity", intReader) ?? 4
                guard (0...(1 << 30)).contains(minCapacity) else {
                    throw JSONFieldError(path: "\(layerPath).min_capacity", problem: "must be in 0...\(1 << 30), got \(minCapacity)")
                }
                let policyName = try pick("drop_policy", stringReader) ?? "in-order"
                guard let policy = DropPolicy(rawValue: policyName) else {
                    throw JSONFieldError(path: "\(layerPath).drop_policy", problem: "unknown policy '\(policyName)' (in-order, batch-prioritized, none)")
                }
                let priorityName = try pick("priority", stringReader) ?? "max"
                guard let priority = RoutingPriority(rawValue: priorityName) else {
                    throw JSONFieldError(path: "\(layerPath).priority", problem: "unknown priority '\(priorityName)' (max, sum)")
                }
                let rule = try gateRule(pick: { (key) throws(JSONFieldError) in try pick(key, { (reader, key) throws(JSONFieldError) in reader.value(key) }) },
                                        layerPath: layerPath, experts: experts, topK: topK)
                let sharedDFF = try pick("shared_d_ff", intReader) ?? 0
                guard (0...dimensionLimit).contains(sharedDFF) else {
                    throw JSONFieldError(path: "\(layerPath).shared_d_ff", problem: "must be in 0...\(dimensionLimit) (0 = no shared expert), got \(sharedDFF)")
                }
                let sharedGate = try pick("shared_gate", boolReader) ?? false
                guard !sharedGate || sharedDFF > 0 else {
                    throw JSONFieldError(path: "\(layerPath).shared_gate", problem: "gates a shared expert, but shared_d_ff is 0 (no shared expert)")
                }
                guard !residual || sharedDFF == 0 else {
                    throw JSONFieldError(path: "\(layerPath).shared_d_ff", problem: "a residual (PR-MoE) layer has its own dense MLP; it cannot also have a shared expert")
                }
                var configuration = LayerConfiguration(
                    experts: experts, topK: topK, capacityFactor: capacityFactor, minCapacity: minCapacity, dropPolicy: policy,
                    priority: priority, residual: residual, gateRule: rule, routerBias: try pick("router_bias", boolReader) ?? false,
                    selectionBias: try pick("selection_bias", boolReader) ?? false, expertDFF: try width("expert_d_ff"),
                    sharedDFF: sharedDFF, sharedGate: sharedGate)
                if let fixed = try pick("expert_capacity", intReader) {
                    guard (0...(1 << 30)).contains(fixed) else {
                        throw JSONFieldError(path: "\(layerPath).expert_capacity", problem: "must be in 0...\(1 << 30), got \(fixed)")
                    }
                    configuration.expertCapacity = fixed
                }
                layers.append(configuration)
            }
            var taskExperts: [Int: [Int]] = [:]
            if let tasks = try root.optionalObject("task_experts") {
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
            }
            let fileName = path.split(separator: "/").last.map { String($0.split(separator: ".").first ?? $0) } ?? path
            var model = ModelConfiguration(name: try root.optionalString("name") ?? fileName, dModel: dModel, dFF: dFF,
                                           activation: activation, layers: layers, taskExperts: taskExperts)
            model.norm = norm
            model.normEpsilon = normEpsilon
            model.ffnBias = try root.optionalBool("ffn_bias") ?? activation.hasBiasByDefault
            model.glu = ClampedGLU(alpha: Float(gluAlpha), limit: Float(gluLimit))
            model.origin = try root.optionalString("source")
            if let value = root.value("overlap_degree") {
                let parsed: Result<OverlapDegree, OverlapDegreeError>
                switch value {
                case let .string(text): parsed = OverlapDegree.parse(text)
                case let .number(number) where number == number.rounded() && abs(number) < 1e9: parsed = OverlapDegree.validated(Int(number))
                default: parsed = .failure(OverlapDegreeError(detail: "must be an integer or \"auto\""))
                }
                switch parsed {
                case let .success(degree): model.overlapDegree = degree
                case let .failure(error): throw JSONFieldError(path: "overlap_degree", problem: error.detail)
                }
            }
            if !taskExperts.isEmpty, let index = layers.firstIndex(where: { $0.dense }) {
                throw JSONFieldError(path: "task_experts", problem: "layer \(index) is dense; task routing needs every layer to have experts")
            }
            return model
        } catch let error as JSONFieldError {
            throw ModelConfigurationError(source: path, field: error.path, problem: error.problem)
        } catch {
            throw ModelConfigurationError(source: path, field: "", problem: "\(error)")
        }
    }
}

extension ModelConfiguration {
    /// A layer's gate rule from its fields (`score`, `normalize_top_k`, `scaling_factor`,
    /// `groups`, `top_groups`, `group_score`), each from the layer or `layer_defaults`.
    static func gateRule(
        pick: (String) throws(JSONFieldError) -> JSONValue?, layerPath: String, experts: Int, topK: Int
    ) throws(JSONFieldError) -> GateRule {
        func string(_ key: String) throws(JSONFieldError) -> String? {
            guard let value = try pick(key) else { return nil }
            return try JSONObjectReader.string(value, path: "\(layerPath).\(key)")
        }
        func integer(_ key: String) throws(JSONFieldError) -> Int? {
            guard let value = try pick(key) else { return nil }
            return try JSONObjectReader.integer(value, path: "\(layerPath).\(key)")
        }
        var rule = GateRule()
        if let name = try string("score") {
            guard let score = GateScoreFunction(rawValue: name) else {
                throw JSONFieldError(path: "\(layerPath).score", problem: "unknown score '\(name)' (\(GateScoreFunction.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            rule.score = score
        }
        if let name = try string("normalize_top_k") {
            guard let normalization = TopKNormalization(rawValue: name) else {
                throw JSONFieldError(path: "\(layerPath).normalize_top_k", problem: "unknown normalisation '\(name)' (\(TopKNormalization.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            rule.normalization = normalization
        }
        if let value = try pick("scaling_factor") {
            let factor = try JSONObjectReader.number(value, path: "\(layerPath).scaling_factor")
            guard factor > 0, factor <= 1e6 else {
                throw JSONFieldError(path: "\(layerPath).scaling_factor", problem: "must be in (0, 1e6], got \(factor)")
            }
            rule.scalingFactor = Float(factor)
        }
        if let groups = try integer("groups") {
            guard groups >= 1, groups <= experts, experts % groups == 0 else {
                throw JSONFieldError(path: "\(layerPath).groups", problem: "must divide the layer's \(experts) experts into equal groups, got \(groups)")
            }
            let topGroups = try integer("top_groups") ?? groups
            guard (1...groups).contains(topGroups) else {
                throw JSONFieldError(path: "\(layerPath).top_groups", problem: "must be in 1...\(groups) (the groups), got \(topGroups)")
            }
            guard topK <= topGroups * (experts / groups) else {
                throw JSONFieldError(path: "\(layerPath).top_groups", problem: "\(topGroups) groups of \(experts / groups) experts cannot supply top_k = \(topK) experts")
            }
            let scoreName = try string("group_score") ?? "max"
            guard let groupScore = GroupScore(rawValue: scoreName) else {
                throw JSONFieldError(path: "\(layerPath).group_score", problem: "unknown group score '\(scoreName)' (max, top2-sum)")
            }
            rule.selection = .groupLimited(groups: groups, topGroups: topGroups, score: groupScore)
        } else if try pick("top_groups") != nil {
            throw JSONFieldError(path: "\(layerPath).groups", problem: "top_groups and group_score need groups")
        } else if try pick("group_score") != nil {
            throw JSONFieldError(path: "\(layerPath).groups", problem: "top_groups and group_score need groups")
        }
        return rule
    }
}
