import Foundation
import ArgumentParsing
import CheckpointImport
import FileFormats
import JobControl
import MoE
import Tokenizer

/// `moe import-hf CHECKPOINT_DIR --output OUT_DIR`: the MoE half of a Hugging Face checkpoint
/// as a SwiftMoE model file and weights (docs/MODEL.md, "Hugging Face checkpoints").
struct ImportCommand: JobCommand {
    static let spec = CommandSpec(
        name: "import-hf",
        summary: "Import a Hugging Face MoE checkpoint as a SwiftMoE model (its MoE layers, and the decoder around them for moe generate).",
        discussion: """
            CHECKPOINT_DIR holds config.json and model.safetensors, or model.safetensors.index.json and its shards; \
            tensors in F32, BF16 or F16. Writes OUT_DIR/model.json and OUT_DIR/weights.safetensors (float32); nothing \
            is written unless the whole import succeeds. Layer l becomes h ← h + FFN_l(RMSNorm_l(h)) with that decoder \
            layer's post_attention_layernorm and its sparse MoE block or dense MLP. For mixtral, qwen2_moe, qwen3_moe \
            and olmoe it also imports the decoder around them (embeddings, each layer's input norm and attention, the \
            final norm, the LM head: a "decoder" section in model.json, for moe generate); --ffn-only leaves it out. \
            Architectures: \(HuggingFaceImport.supportedTypes.joined(separator: ", ")).
            """,
        options: [Options.output.spec, Options.ffnOnly.spec],
        positional: "CHECKPOINT_DIR")

    enum Options {
        static let output = TypedOption<String>.required("output", "OUT_DIR", "folder for model.json and weights.safetensors (created if missing)")
        static let ffnOnly = TypedOption<Bool>.flag("ffn-only", "import only the MoE layers (no embeddings, attention or LM head: the model moe run and moe reference take)")
    }

    let checkpointPath: String
    let outputDirectory: String
    let ffnOnly: Bool

    init(options: ParsedOptions) throws(UsageError) {
        checkpointPath = try options.singlePositional("checkpoint directory (moe import-hf CHECKPOINT_DIR --output OUT_DIR)")
        outputDirectory = try options.value(Options.output)
        ffnOnly = try options.value(Options.ffnOnly)
    }

    func run(_ context: JobContext) throws {
        let kind = FileKind.of(outputDirectory)
        guard kind == .directory || kind == .missing else {
            throw JobFailure(message: "--output \(outputDirectory): exists and is \(kind.phrase), not a folder", reportingRank: 0)
        }
        do {
            // Everything is read, converted and checked in memory first; then both files are
            // written into a staging folder beside OUT_DIR and moved in by rename.
            let checkpoint = try HuggingFaceCheckpoint(directory: checkpointPath)
            let imported = try HuggingFaceImport.run(checkpoint, ffnOnly: ffnOnly)
            for line in imported.summary { print(line) }
            for line in imported.ignored { print(line) }
            let parameters = imported.tensors.reduce(0) { $0 + $1.values.count }
            // The checkpoint's tokenizer.json travels along (moe generate --prompts reads it), if usable.
            let tokenizerPath = "\(checkpointPath)/tokenizer.json"
            var tokenizerBytes: [UInt8]?
            if FileKind.of(tokenizerPath) == .regular, imported.model.decoder != nil {
                do {
                    let tokenizer = try Tokenizer.load(path: tokenizerPath)
                    tokenizerBytes = try BoundedFileReader.read(tokenizerPath, limit: 1 << 30)
                    print("tokenizer: \(tokenizer.kind), \(tokenizer.count) tokens (copied as tokenizer.json)")
                } catch {
                    print("tokenizer: not copied — \(error); moe generate takes token ids (--prompt-ids)")
                }
            }
            try Self.publish(into: outputDirectory, exists: kind == .directory) { staging throws in
                try SafetensorsWriter.write(imported.tensors, metadata: ["format": "swiftmoe", "model": imported.model.name,
                                                                        "source": imported.model.origin ?? ""], to: "\(staging)/weights.safetensors")
                try AtomicFileWriter.write(imported.model.document().serialized() + "\n", to: "\(staging)/model.json")
                if let tokenizerBytes { try Data(tokenizerBytes).write(to: URL(fileURLWithPath: "\(staging)/tokenizer.json")) }
            }
            print("wrote \(outputDirectory)/model.json and \(outputDirectory)/weights.safetensors: \(imported.tensors.count) tensors, \(parameters) parameters")
        } catch {
            throw JobFailure(message: "\(error)", reportingRank: 0)
        }
    }

    /// Runs `write` on a staging folder `.NAME.partial-PID` beside `directory`, then moves its
    /// files in: the whole staging folder by one rename when `directory` does not exist, else
    /// each file by rename (replacing files of the same name). On any failure the staging folder
    /// is removed and `directory` is untouched.
    static func publish(into directory: String, exists: Bool, _ write: (String) throws -> Void) throws {
        let trimmed = directory.hasSuffix("/") && directory.count > 1 ? String(directory.dropLast()) : directory
        let parent = trimmed.contains("/") ? String(trimmed[..<trimmed.lastIndex(of: "/")!]) : "."
        let name = trimmed.split(separator: "/").last.map(String.init) ?? trimmed
        let staging = "\(parent.isEmpty ? "/" : parent)/.\(name).partial-\(getpid())"
        func removeStaging() {
            if let entries = try? FileManager.default.contentsOfDirectory(atPath: staging) {
                for entry in entries { unlink("\(staging)/\(entry)") }
            }
            rmdir(staging)
        }
        removeStaging()
        guard mkdir(staging, 0o777) == 0 else {
            throw ImportError("--output \(directory): cannot create \(staging): \(String(cString: strerror(errno)))")
        }
        do {
            try write(staging)
            if !exists {
                guard rename(staging, trimmed) == 0 else {
                    throw ImportError("--output \(directory): cannot be created: \(String(cString: strerror(errno)))")
                }
                return
            }
            for file in try FileManager.default.contentsOfDirectory(atPath: staging).sorted() {
                guard rename("\(staging)/\(file)", "\(trimmed)/\(file)") == 0 else {
                    throw ImportError("--output \(directory)/\(file): cannot be written: \(String(cString: strerror(errno)))")
                }
            }
            removeStaging()
        } catch {
            removeStaging()
            throw error
        }
    }
}
