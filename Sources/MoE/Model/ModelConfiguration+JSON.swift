import FileFormats

extension ModelConfiguration {
    /// The model as a model file (docs/MODEL.md) that `ModelConfiguration.parse` reads back to an
    /// equal value: every layer written out in full (no `layer_defaults`), fields at their
    /// defaults left out.
    package func document() -> JSONValue {
        var members: [(key: String, value: JSONValue)] = [
            ("name", .string(name)), ("d_model", .number(Double(dModel))), ("d_ff", .number(Double(dFF))),
            ("activation", .string(activation.rawValue)),
        ]
        if norm != .layer { members.append(("norm", .string(norm.rawValue))) }
        if normEpsilon != LayerNorm.defaultEpsilon { members.append(("norm_epsilon", .number(normEpsilon))) }
        if ffnBias != activation.hasBiasByDefault { members.append(("ffn_bias", .bool(ffnBias))) }
        if activation == .clampedGLU {
            members += [("glu_alpha", .number(Double(glu.alpha))), ("glu_limit", .number(Double(glu.limit)))]
        }
        if let origin { members.append(("source", .string(origin))) }
        switch overlapDegree {
        case .fixed(1): break
        case let .fixed(degree): members.append(("overlap_degree", .number(Double(degree))))
        case .auto: members.append(("overlap_degree", .string("auto")))
        }
        members.append(("layers", .array(layers.map(Self.layerDocument))))
        if !taskExperts.isEmpty {
            members.append(("task_experts", .object(taskExperts.sorted { $0.key < $1.key }.map {
                (String($0.key), .array($0.value.map { .number(Double($0)) }))
            })))
        }
        return .object(members)
    }

    private static func layerDocument(_ layer: LayerConfiguration) -> JSONValue {
        if layer.dense {
            return .object([("dense", .bool(true))] + (layer.denseDFF.map { [("dense_d_ff", .number(Double($0)))] } ?? []))
        }
        var members: [(key: String, value: JSONValue)] = [
            ("experts", .number(Double(layer.experts))), ("top_k", .number(Double(layer.topK))),
            ("capacity_factor", .number(layer.capacityFactor)), ("min_capacity", .number(Double(layer.minCapacity))),
            ("drop_policy", .string(layer.dropPolicy.rawValue)),
        ]
        if let fixed = layer.expertCapacity { members.append(("expert_capacity", .number(Double(fixed)))) }
        if layer.priority != .max { members.append(("priority", .string(layer.priority.rawValue))) }
        if layer.residual { members.append(("residual", .bool(true))) }
        if let width = layer.expertDFF { members.append(("expert_d_ff", .number(Double(width)))) }
        if layer.sharedDFF > 0 { members.append(("shared_d_ff", .number(Double(layer.sharedDFF)))) }
        if layer.sharedGate { members.append(("shared_gate", .bool(true))) }
        let rule = layer.gateRule
        if rule.score != .softmax { members.append(("score", .string(rule.score.rawValue))) }
        if rule.normalization != .survivors { members.append(("normalize_top_k", .string(rule.normalization.rawValue))) }
        if rule.scalingFactor != 1 { members.append(("scaling_factor", .number(Double(rule.scalingFactor)))) }
        if case let .groupLimited(groups, topGroups, score) = rule.selection {
            members += [("groups", .number(Double(groups))), ("top_groups", .number(Double(topGroups))), ("group_score", .string(score.rawValue))]
        }
        if layer.routerBias { members.append(("router_bias", .bool(true))) }
        if layer.selectionBias { members.append(("selection_bias", .bool(true))) }
        return .object(members)
    }
}
