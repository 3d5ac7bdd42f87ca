import FileFormats
import RandomStreams

/// One layer's parameters as one rank holds them: the norm, gate, shared expert and dense FFN
/// (every rank) and the experts of its expert slots only (`slotExperts`).
package struct LayerWeights: Sendable {
    package var norm: TokenNorm
    /// `[dModel, E]` row-major (empty for a dense layer).
    package var gate: [Float]
    /// The gate's learned bias `[E]` (added to the logits), or empty.
    package var gateBias: [Float] = []
    /// The selection-only bias `[E]` (added to the scores to choose experts), or empty.
    package var selectionBias: [Float] = []
    /// The shared expert (every rank), nil when the layer has none.
    package var shared: ExpertWeights?
    /// The shared expert's gate vector `[dModel]` (σ(x·w) scales its output), or empty.
    package var sharedGate: [Float] = []
    /// A dense layer's FFN (every rank); nil for MoE layers.
    package var dense: ExpertWeights?
    /// The logical expert in each of this rank's expert slots, in slot order (`ExpertSlots`).
    package var slotExperts: [Int]
    /// `experts[i]` is expert `slotExperts[i]`.
    package var experts: [ExpertWeights]
    /// The dense MLP and coefficient of a residual layer (every rank holds them); nil otherwise.
    package var residual: ResidualWeights?

    /// The weights of logical expert `index`, which one of the slots must hold.
    package func expert(_ index: Int) -> ExpertWeights { experts[slotExperts.firstIndex(of: index)!] }
}

/// Why weights could not be had.
package enum WeightsError: Error, Equatable, CustomStringConvertible {
    case file(SafetensorsError)
    /// `file` is the weights file, nil for seeded weights.
    case nonFinite(tensor: String, file: String?)

    package var description: String {
        switch self {
        case let .file(error): return "\(error)"
        case let .nonFinite(tensor, file): return (file.map { "\($0): " } ?? "") + "tensor '\(tensor)' holds NaN or infinite values"
        }
    }
}

/// Tensor names and shapes of a model's weights (the safetensors file layout), seeded
/// initialisation, and loading of a rank's share.
///
/// Names: `layers.{l}.norm.scale` and `layers.{l}.norm.shift` `[dModel]`;
/// `layers.{l}.gate.weight` `[dModel, E]`; `layers.{l}.experts.{e}.w1` `[dModel, dFF]`,
/// `.w2` `[dFF, dModel]`, and `.b1` `[dFF]`, `.b2` `[dModel]` (relu, gelu) or `.w3`
/// `[dModel, dFF]` (swiglu). Residual layers add `layers.{l}.dense.{w1,w2,b1,b2 | w3}` (the
/// dense MLP, an expert's shapes), `layers.{l}.coefficient.weight` `[dModel, 2]` and
/// `layers.{l}.coefficient.bias` `[2]`. All float32, row-major.
package enum ModelWeights {
    /// The norm tensors of a layer: scale and shift (LayerNorm), scale (RMSNorm), none.
    package static func normTensorShapes(_ model: ModelConfiguration, layer index: Int) -> [(name: String, shape: [Int])] {
        switch model.norm {
        case .layer: return [("layers.\(index).norm.scale", [model.dModel]), ("layers.\(index).norm.shift", [model.dModel])]
        case .rms: return [("layers.\(index).norm.scale", [model.dModel])]
        case .none: return []
        }
    }

    /// Every tensor of the model, in file order.
    package static func tensorShapes(_ model: ModelConfiguration) -> [(name: String, shape: [Int])] {
        var shapes: [(String, [Int])] = []
        for (index, layer) in model.layers.enumerated() {
            let prefix = "layers.\(index)"
            shapes += normTensorShapes(model, layer: index)
            if layer.dense {
                for (suffix, shape) in model.form(.dense, layer: index).tensorShapes(dModel: model.dModel) { shapes.append(("\(prefix).dense.\(suffix)", shape)) }
                continue
            }
            shapes.append(("\(prefix).gate.weight", [model.dModel, layer.experts]))
            if layer.routerBias { shapes.append(("\(prefix).gate.bias", [layer.experts])) }
            if layer.selectionBias { shapes.append(("\(prefix).gate.selection_bias", [layer.experts])) }
            let expertShapes = model.form(.expert, layer: index).tensorShapes(dModel: model.dModel)
            for expert in 0..<layer.experts {
                for (suffix, shape) in expertShapes { shapes.append(("\(prefix).experts.\(expert).\(suffix)", shape)) }
            }
            if layer.sharedDFF > 0 {
                for (suffix, shape) in model.form(.shared, layer: index).tensorShapes(dModel: model.dModel) { shapes.append(("\(prefix).shared.\(suffix)", shape)) }
                if layer.sharedGate { shapes.append(("\(prefix).shared_gate.weight", [model.dModel])) }
            }
            if layer.residual {
                for (suffix, shape) in model.form(.dense, layer: index).tensorShapes(dModel: model.dModel) { shapes.append(("\(prefix).dense.\(suffix)", shape)) }
                shapes += [("\(prefix).coefficient.weight", [model.dModel, 2]), ("\(prefix).coefficient.bias", [2])]
            }
        }
        return shapes
    }

    /// The seeded value of one tensor: depends only on (seed, name), so any rank can make its
    /// own share and `moe init-weights` writes the same numbers. Weights are uniform with
    /// variance 1/fan-in; biases and norm shifts uniform in ±0.1; norm scales 1 ± 0.1.
    package static func seededTensor(name: String, shape: [Int], seed: UInt64) -> [Float] {
        var random = SeededGenerator(seed: seed, stream: fnv1a(name))
        let count = shape.reduce(1, *)
        let suffix = name.split(separator: ".").last.map(String.init) ?? name
        let amplitude: Float
        var offset: Float = 0
        switch suffix {
        case "scale": amplitude = 0.1; offset = 1
        case "shift", "b1", "b2", "b3", "bias", "selection_bias": amplitude = 0.1
        default: amplitude = (3 / Float(shape[0])).squareRoot()
        }
        return (0..<count).map { _ in offset + amplitude * random.nextSignedUnitFloat() }
    }

    /// 64-bit FNV-1a of a string: a stable stream number per tensor name.
    package static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        return hash
    }

    /// A rank's share of the weights: every layer's norm and gate (and a residual layer's dense
    /// MLP and coefficient), and the experts `held(l)` of each layer (in slot order), from the
    /// seed or from a safetensors file (reading only those tensors).
    package static func load(
        _ model: ModelConfiguration, heldExperts held: (Int) -> [Int], seed: UInt64, file: SafetensorsReader?
    ) throws(WeightsError) -> [LayerWeights] {
        func tensor(_ name: String, _ shape: [Int]) throws(WeightsError) -> [Float] {
            let values: [Float]
            if let file {
                do { values = try file.readFloat32(name, shape: shape) } catch { throw .file(error) }
            } else {
                values = seededTensor(name: name, shape: shape, seed: seed)
            }
            guard values.allSatisfy(\.isFinite) else { throw .nonFinite(tensor: name, file: file?.path) }
            return values
        }
        var layers: [LayerWeights] = []
        for (index, layer) in model.layers.enumerated() {
            let prefix = "layers.\(index)"
            let norm: TokenNorm
            switch model.norm {
            case .layer:
                norm = .layer(LayerNorm(scale: try tensor("\(prefix).norm.scale", [model.dModel]),
                                        shift: try tensor("\(prefix).norm.shift", [model.dModel]), epsilon: model.normEpsilon))
            case .rms: norm = .rms(RMSNorm(scale: try tensor("\(prefix).norm.scale", [model.dModel]), epsilon: model.normEpsilon))
            case .none: norm = .none
            }
            func ffn(_ name: String, _ form: FFNForm) throws(WeightsError) -> ExpertWeights {
                var parts: [String: [Float]] = [:]
                for (suffix, shape) in form.tensorShapes(dModel: model.dModel) { parts[suffix] = try tensor("\(name).\(suffix)", shape) }
                return ExpertWeights(w1: parts["w1"]!, b1: parts["b1"] ?? [], w2: parts["w2"]!, b2: parts["b2"] ?? [], w3: parts["w3"] ?? [],
                                     b3: parts["b3"] ?? [])
            }
            if layer.dense {
                var weights = LayerWeights(norm: norm, gate: [], slotExperts: [], experts: [], residual: nil)
                weights.dense = try ffn("\(prefix).dense", model.form(.dense, layer: index))
                layers.append(weights)
                continue
            }
            let gate = try tensor("\(prefix).gate.weight", [model.dModel, layer.experts])
            var experts: [ExpertWeights] = []
            let slotExperts = held(index)
            for expert in slotExperts { experts.append(try ffn("\(prefix).experts.\(expert)", model.form(.expert, layer: index))) }
            var residual: ResidualWeights?
            if layer.residual {
                residual = ResidualWeights(dense: try ffn("\(prefix).dense", model.form(.dense, layer: index)),
                                           coefficientWeight: try tensor("\(prefix).coefficient.weight", [model.dModel, 2]),
                                           coefficientBias: try tensor("\(prefix).coefficient.bias", [2]))
            }
            var weights = LayerWeights(norm: norm, gate: gate, slotExperts: slotExperts, experts: experts, residual: residual)
            if layer.routerBias { weights.gateBias = try tensor("\(prefix).gate.bias", [layer.experts]) }
            if layer.selectionBias { weights.selectionBias = try tensor("\(prefix).gate.selection_bias", [layer.experts]) }
            if layer.sharedDFF > 0 {
                weights.shared = try ffn("\(prefix).shared", model.form(.shared, layer: index))
                if layer.sharedGate { weights.sharedGate = try tensor("\(prefix).shared_gate.weight", [model.dModel]) }
            }
            layers.append(weights)
        }
        return layers
    }

    /// Writes the whole model's seeded weights as a safetensors file (atomically).
    package static func writeSeeded(_ model: ModelConfiguration, seed: UInt64, to path: String) throws(FileAccessError) {
        let tensors = tensorShapes(model).map { ($0.name, $0.shape, seededTensor(name: $0.name, shape: $0.shape, seed: seed)) }
        try SafetensorsWriter.write(tensors, metadata: ["format": "swiftmoe", "model": model.name, "seed": String(seed)], to: path)
    }
}
