import JobControl
import ArgumentParsing
import MoE

/// `moe init-weights`: writes a model's seeded weights as a safetensors file.
struct InitWeightsCommand: JobCommand {
    static let spec = CommandSpec(
        name: "init-weights",
        summary: "Write a model's weights, generated from a seed, as a safetensors file.",
        discussion: "Tensor names and shapes: docs/MODEL.md. The values equal what 'moe run' generates from the same --seed.",
        options: [
            .value("model", "FILE", "model JSON file; default: the built-in model"),
            .value("seed", "N", default: "1", "seed of the weights"),
            .value("output", "FILE", "the safetensors file to write (written atomically)"),
        ])

    let modelPath: String?
    let seed: UInt64
    let outputPath: String

    init(options: ParsedOptions) throws(UsageError) {
        modelPath = options.string("model")
        seed = UInt64(try options.integer("seed", in: 0...Int.max) ?? 1)
        guard let output = options.string("output") else {
            throw .missingValue(command: Self.spec.name, option: "output", valueName: "FILE")
        }
        outputPath = output
    }

    func run(_ context: JobContext) throws {
        do {
            let model = try modelPath.map { path throws in try ModelConfiguration.load(path: path) } ?? .builtInDefault
            try ModelWeights.writeSeeded(model, seed: seed, to: outputPath)
            let count = ModelWeights.tensorShapes(model).reduce(0) { $0 + $1.shape.reduce(1, *) }
            print("wrote \(outputPath): \(ModelWeights.tensorShapes(model).count) tensors, \(count) parameters (seed \(seed))")
        } catch {
            throw JobFailure(message: "\(error)", reportingRank: 0)
        }
    }
}
