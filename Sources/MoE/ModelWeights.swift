import FileFormats
import RandomStreams

/// One layer's parameters as one rank holds them: the norm and gate (every rank) and the
/// experts in `heldExperts` only.
package struct LayerWeights: Sendable {
    package var norm: LayerNorm
    /// `[dModel, E]` row-major.
    package var gate: [Float]
    package var heldExperts: Range<Int>
    /// `experts[i]` is expert `heldExperts.lowerBound + i`.
    package var experts: [ExpertWeights]
    /// The dense MLP and coefficient of a residual layer (every rank holds them); nil otherwise.
    package var residual: ResidualWeights?

    package func expert(_ index: Int) -> ExpertWeights { experts[index - heldExperts.lowerBound] }
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
    package static func expertTensorShapes(_ model: ModelConfiguration) -> [(suffix: String, shape: [Int])] {
        var shapes: [(String, [Int])] = [("w1", [model.dModel, model.dFF]), ("w2", [model.dFF, model.dModel])]
        if model.activation == .swiglu {
            shapes.append(("w3", [model.dModel, model.dFF]))
        } else {
            shapes += [("b1", [model.dFF]), ("b2", [model.dModel])]
        }
        return shapes
    }

    /// Every tensor of the model, in file order.
    package static func tensorShapes(_ model: ModelConfiguration) -> [(name: String, shape: [Int])] {
        var shapes: [(String, [Int])] = []
        for (index, layer) in model.layers.enumerated() {
            shapes += [("layers.\(index).norm.scale", [model.dModel]), ("layers.\(index).norm.shift", [model.dModel]),
                       ("layers.\(index).gate.weight", [model.dModel, layer.experts])]
            for expert in 0..<layer.experts {
                for (suffix, shape) in expertTensorShapes(model) { shapes.append(("layers.\(index).experts.\(expert).\(suffix)", shape)) }
            }
            if layer.residual {
                for (suffix, shape) in expertTensorShapes(model) { shapes.append(("layers.\(index).dense.\(suffix)", shape)) }
                shapes += [("layers.\(index).coefficient.weight", [model.dModel, 2]), ("layers.\(index).coefficient.bias", [2])]
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
        case "shift", "b1", "b2", "bias": amplitude = 0.1
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
    /// MLP and coefficient), and the experts `held(l)` of each layer, from the seed or from a
    /// safetensors file (reading only those tensors).
    package static func load(
        _ model: ModelConfiguration, heldExperts held: (Int) -> Range<Int>, seed: UInt64, file: SafetensorsReader?
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
            let norm = LayerNorm(scale: try tensor("\(prefix).norm.scale", [model.dModel]),
                                 shift: try tensor("\(prefix).norm.shift", [model.dModel]))
            let gate = try tensor("\(prefix).gate.weight", [model.dModel, layer.experts])
            func ffn(_ name: String) throws(WeightsError) -> ExpertWeights {
                var parts: [String: [Float]] = [:]
                for (suffix, shape) in expertTensorShapes(model) { parts[suffix] = try tensor("\(name).\(suffix)", shape) }
                return ExpertWeights(w1: parts["w1"]!, b1: parts["b1"] ?? [], w2: parts["w2"]!, b2: parts["b2"] ?? [], w3: parts["w3"] ?? [])
            }
            var experts: [ExpertWeights] = []
            let range = held(index)
            for expert in range { experts.append(try ffn("\(prefix).experts.\(expert)")) }
            var residual: ResidualWeights?
            if layer.residual {
                residual = ResidualWeights(dense: try ffn("\(prefix).dense"),
                                           coefficientWeight: try tensor("\(prefix).coefficient.weight", [model.dModel, 2]),
                                           coefficientBias: try tensor("\(prefix).coefficient.bias", [2]))
            }
            layers.append(LayerWeights(norm: norm, gate: gate, heldExperts: range, experts: experts, residual: residual))
        }
        return layers
    }

    /// Writes the whole model's seeded weights as a safetensors file (atomically).
    package static func writeSeeded(_ model: ModelConfiguration, seed: UInt64, to path: String) throws(FileAccessError) {
        let tensors = tensorShapes(model).map { ($0.name, $0.shape, seededTensor(name: $0.name, shape: $0.shape, seed: seed)) }
        try SafetensorsWriter.write(tensors, metadata: ["format": "swiftmoe", "model": model.name, "seed": String(seed)], to: path)
    }
}
