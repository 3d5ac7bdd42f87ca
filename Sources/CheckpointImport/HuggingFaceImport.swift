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

/// One architecture family's mapping from a Hugging Face checkpoint to SwiftMoE, in a file of
/// its own under `Architectures/`. To add an architecture: a type conforming to this protocol
/// (for decoder MoE models, to `DecoderMoEFamily`, which only states the router rule, the dense
/// layers, widths, shared experts and tensor names) and one entry in `HuggingFaceImport.families`.
protocol ArchitectureFamily {
    /// The config's `model_type`s this family maps.
    static var modelTypes: [String] { get }
    /// Whether a checkpoint of `modelType` quantised so is read (dequantised on import).
    static func reads(_ quantisation: HuggingFaceCheckpoint.Quantisation, modelType: String) -> Bool
    /// The model and its tensors; with `ffnOnly`, the MoE layers alone (no decoder section).
    static func importModel(_ checkpoint: HuggingFaceCheckpoint, modelType: String, ffnOnly: Bool) throws(ImportError) -> ImportedModel
}

extension ArchitectureFamily {
    static func reads(_ quantisation: HuggingFaceCheckpoint.Quantisation, modelType: String) -> Bool { quantisation == .none }
}

/// Hugging Face MoE architectures: each decoder layer's `post_attention_layernorm` and its
/// sparse MoE block (or dense MLP), as SwiftMoE layers `h ← h + FFN_l(RMSNorm_l(h))`, and — for
/// the families whose attention SwiftMoE runs (`DecoderAttentionImport`) — the decoder around
/// them: embeddings, input norms and attention, the final norm and the LM head. The mapping per
/// architecture is in docs/MODEL.md; the routing rules it selects are in docs/ROUTING.md.
package enum HuggingFaceImport {
    /// Every family, one registration each (computed: a stored array of metatypes is not Sendable).
    static var families: [any ArchitectureFamily.Type] { [
        MixtralFamily.self, QwenMoEFamily.self, OLMoEFamily.self, DeepSeekFamily.self, GPTOSSFamily.self, SwitchTransformersFamily.self,
    ] }

    /// The `model_type`s this importer maps.
    package static let supportedTypes = families.flatMap { $0.modelTypes }

    /// The checkpoint as a SwiftMoE model: the MoE layers, and (unless `ffnOnly`, and where
    /// SwiftMoE runs the family's attention) the decoder around them.
    package static func run(_ checkpoint: HuggingFaceCheckpoint, ffnOnly: Bool = false) throws(ImportError) -> ImportedModel {
        let configPath = "\(checkpoint.directory)/config.json"
        guard let modelType = try checkpoint.optionalString("model_type") else {
            throw ImportError("\(configPath): missing field 'model_type' (supported: \(supportedTypes.joined(separator: ", ")))")
        }
        guard let family = families.first(where: { $0.modelTypes.contains(modelType) }) else {
            throw ImportError("\(configPath): model_type '\(modelType)' is not supported (supported: \(supportedTypes.joined(separator: ", ")))")
        }
        guard family.reads(checkpoint.quantisation, modelType: modelType) else {
            let readable = families.flatMap { family in
                family.modelTypes.flatMap { type in
                    [HuggingFaceCheckpoint.Quantisation.fp8(blockRows: 128, blockColumns: 128), .mxfp4]
                        .filter { family.reads($0, modelType: type) }.map { "\($0.name.lowercased()) is read for \(type)" }
                }
            }
            throw checkpoint.unsupported("quantization_config", "\(checkpoint.quantisation.name) checkpoints of \(modelType) are not supported (\(readable.joined(separator: ", ")))")
        }
        return try family.importModel(checkpoint, modelType: modelType, ffnOnly: ffnOnly)
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
        guard !left.isEmpty else { return [] }
        return ["not imported: \(left.count) tensors — " + describeIgnored(left)]
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

