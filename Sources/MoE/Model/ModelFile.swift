import FileFormats

/// A model file's layer entry as read, before the rules that tie its fields together
/// (`layer(path:own:given:)`); one stored field per key of `fields`.
struct LayerDraft {
    var experts: Int?
    var topK: Int?
    var capacityFactor = 1.25
    var minCapacity = 4
    var dropPolicy = DropPolicy.inOrder
    var priority = RoutingPriority.max
    var residual = false
    var dense = false
    var expertDFF: Int?
    var denseDFF: Int?
    var sharedDFF = 0
    var sharedGate = false
    var expertCapacity: Int?
    var score = GateScoreFunction.softmax
    var normalization = TopKNormalization.survivors
    var scalingFactor = 1.0
    var routerBias = false
    var selectionBias = false
    var groups: Int?
    var topGroups: Int?
    var groupScore = GroupScore.max
    var expertPrecision: ExpertPrecision?

    /// Every field of a layer entry (and of `layer_defaults`), in the order errors list them.
    static let fields: [ModelFileField<LayerDraft>] = [
        .optionalInteger("experts", \.experts, in: 1...ModelConfiguration.expertLimit, absent: "required", "experts E of an MoE layer"),
        .optionalInteger("top_k", \.topK, in: Int.min...Int.max, absent: "required (1 for residual)", "routes per token k, 1 ≤ k ≤ E"),
        .number("capacity_factor", \.capacityFactor, default: 1.25, check: { (0...1e6).contains($0) ? nil : "must be in 0...1e6 (0 = no limit), got \($0)" },
                "capacity factor C; capacity = max(min_capacity, ⌈k·T·C/E⌉) per source rank; 0 = no limit"),
        .integer("min_capacity", \.minCapacity, default: 4, in: 0...(1 << 30), "lower bound on any expert's capacity"),
        .choice("drop_policy", \.dropPolicy, default: .inOrder, noun: "policy", "which routes keep a slot: in-order, batch-prioritized, none (dropless)"),
        .choice("priority", \.priority, default: .max, noun: "priority", "batch-prioritized order: max or sum of the token's top-k probabilities"),
        .flag("residual", \.residual, "PR-MoE residual layer: dense MLP + top-1 expert, mixed per token"),
        .flag("dense", \.dense, "a dense FFN layer on every rank: no gate, no experts (only dense_d_ff may be given with it)"),
        .optionalInteger("expert_d_ff", \.expertDFF, in: 1...ModelConfiguration.dimensionLimit, absent: "d_ff", "hidden width of this layer's experts"),
        .optionalInteger("dense_d_ff", \.denseDFF, in: 1...ModelConfiguration.dimensionLimit, absent: "d_ff", "hidden width of a dense layer's FFN"),
        .integer("shared_d_ff", \.sharedDFF, default: 0, in: 0...ModelConfiguration.dimensionLimit, note: " (0 = no shared expert)",
                 "hidden width of the shared expert (every token, on its own rank); 0 = none"),
        .flag("shared_gate", \.sharedGate, "scale the shared expert by σ(x · w_g) per token (Qwen2-MoE)"),
        .optionalInteger("expert_capacity", \.expertCapacity, in: 0...(1 << 30), absent: "none (the formula)",
                         "fixed slots per expert per capacity group (Switch Transformers), replacing the formula"),
        .choice("score", \.score, default: .softmax, noun: "score", "the gate's score function (docs/ROUTING.md)"),
        .choice("normalize_top_k", \.normalization, default: .survivors, noun: "normalisation", "how the k combine weights are normalised"),
        .number("scaling_factor", \.scalingFactor, default: 1, check: { $0 > 0 && $0 <= 1e6 ? nil : "must be in (0, 1e6], got \($0)" },
                "multiplies every combine weight (routed_scaling_factor)"),
        .flag("router_bias", \.routerBias, "the gate has a learned bias [E] (GPT-OSS)"),
        .flag("selection_bias", \.selectionBias, "a selection-only bias [E] (DeepSeek-V3's e_score_correction_bias)"),
        .optionalInteger("groups", \.groups, in: Int.min...Int.max, absent: "none", "group-limited selection: experts in this many equal groups"),
        .optionalInteger("top_groups", \.topGroups, in: Int.min...Int.max, absent: "groups", "groups a token may choose experts from"),
        .choice("group_score", \.groupScore, default: .max, noun: "group score", "a group's score: max or top2-sum"),
        ModelFileField(key: "expert_precision", defaultText: "the model's", meaning: "this layer's FFNs in fp32, bf16 or int8",
                       read: { (draft, json, path) throws(JSONFieldError) in
            draft.expertPrecision = try ExpertPrecision.read(json, path: path)
        }, write: { draft in draft.expertPrecision.map { .string($0.rawValue) } }),
    ]

    init() {}

    /// The entry of `layer` (for writing).
    init(_ layer: LayerConfiguration) {
        dense = layer.kind == .dense
        if dense {
            denseDFF = layer.denseDFF
            return
        }
        (experts, topK, capacityFactor, minCapacity) = (layer.experts, layer.topK, layer.capacityFactor, layer.minCapacity)
        (dropPolicy, priority, residual) = (layer.dropPolicy, layer.priority, layer.kind == .residual)
        (expertDFF, sharedDFF, sharedGate, expertCapacity) = (layer.expertDFF, layer.sharedDFF, layer.sharedGate, layer.expertCapacity)
        (score, normalization, scalingFactor) = (layer.gateRule.score, layer.gateRule.normalization, Double(layer.gateRule.scalingFactor))
        (routerBias, selectionBias, expertPrecision) = (layer.routerBias, layer.selectionBias, layer.expertPrecision)
        if case let .groupLimited(groups, topGroups, groupScore) = layer.gateRule.selection {
            (self.groups, self.topGroups, self.groupScore) = (groups, topGroups, groupScore)
        }
    }

    /// The layer, after the rules between fields. `own`: the keys the entry itself gave;
    /// `given`: those it or `layer_defaults` gave; `ownTopK`, `defaultTopK`: the entry's and
    /// layer_defaults' top_k.
    func layer(path: String, own: Set<String>, given: Set<String>, ownTopK: Int?, defaultTopK: Int?) throws(JSONFieldError) -> LayerConfiguration {
        if dense {
            if let key = Self.fields.map(\.key).first(where: { own.contains($0) && !["dense", "dense_d_ff"].contains($0) }) {
                throw JSONFieldError(path: "\(path).\(key)", problem: "a dense layer has no gate or experts; only dense_d_ff applies")
            }
            return .denseLayer(dFF: denseDFF)
        }
        guard let experts else { throw JSONFieldError(path: "\(path).experts", problem: "missing (give it here or in layer_defaults)") }
        // A residual layer is top-1 unless the layer itself says otherwise (which is then refused).
        guard let topK = ownTopK ?? (residual ? 1 : defaultTopK) else {
            throw JSONFieldError(path: "\(path).top_k", problem: "missing (give it here or in layer_defaults)")
        }
        guard !residual || topK == 1 else {
            throw JSONFieldError(path: "\(path).top_k", problem: "a residual layer sends each token to one expert (top_k 1) beside its dense MLP, got \(topK)")
        }
        guard (1...experts).contains(topK) else {
            throw JSONFieldError(path: "\(path).top_k", problem: "must be in 1...\(experts) (the layer's experts), got \(topK)")
        }
        guard !sharedGate || sharedDFF > 0 else {
            throw JSONFieldError(path: "\(path).shared_gate", problem: "gates a shared expert, but shared_d_ff is 0 (no shared expert)")
        }
        guard !residual || sharedDFF == 0 else {
            throw JSONFieldError(path: "\(path).shared_d_ff", problem: "a residual (PR-MoE) layer has its own dense MLP; it cannot also have a shared expert")
        }
        var layer = LayerConfiguration(
            experts: experts, topK: topK, capacityFactor: capacityFactor, minCapacity: minCapacity, dropPolicy: dropPolicy, priority: priority,
            residual: residual, gateRule: try gateRule(path: path, experts: experts, topK: topK, given: given), routerBias: routerBias,
            selectionBias: selectionBias, expertDFF: expertDFF, sharedDFF: sharedDFF, sharedGate: sharedGate)
        layer.expertCapacity = expertCapacity
        layer.expertPrecision = expertPrecision
        return layer
    }

    private func gateRule(path: String, experts: Int, topK: Int, given: Set<String>) throws(JSONFieldError) -> GateRule {
        var rule = GateRule(score: score, normalization: normalization, scalingFactor: Float(scalingFactor))
        guard let groups else {
            if given.contains("top_groups") || given.contains("group_score") {
                throw JSONFieldError(path: "\(path).groups", problem: "top_groups and group_score need groups")
            }
            return rule
        }
        guard groups >= 1, groups <= experts, experts % groups == 0 else {
            throw JSONFieldError(path: "\(path).groups", problem: "must divide the layer's \(experts) experts into equal groups, got \(groups)")
        }
        let topGroups = self.topGroups ?? groups
        guard (1...groups).contains(topGroups) else {
            throw JSONFieldError(path: "\(path).top_groups", problem: "must be in 1...\(groups) (the groups), got \(topGroups)")
        }
        guard topK <= topGroups * (experts / groups) else {
            throw JSONFieldError(path: "\(path).top_groups", problem: "\(topGroups) groups of \(experts / groups) experts cannot supply top_k = \(topK) experts")
        }
        rule.selection = .groupLimited(groups: groups, topGroups: topGroups, score: groupScore)
        return rule
    }
}

/// A model file's top-level scalar fields as read (the layers, `layer_defaults` and
/// `task_experts` are structured and read by `ModelConfiguration.parse`).
struct ModelDraft {
    var name: String?
    var dModel: Int?
    var dFF: Int?
    var activation = Activation.gelu
    var norm = NormKind.layer
    var normEpsilon = LayerNorm.defaultEpsilon
    var ffnBias: Bool?
    var gluAlpha = Double(ClampedGLU().alpha)
    var gluLimit = Double(ClampedGLU().limit)
    var source: String?
    var expertPrecision = ExpertPrecision.fp32
    /// A run knob the model file still accepts (`RunConfiguration` owns it).
    var overlapDegree = OverlapDegree.fixed(1)

    static let fields: [ModelFileField<ModelDraft>] = [
        ModelFileField(key: "name", defaultText: "the file's name", meaning: "the model's name in reports", read: { (draft, json, path) throws(JSONFieldError) in
            draft.name = try JSONObjectReader.string(json, path: path)
        }, write: { $0.name.map { .string($0) } }),
        .optionalInteger("d_model", \.dModel, in: 1...ModelConfiguration.dimensionLimit, absent: "required", "hidden size"),
        .optionalInteger("d_ff", \.dFF, in: 1...ModelConfiguration.dimensionLimit, absent: "required", "expert (and default dense) FFN width"),
        ModelFileField(key: "activation", defaultText: "gelu", meaning: "relu, gelu, swiglu or clamped-glu", read: { (draft, json, path) throws(JSONFieldError) in
            let name = try JSONObjectReader.string(json, path: path)
            guard let activation = Activation(rawValue: name) else {
                throw JSONFieldError(path: path, problem: "unknown activation '\(name)' (\(Activation.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            draft.activation = activation
        }, write: { .string($0.activation.rawValue) }),  // always written: it sets ffn_bias's default
        .choice("norm", \.norm, default: .layer, noun: "norm", "the norm before each layer: layer, rms or none"),
        .number("norm_epsilon", \.normEpsilon, default: LayerNorm.defaultEpsilon, defaultText: "1e-5", check: { $0 > 0 && $0 <= 1 ? nil : "must be in (0, 1], got \($0)" },
                "the norm's ε"),
        ModelFileField(key: "ffn_bias", defaultText: "true except for swiglu", meaning: "whether FFNs carry biases", read: { (draft, json, path) throws(JSONFieldError) in
            draft.ffnBias = try JSONObjectReader.bool(json, path: path)
        }, write: { draft in draft.ffnBias.flatMap { $0 == draft.activation.hasBiasByDefault ? nil : .bool($0) } }),
        .number("glu_alpha", \.gluAlpha, default: Double(ClampedGLU().alpha), defaultText: "1.702", check: { $0.isFinite ? nil : "must be finite, got \($0)" },
                "the clamped GLU's α (GPT-OSS)"),
        .number("glu_limit", \.gluLimit, default: Double(ClampedGLU().limit), check: { $0 > 0 && $0.isFinite ? nil : "must be positive and finite, got \($0)" },
                "the clamped GLU's limit (GPT-OSS)"),
        ModelFileField(key: "source", defaultText: "none", meaning: "where the model came from (informational)", read: { (draft, json, path) throws(JSONFieldError) in
            draft.source = try JSONObjectReader.string(json, path: path)
        }, write: { $0.source.map { .string($0) } }),
        .choice("expert_precision", \.expertPrecision, default: .fp32, noun: "precision",
                "the number format of every layer's FFNs (a layer's own expert_precision wins; `--expert-precision` overrides both)"),
        ModelFileField(key: "overlap_degree", defaultText: "1", meaning: "run knob, kept for compatibility: `--overlap-degree`'s default (an integer or \"auto\")",
                       read: { (draft, json, path) throws(JSONFieldError) in
            let parsed: Result<OverlapDegree, OverlapDegreeError>
            switch json {
            case let .string(text): parsed = OverlapDegree.parse(text)
            case let .number(number) where number == number.rounded() && abs(number) < 1e9: parsed = OverlapDegree.validated(Int(number))
            default: parsed = .failure(OverlapDegreeError(detail: "must be an integer or \"auto\""))
            }
            switch parsed {
            case let .success(degree): draft.overlapDegree = degree
            case let .failure(error): throw JSONFieldError(path: path, problem: error.detail)
            }
        }, write: { draft in
            switch draft.overlapDegree {
            case .fixed(1): return nil
            case let .fixed(degree): return .number(Double(degree))
            case .auto: return .string("auto")
            }
        }),
    ]
}
