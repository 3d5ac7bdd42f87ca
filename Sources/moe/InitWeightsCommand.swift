import JobControl
import ArgumentParsing
import MoE

/// `moe init-weights`: writes a model's seeded weights as a safetensors file.
struct InitWeightsCommand: JobCommand {
    static let spec = CommandSpec(
        name: "init-weights",
        summary: "Write a model's weights, generated from a seed, as a safetensors file.",
        discussion: "Tensor names and shapes: docs/MODEL.md. The values equal what 'moe run' generates from the same --seed.",
        options: [Options.model.spec, Options.seed.spec, Options.output.spec])

    enum Options {
        static let model = TypedOption<String?>.string("model", "FILE", "model JSON file; default: the built-in model")
        static let seed = TypedOption<UInt64>.seed(default: 1, "seed of the weights")
        static let output = TypedOption<String>.required("output", "FILE", "the safetensors file to write (written atomically)")
    }

    let modelPath: String?
    let seed: UInt64
    let outputPath: String

    init(options: ParsedOptions) throws(UsageError) {
        modelPath = try options.value(Options.model)
        seed = try options.value(Options.seed)
        outputPath = try options.value(Options.output)
    }

    func run(_ context: JobContext) throws {
        try context.checkPaths(outputs: [Options.output.naming(outputPath)], inputs: [Options.model.naming(modelPath)])
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
