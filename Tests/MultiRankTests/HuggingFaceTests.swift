import FileFormats
import Exchange
import Foundation
import Testing

/// The Hugging Face fixtures (Tests/Fixtures/make_hf.py writes them with transformers): each
/// holds a tiny checkpoint, `input.npy`, `expected.npy` (transformers' output of the stacked FFN
/// halves) and `routing.json` (each MoE layer's top-k choices per token).
let huggingFaceFixtures = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "gpt_oss", "switch_transformers",
                           "deepseek_v3_fp8", "gpt_oss_mxfp4"]

/// `--sequence-length S` for fixtures whose capacity is per sequence (Switch), else nothing.
func sequenceArguments(_ name: String) throws -> [String] {
    let document = try readJSONObject("\(repositoryRoot)/Tests/Fixtures/hf/\(name)/routing.json")
    return (document["sequence_length"] as? Int).map { ["--sequence-length", "\($0)"] } ?? []
}

/// Imports fixture `name` into `scratch` and returns the model and weights paths.
func importFixture(_ name: String, into scratch: ScratchDirectory) throws -> (model: String, weights: String, output: String) {
    let folder = scratch.file("imported-\(name)")
    let result = try runMoe(["import-hf", "Tests/Fixtures/hf/\(name)", "--output", folder])
    try #require(result.status == 0, "import of \(name) failed: \(result.stderr)")
    return ("\(folder)/model.json", "\(folder)/weights.safetensors", result.stdout)
}

/// The routing fixture: per layer, nil for a dense layer, else each token's chosen experts
/// (sorted; Switch's dropped tokens have [-1]).
func expectedRouting(_ name: String) throws -> [[[Int]]?] {
    let document = try readJSONObject("\(repositoryRoot)/Tests/Fixtures/hf/\(name)/routing.json")
    let layers = try #require(document["layers"] as? [Any])
    return layers.map { $0 as? [[Int]] }
}

/// Each token's chosen experts per layer from a `--routing-output` file, ranks in order (tokens
/// in global order), sorted per token; nil for layers that route nothing.
func routedChoices(_ path: String) throws -> [[[Int]]?] {
    let document = try readJSONObject(path)
    let layers = try #require(document["layers"] as? [[String: Any]])
    return try layers.map { layer -> [[Int]]? in
        var tokens: [[Int]] = []
        for rank in try #require(layer["ranks"] as? [[String: Any]]) {
            let count = try #require(rank["tokens"] as? Int)
            let experts = try #require(rank["expert"] as? [Int])
            guard count > 0, !experts.isEmpty else { continue }
            let k = experts.count / count
            for token in 0..<count { tokens.append((0..<k).map { experts[$0 * count + token] }.sorted()) }
        }
        return tokens.isEmpty ? nil : tokens
    }
}

/// Expects `actual` within 1e-4 of max|expected| of `expected` (the issue's bound).
func expectWithinImportBound(_ actual: [Float], _ expected: [Float], _ context: String) {
    #expect(actual.count == expected.count, "\(context): \(actual.count) vs \(expected.count) values")
    let scale = expected.map { abs($0) }.max() ?? 1
    let worst = zip(actual, expected).map { abs($0 - $1) }.max() ?? 0
    #expect(worst <= 1e-4 * scale, "\(context): largest difference \(worst), bound \(1e-4 * scale)")
}

extension MultiRankTests {
@Suite("Hugging Face checkpoints compute what transformers computes", .serialized)
struct HuggingFaceTests {
    @Test("moe import-hf then moe run equals transformers on 1, 2 and 4 ranks (2x2, every exchange) and moe reference too",
          arguments: huggingFaceFixtures)
    func importedModelMatchesTransformers(name: String) throws {
        let scratch = try ScratchDirectory()
        let (model, weights, _) = try importFixture(name, into: scratch)
        let fixture = "Tests/Fixtures/hf/\(name)"
        let expected = try #require(try NpyArray.load(path: "\(fixture)/expected.npy").float32Values)
        let routing = try expectedRouting(name)
        let sequences = try sequenceArguments(name)
        for (ranks, topology) in [(1, nil), (2, nil), (4, "Topologies/2x2.json")] as [(Int, String?)] {
            let output = scratch.file("out-\(ranks).npy"), routes = scratch.file("routing-\(ranks).json")
            var arguments = ["run", "--model", model, "--weights", weights, "--input", "\(fixture)/input.npy", "--steps", "1",
                             "--exchange", "all", "--quiet", "--output", output, "--routing-output", routes] + sequences
            if let topology { arguments += ["--topology", topology] }
            let job = try runMPI(ranks: ranks, arguments)
            try #require(job.mpirunStatus == 0, "\(job)")
            #expect(job.ranks[0].stdout.contains("outputs identical across exchanges: " + AllToAllAlgorithm.allCases.map(\.rawValue).joined(separator: ", ")), "\(job)")
            let distributed = try #require(try NpyArray.load(path: output).float32Values)
            expectWithinImportBound(distributed, expected, "\(name) on \(ranks) ranks")
            let choices = try routedChoices(routes)
            #expect(choices.count == routing.count)
            for (layer, (got, want)) in zip(choices, routing).enumerated() {
                #expect(got == want, "\(name) on \(ranks) ranks: layer \(layer) chose other experts than transformers")
            }
            // The reference of the same job: identical routing, outputs within 1e-5 relative.
            let reference = try runMoe(["reference", "--model", model, "--weights", weights, "--input", "\(fixture)/input.npy",
                                        "--ranks", "\(ranks)", "--output", scratch.file("ref-\(ranks).npy")] + sequences)
            try #require(reference.status == 0, "\(reference.stderr)")
            let referenceOutput = try #require(try NpyArray.load(path: scratch.file("ref-\(ranks).npy")).float32Values)
            expectClose(distributed, referenceOutput, "\(name) distributed vs reference on \(ranks) ranks")
        }
    }

    @Test("bf16 and int8 experts on every imported architecture stay within the bounds measured against fp32", arguments: huggingFaceFixtures)
    func lowPrecisionBounds(name: String) throws {
        // Measured (moe reference --ranks 1 on each fixture's input, 2026-12-06, AVX2 CPU: int8 with
        // 7-bit activations): the first layer's max relative error, which no flipped route upstream
        // can inflate, was ≤ 3.5e-3 for bf16 and ≤ 2.3e-2 for int8; the mean over every layer was
        // ≤ 2.9e-2 and ≤ 8.5e-2 (the largest where routes flip: DeepSeek-V3's near-tie sigmoid
        // gates, 14 of 144 routes under int8). Bounds: ≈ 3× the first, ≈ 1.7× the second. A
        // kernel that drops a scale, a sign or a panel is off by tens of percent in the first layer.
        let scratch = try ScratchDirectory()
        let (model, weights, _) = try importFixture(name, into: scratch)
        for (precision, firstMax, mean) in [("bf16", 1e-2, 5e-2), ("int8", 7e-2, 0.15)] {
            let result = try runMoe(["reference", "--model", model, "--weights", weights, "--input", "Tests/Fixtures/hf/\(name)/input.npy",
                                     "--ranks", "1", "--expert-precision", precision] + (try sequenceArguments(name)))
            try #require(result.status == 0, "\(name) \(precision): \(result.stderr)")
            let errors = result.stdout.split(separator: "\n").filter { $0.contains("error against fp32") }.map { line -> (max: Double, mean: Double) in
                func number(after label: String) -> Double {
                    guard let range = line.range(of: label) else { return .nan }
                    return Double(line[range.upperBound...].prefix { $0 != "," && $0 != " " }) ?? .nan
                }
                return (number(after: "max "), number(after: "mean "))
            }
            try #require(!errors.isEmpty, "\(name) \(precision): no error lines\n\(result.stdout)")
            #expect(errors[0].max > 0 && errors[0].max < firstMax, "\(name) \(precision): first layer's max error \(errors[0].max)")
            for (layer, error) in errors.enumerated() {
                #expect(error.mean < mean, "\(name) \(precision): layer \(layer)'s mean error \(error.mean)")
            }
        }
    }

    @Test("imported models keep working with expert-parallel groups, capacity policies, plan caching and the coordinator's statistics")
    func runtimeFeatures() throws {
        let scratch = try ScratchDirectory()
        // Mixtral's 8 experts on 12 ranks: an expert-parallel group of 8 and an uneven one of 4.
        let mixtral = try importFixture("mixtral", into: scratch)
        let replicas = try runMPI(ranks: 12, ["run", "--model", mixtral.model, "--weights", mixtral.weights, "--input", "Tests/Fixtures/hf/mixtral/input.npy",
                                              "--steps", "1", "--exchange", "all", "--output", scratch.file("replicas.npy")])
        try #require(replicas.mpirunStatus == 0, "\(replicas)")
        #expect(replicas.ranks[0].stdout.contains("1 expert-parallel groups of 8 ranks and one of 4"), "\(replicas)")
        expectWithinImportBound(try #require(try NpyArray.load(path: scratch.file("replicas.npy")).float32Values),
                                try #require(try NpyArray.load(path: "\(repositoryRoot)/Tests/Fixtures/hf/mixtral/expected.npy").float32Values),
                                "mixtral on 12 ranks")
        // Qwen2-MoE (dense layer, shared experts; dropless): adaptive capacity and observed plan caching change nothing.
        let qwen = try importFixture("qwen2_moe", into: scratch)
        let stats = scratch.file("stats.jsonl")
        let cached = try runMPI(ranks: 4, ["run", "--model", qwen.model, "--weights", qwen.weights, "--input", "Tests/Fixtures/hf/qwen2_moe/input.npy",
                                           "--steps", "3", "--policy", "adaptive-factor", "--plan-cache", "observed", "--stats", stats,
                                           "--stats-every", "1", "--output", scratch.file("cached.npy")])
        try #require(cached.mpirunStatus == 0, "\(cached)")
        #expect(cached.ranks[0].stdout.contains("plan cache: "), "\(cached)")
        expectWithinImportBound(try #require(try NpyArray.load(path: scratch.file("cached.npy")).float32Values),
                                try #require(try NpyArray.load(path: "\(repositoryRoot)/Tests/Fixtures/hf/qwen2_moe/expected.npy").float32Values),
                                "qwen2_moe with a capacity policy and plan caching")
        let log = try String(contentsOfFile: stats, encoding: .utf8).split(separator: "\n")
        #expect(log.count >= 3, "one statistics record per step")
        // Switch (drops): the reallocate policy and capacity-mode plan caching equal the reference replaying the same plans.
        let switchModel = try importFixture("switch_transformers", into: scratch)
        let common = ["--model", switchModel.model, "--weights", switchModel.weights, "--input", "Tests/Fixtures/hf/switch_transformers/input.npy",
                      "--sequence-length", "12", "--steps", "3", "--policy", "reallocate"]
        let dropping = try runMPI(ranks: 4, ["run"] + common + ["--plan-cache", "capacity", "--exchange", "all", "--output", scratch.file("switch.npy"),
                                                              "--routing-output", scratch.file("switch.json")])
        try #require(dropping.mpirunStatus == 0, "\(dropping)")
        let reference = try runMoe(["reference"] + common + ["--ranks", "4", "--output", scratch.file("switch-ref.npy"),
                                                            "--routing-output", scratch.file("switch-ref.json")])
        try #require(reference.status == 0, "\(reference.stderr)")
        #expect(try routingDecisions(scratch.file("switch.json")) == routingDecisions(scratch.file("switch-ref.json")))
        expectClose(try #require(try NpyArray.load(path: scratch.file("switch.npy")).float32Values),
                    try #require(try NpyArray.load(path: scratch.file("switch-ref.npy")).float32Values), "switch with reallocate")
    }

    @Test("Switch Transformers: capacity per sequence; a token count that is not whole sequences is refused")
    func switchSequences() throws {
        let scratch = try ScratchDirectory()
        let (model, weights, _) = try importFixture("switch_transformers", into: scratch)
        let input = "Tests/Fixtures/hf/switch_transformers/input.npy"
        // Without --sequence-length the capacity counts the rank's whole batch: other drops, other output.
        let perRank = try runMoe(["reference", "--model", model, "--weights", weights, "--input", input, "--ranks", "1",
                                  "--output", scratch.file("batch.npy")])
        try #require(perRank.status == 0, "\(perRank.stderr)")
        let expected = try #require(try NpyArray.load(path: "\(repositoryRoot)/\(input.replacingOccurrences(of: "input", with: "expected"))").float32Values)
        let batchOutput = try #require(try NpyArray.load(path: scratch.file("batch.npy")).float32Values)
        #expect(zip(batchOutput, expected).contains { abs($0 - $1) > 1e-3 }, "capacity per batch should differ from per sequence")
        // 48 tokens are not whole sequences of 10.
        let job = try runMPI(ranks: 2, ["run", "--model", model, "--weights", weights, "--input", input, "--sequence-length", "10", "--steps", "1"])
        #expect(job.mpirunStatus != 0)
        #expect(job.ranks.contains { $0.stderr.contains("48 tokens are not a whole number of --sequence-length 10 sequences") }, "\(job)")
        let generated = try runMoe(["reference", "--model", model, "--tokens-per-rank", "20", "--sequence-length", "12"])
        #expect(generated.status == 2)
        #expect(generated.stderr.contains("--tokens-per-rank 20 is not a whole number of --sequence-length 12 sequences"), "\(generated.stderr)")
    }
}
}

/// A copy of fixture `name` in `scratch` to break on purpose.
func copyFixture(_ name: String, into scratch: ScratchDirectory) throws -> String {
    let copy = scratch.file("broken-\(name)-\(UUID().uuidString)")
    try FileManager.default.copyItem(atPath: "\(repositoryRoot)/Tests/Fixtures/hf/\(name)", toPath: copy)
    return copy
}

/// Rewrites a safetensors file's JSON header with `edit` (data offsets are relative to the data
/// section, so the header may change length).
func editSafetensorsHeader(_ path: String, _ edit: (inout [String: Any]) -> Void) throws {
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    let headerLength = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
    var header = try #require(try JSONSerialization.jsonObject(with: data.subdata(in: 8..<8 + headerLength)) as? [String: Any])
    edit(&header)
    let newHeader = try JSONSerialization.data(withJSONObject: header)
    var length = UInt64(newHeader.count).littleEndian
    var output = Data(bytes: &length, count: 8)
    output.append(newHeader)
    output.append(data.subdata(in: 8 + headerLength..<data.count))
    try output.write(to: URL(fileURLWithPath: path))
}

/// Rewrites `config.json` with `edit`.
func editConfig(_ directory: String, _ edit: (inout [String: Any]) -> Void) throws {
    let path = "\(directory)/config.json"
    var config = try readJSONObject(path)
    edit(&config)
    try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: path))
}

extension MultiRankTests {
@Suite("moe import-hf refuses bad checkpoints and writes nothing")
struct HuggingFaceImportErrorTests {
    /// Runs the import into an OUT_DIR holding an older model.json; expects exit 1, one line on
    /// stderr containing every fragment, and the old file untouched with nothing added.
    func expectRefused(_ checkpoint: String, scratch: ScratchDirectory, _ fragments: [String]) throws {
        let output = scratch.file("out-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        try "old".write(toFile: "\(output)/model.json", atomically: true, encoding: .utf8)
        let result = try runMoe(["import-hf", checkpoint, "--output", output])
        #expect(result.status == 1, "\(result.stdout)\n\(result.stderr)")
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1, "expected one line, got:\n\(result.stderr)")
        for fragment in fragments { #expect(result.stderr.contains(fragment), "'\(fragment)' missing from: \(result.stderr)") }
        #expect(try String(contentsOfFile: "\(output)/model.json", encoding: .utf8) == "old")
        #expect(try FileManager.default.contentsOfDirectory(atPath: output) == ["model.json"], "files were written to OUT_DIR")
        // And a fresh OUT_DIR is never created.
        let fresh = scratch.file("fresh-\(UUID().uuidString)")
        #expect(try runMoe(["import-hf", checkpoint, "--output", fresh]).status == 1)
        #expect(!FileManager.default.fileExists(atPath: fresh))
    }

    @Test("an unknown model_type lists the supported ones")
    func unknownModelType() throws {
        let scratch = try ScratchDirectory()
        let checkpoint = try copyFixture("mixtral", into: scratch)
        try editConfig(checkpoint) { $0["model_type"] = "jamba" }
        try expectRefused(checkpoint, scratch: scratch, ["model_type 'jamba' is not supported", "mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss"])
    }

    @Test("a missing tensor is named")
    func missingTensor() throws {
        let scratch = try ScratchDirectory()
        let checkpoint = try copyFixture("mixtral", into: scratch)
        // Rename the tensor: the data stays covered, the expected name is gone.
        try editSafetensorsHeader("\(checkpoint)/model.safetensors") { header in
            header["model.layers.1.block_sparse_moe.experts.5.w3.weight_renamed"] = header.removeValue(forKey: "model.layers.1.block_sparse_moe.experts.5.w3.weight")
        }
        try expectRefused(checkpoint, scratch: scratch, ["model.layers.1.block_sparse_moe.experts.5.w3.weight", "missing", "[24, 32]"])
    }

    @Test("a misshapen tensor is named with its expected and found shapes")
    func misshapenTensor() throws {
        let scratch = try ScratchDirectory()
        let checkpoint = try copyFixture("qwen3_moe", into: scratch)
        try editSafetensorsHeader("\(checkpoint)/model.safetensors") { header in
            var entry = header["model.layers.2.mlp.gate.weight"] as! [String: Any]
            entry["shape"] = [32, 16]
            header["model.layers.2.mlp.gate.weight"] = entry
        }
        try expectRefused(checkpoint, scratch: scratch, ["model.layers.2.mlp.gate.weight", "shape [32, 16]", "expected [16, 32]"])
    }

    @Test("a config value the runtime cannot honour is named", arguments: [
        ("hidden_act", "gelu", "'gelu' cannot be honoured"), ("n_group", 3, "must divide the 16 routed experts"),
    ] as [(String, any Sendable, String)])
    func unsupportedConfigValue(key: String, value: any Sendable, problem: String) throws {
        let scratch = try ScratchDirectory()
        let checkpoint = try copyFixture("deepseek_v3", into: scratch)
        try editConfig(checkpoint) { $0[key] = value }
        try expectRefused(checkpoint, scratch: scratch, ["config.json", "'\(key)'", problem])
    }

    @Test("an unsupported dtype and a quantised checkpoint are refused")
    func unsupportedDTypeAndQuantisation() throws {
        let scratch = try ScratchDirectory()
        let checkpoint = try copyFixture("olmoe", into: scratch)
        // I16 has BF16's element size, so the header stays consistent.
        try editSafetensorsHeader("\(checkpoint)/model.safetensors") { header in
            var entry = header["model.layers.0.mlp.experts.3.up_proj.weight"] as! [String: Any]
            entry["dtype"] = "I16"
            header["model.layers.0.mlp.experts.3.up_proj.weight"] = entry
        }
        try expectRefused(checkpoint, scratch: scratch, ["model.layers.0.mlp.experts.3.up_proj.weight", "dtype I16", "F32, BF16, F16"])
        let quantised = try copyFixture("mixtral", into: scratch)
        try editConfig(quantised) { $0["quantization_config"] = ["quant_method": "gptq"] }
        try expectRefused(quantised, scratch: scratch, ["quantization_config", "quantisation method 'gptq' is not supported"])
        try editConfig(quantised) { $0["quantization_config"] = ["quant_method": "mxfp4"] }
        try expectRefused(quantised, scratch: scratch, ["quantization_config", "MXFP4 checkpoints of mixtral are not supported"])
        // An FP8 weight whose block scales are missing.
        let fp8 = try copyFixture("deepseek_v3_fp8", into: scratch)
        try editSafetensorsHeader("\(fp8)/model.safetensors") { header in
            header["renamed_scales"] = header.removeValue(forKey: "model.layers.2.mlp.experts.7.up_proj.weight_scale_inv")
        }
        try expectRefused(fp8, scratch: scratch, ["model.layers.2.mlp.experts.7.up_proj.weight_scale_inv", "FP8 scales", "missing", "[1, 2]"])
    }

    @Test("a truncated shard and an index naming a missing shard are refused")
    func brokenShards() throws {
        let scratch = try ScratchDirectory()
        let truncated = try copyFixture("qwen2_moe", into: scratch)
        let shard = "\(truncated)/model-00003-of-00004.safetensors"
        let handle = try #require(FileHandle(forUpdatingAtPath: shard))
        try handle.truncate(atOffset: try handle.seekToEnd() - 100)
        try handle.close()
        try expectRefused(truncated, scratch: scratch, ["model-00003-of-00004.safetensors", "truncated"])
        let missing = try copyFixture("qwen2_moe", into: scratch)
        try FileManager.default.removeItem(atPath: "\(missing)/model-00002-of-00004.safetensors")
        try expectRefused(missing, scratch: scratch, ["model.safetensors.index.json", "model-00002-of-00004.safetensors", "missing"])
    }
}
}
