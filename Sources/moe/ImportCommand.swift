import Glibc
import ArgumentParsing
import CheckpointImport
import FileFormats
import JobControl
import MoE

/// `moe import-hf CHECKPOINT_DIR --output OUT_DIR`: the MoE half of a Hugging Face checkpoint
/// as a SwiftMoE model file and weights (docs/MODEL.md, "Hugging Face checkpoints").
struct ImportCommand: JobCommand {
    static let spec = CommandSpec(
        name: "import-hf",
        summary: "Import a Hugging Face MoE checkpoint (the feed-forward half of each decoder layer) as a SwiftMoE model.",
        discussion: """
            CHECKPOINT_DIR holds config.json and model.safetensors, or model.safetensors.index.json and its shards; \
            tensors in F32, BF16 or F16. Writes OUT_DIR/model.json and OUT_DIR/weights.safetensors (float32); nothing \
            is written unless the whole import succeeds. Layer l becomes h ← h + FFN_l(RMSNorm_l(h)) with that decoder \
            layer's post_attention_layernorm and its sparse MoE block or dense MLP; attention, embeddings, the final \
            norm and the LM head are not imported. Architectures: \(HuggingFaceImport.supportedTypes.joined(separator: ", ")).
            """,
        options: [Options.output.spec],
        positional: "CHECKPOINT_DIR")

    enum Options {
        static let output = TypedOption<String>.required("output", "OUT_DIR", "folder for model.json and weights.safetensors (created if missing)")
    }

    let checkpointPath: String
    let outputDirectory: String

    init(options: ParsedOptions) throws(UsageError) {
        guard options.positional.count == 1, let path = options.positional.first else {
            throw .conflict(command: "import-hf", detail: "give exactly one checkpoint directory (moe import-hf CHECKPOINT_DIR --output OUT_DIR), got \(options.positional.count)")
        }
        checkpointPath = path
        outputDirectory = try options.value(Options.output)
    }

    func run(_ context: JobContext) throws {
        let modelPath = "\(outputDirectory)/model.json"
        let weightsPath = "\(outputDirectory)/weights.safetensors"
        let kind = FileKind.of(outputDirectory)
        guard kind == .directory || kind == .missing else {
            throw JobFailure(message: "--output \(outputDirectory): exists and is \(kind.phrase), not a folder", reportingRank: 0)
        }
        do {
            // Everything is read, converted and checked in memory first; files are written last.
            let checkpoint = try HuggingFaceCheckpoint(directory: checkpointPath)
            let imported = try HuggingFaceImport.run(checkpoint)
            for line in imported.summary { print(line) }
            for line in imported.ignored { print(line) }
            if kind == .missing, mkdir(outputDirectory, 0o777) != 0 {
                throw ImportError("--output \(outputDirectory): cannot be created: \(String(cString: strerror(errno)))")
            }
            let parameters = imported.tensors.reduce(0) { $0 + $1.values.count }
            try SafetensorsWriter.write(imported.tensors, metadata: ["format": "swiftmoe", "model": imported.model.name,
                                                                    "source": imported.model.origin ?? ""], to: weightsPath)
            try AtomicFileWriter.write(imported.model.document().serialized() + "\n", to: modelPath)
            print("wrote \(modelPath) and \(weightsPath): \(imported.tensors.count) tensors, \(parameters) parameters")
        } catch {
            throw JobFailure(message: "\(error)", reportingRank: 0)
        }
    }
}
