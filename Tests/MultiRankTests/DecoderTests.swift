import FileFormats
import Foundation
import Testing

/// The decoder fixtures (Tests/Fixtures/make_decoders.py writes them with transformers): each
/// holds a tiny causal LM checkpoint and `prompts.json` (prompts, the 16 tokens `model.generate`
/// picks greedily after each) and `logits.npy` (every prompt position's logits, prompts in order).
let decoderFixtures = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss", "deepseek_v2", "deepseek_v3"]

/// The fixture's prompts and greedy tokens.
func decoderPrompts(_ name: String) throws -> (prompts: [[Int]], greedy: [[Int]]) {
    let document = try readJSONObject("\(repositoryRoot)/Tests/Fixtures/decoder/\(name)/prompts.json")
    return (try #require(document["prompts"] as? [[Int]]), try #require(document["greedy"] as? [[Int]]))
}

/// `prompts` as `--prompt-ids` reads them, one sequence per line.
func writePrompts(_ prompts: [[Int]], to path: String) throws {
    try (prompts.map { $0.map(String.init).joined(separator: " ") }.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
}

/// Each sequence's tokens in a `moe generate --output` file.
func generatedTokens(_ path: String) throws -> [[Int]] {
    let document = try readJSONObject(path)
    let sequences = try #require(document["sequences"] as? [[String: Any]])
    return try sequences.map { try #require($0["tokens"] as? [Int]) }
}

extension MultiRankTests {
@Suite("moe generate: a Hugging Face checkpoint's tokens, as transformers generates them", .serialized)
struct DecoderTests {
    @Test("prefill logits within 1e-4 of max|logits| and 16 greedy tokens equal transformers' on 1, 2 and 4 ranks (2x2), every exchange",
          arguments: decoderFixtures)
    func generationMatchesTransformers(name: String) throws {
        let scratch = try ScratchDirectory()
        let fixture = "Tests/Fixtures/decoder/\(name)"
        let folder = scratch.file("imported")
        let imported = try runMoe(["import-hf", fixture, "--output", folder])
        try #require(imported.status == 0, "\(imported.stderr)")
        #expect(imported.stdout.contains("decoder: vocabulary"), "\(imported.stdout)")
        let (prompts, greedy) = try decoderPrompts(name)
        try writePrompts(prompts, to: scratch.file("prompts.txt"))
        let expectedLogits = try #require(try NpyArray.load(path: "\(fixture)/logits.npy").float32Values)
        for (ranks, topology) in [(1, nil), (2, nil), (4, "Topologies/2x2.json")] as [(Int, String?)] {
            var arguments = ["generate", "--model", "\(folder)/model.json", "--weights", "\(folder)/weights.safetensors",
                             "--prompt-ids", scratch.file("prompts.txt"), "--max-new-tokens", "16", "--exchange", "all", "--quiet",
                             "--output", scratch.file("out-\(ranks).json"), "--logits-output", scratch.file("logits-\(ranks).npy")]
            if let topology { arguments += ["--topology", topology] }
            let job = try runMPI(ranks: ranks, arguments)
            try #require(job.mpirunStatus == 0, "\(job)")
            #expect(job.ranks[0].stdout.contains("tokens identical across exchanges"), "\(job)")
            let logits = try #require(try NpyArray.load(path: scratch.file("logits-\(ranks).npy")).float32Values)
            expectWithinImportBound(logits, expectedLogits, "\(name) prefill logits on \(ranks) ranks")
            let tokens = try generatedTokens(scratch.file("out-\(ranks).json"))
            #expect(tokens == greedy, "\(name) on \(ranks) ranks: greedy tokens differ from transformers'")
        }
    }

    @Test("text in and out through the checkpoint's tokenizer.json (SentencePiece-style for Mixtral, byte-level for Qwen2-MoE): the ids and text transformers gives",
          arguments: ["mixtral", "qwen2_moe"])
    func textPrompts(name: String) throws {
        let scratch = try ScratchDirectory()
        let folder = scratch.file("imported")
        let imported = try runMoe(["import-hf", "Tests/Fixtures/decoder/\(name)", "--output", folder])
        try #require(imported.status == 0, "\(imported.stderr)")
        #expect(imported.stdout.contains("tokenizer: ") && FileManager.default.fileExists(atPath: "\(folder)/tokenizer.json"), "\(imported.stdout)")
        let document = try readJSONObject("\(repositoryRoot)/Tests/Fixtures/decoder/\(name)/prompts.json")
        let texts = try #require(document["texts"] as? [[String: String]])
        let greedy = try #require(document["greedy"] as? [[Int]])
        try (texts.map { $0["prompt"]! }.joined(separator: "\n") + "\n").write(toFile: scratch.file("prompts.txt"), atomically: true, encoding: .utf8)
        let job = try runMPI(ranks: 2, ["generate", "--model", "\(folder)/model.json", "--weights", "\(folder)/weights.safetensors",
                                        "--prompts", scratch.file("prompts.txt"), "--max-new-tokens", "16", "--output", scratch.file("out.json")])
        try #require(job.mpirunStatus == 0, "\(job)")
        let output = try readJSONObject(scratch.file("out.json"))
        let sequences = try #require(output["sequences"] as? [[String: Any]])
        #expect(sequences.map { $0["tokens"] as? [Int] ?? [] } == greedy, "\(name): tokens of the text prompts")
        #expect(sequences.map { $0["text"] as? String ?? "" } == texts.map { $0["generated"]! }, "\(name): decoded text")
        #expect(job.ranks[0].stdout.contains("sequence 1: "), "\(job)")
    }

    @Test("generation keeps the MoE runtime's features: overlap degree 2 and auto, a capacity policy, the hierarchical exchange on 2x2, balanced placement with a replica (and its stats log), a KV cache that makes requests wait — the same greedy tokens; .npy prompts")
    func runtimeFeatures() throws {
        let scratch = try ScratchDirectory()
        let folder = scratch.file("imported")
        try #require(try runMoe(["import-hf", "Tests/Fixtures/decoder/qwen3_moe", "--output", folder]).status == 0)
        let (prompts, greedy) = try decoderPrompts("qwen3_moe")
        // The prompts as an int64 .npy, padded to one length: the fixture's shortest prompts, cut to 5 tokens.
        let cut = prompts.map { Array($0.prefix(5)) }
        try #require(cut.allSatisfy { $0.count == 5 })
        try writePrompts(cut, to: scratch.file("cut.txt"))
        try NpyArray(shape: [cut.count, 5], elementType: .int64, data: cut.flatMap { $0.map(Int64.init) }.withUnsafeBytes { Array($0) })
            .write(to: scratch.file("prompts.npy"))
        let fromText = try runMPI(ranks: 2, ["generate", "--model", "\(folder)/model.json", "--weights", "\(folder)/weights.safetensors",
                                             "--prompt-ids", scratch.file("cut.txt"), "--max-new-tokens", "4", "--quiet", "--output", scratch.file("text.json")])
        let fromNpy = try runMPI(ranks: 2, ["generate", "--model", "\(folder)/model.json", "--weights", "\(folder)/weights.safetensors",
                                            "--prompt-ids", scratch.file("prompts.npy"), "--max-new-tokens", "4", "--quiet", "--output", scratch.file("npy.json")])
        try #require(fromText.mpirunStatus == 0 && fromNpy.mpirunStatus == 0, "\(fromText)\(fromNpy)")
        #expect(try generatedTokens(scratch.file("text.json")) == generatedTokens(scratch.file("npy.json")), ".npy and text prompts differ")
        try writePrompts(prompts, to: scratch.file("prompts.txt"))
        let common = ["generate", "--model", "\(folder)/model.json", "--weights", "\(folder)/weights.safetensors",
                      "--prompt-ids", scratch.file("prompts.txt"), "--max-new-tokens", "16", "--quiet"]
        // 40 KV slots of 2 layers × K and V × 16 values × 4 bytes: one or two sequences at a time.
        for (ranks, extra) in [(4, ["--overlap-degree", "2", "--exchange", "all"]),
                               (4, ["--overlap-degree", "auto", "--policy", "dynamoe", "--exchange", "hierarchical", "--topology", "Topologies/2x2.json"]),
                               (4, ["--placement", "balanced", "--redundant-experts", "1", "--rebalance-every", "2", "--stats", scratch.file("stats.jsonl")]),
                               (1, ["--kv-cache-gib", "0.0000096"])] as [(Int, [String])] {
            let job = try runMPI(ranks: ranks, common + extra + ["--output", scratch.file("out.json")])
            try #require(job.mpirunStatus == 0, "\(extra): \(job)")
            #expect(try generatedTokens(scratch.file("out.json")) == greedy, "\(extra): tokens differ from transformers'")
            if extra.contains("auto") {
                #expect(job.ranks[0].stdout.contains("capacity policy dynamoe") && job.ranks[0].stdout.contains("overlap degree"), "\(job)")
            }
            if extra.contains("--placement") {
                // The coordinator's statistics, as moe run writes them: one line per step, routes per layer.
                let log = try StatsLog.parse(Array(try Data(contentsOf: URL(fileURLWithPath: scratch.file("stats.jsonl")))), path: "stats.jsonl")
                #expect(log.steps.count >= 16 && log.steps[0].routed.count == 2, "\(log.steps.count) steps")
            }
            if extra.contains("--kv-cache-gib") {
                #expect(job.ranks[0].stdout.contains("KV cache: 40 slots per rank"), "\(job)")
                let output = try readJSONObject(scratch.file("out.json"))
                let peak = (output["kv_cache"] as? [String: Any])?["peak_slots"] as? Int ?? 0
                #expect(peak <= 40 && peak > 0, "peak KV slots \(peak)")
            }
        }
    }

    @Test("--bounds: the bytes a batch-1 decode step reads, counted by hand for the Mixtral fixture, and both bounds measured and compared")
    func bounds() throws {
        let scratch = try ScratchDirectory()
        let folder = scratch.file("imported")
        try #require(try runMoe(["import-hf", "Tests/Fixtures/decoder/mixtral", "--output", folder]).status == 0)
        try writePrompts([Array(try decoderPrompts("mixtral").prompts[0])], to: scratch.file("one.txt"))
        let job = try runMPI(ranks: 1, ["generate", "--model", "\(folder)/model.json", "--weights", "\(folder)/weights.safetensors",
                                        "--prompt-ids", scratch.file("one.txt"), "--max-new-tokens", "4", "--quiet", "--bounds", "--output", scratch.file("out.json")])
        try #require(job.mpirunStatus == 0, "\(job)")
        // d 32, vocabulary 600, 2 layers; per layer: input norm 32, wq 32×32, wk and wv 32×16, wo 32×32, FFN norm 32, router 32×8,
        // 2 SwiGLU experts of 3 × 32 × 24; then the final norm 32, the LM head 600×32 and one embedding row 32.
        let perLayer = 32 + 1024 + 512 + 512 + 1024 + 32 + 256 + 2 * 3 * 32 * 24
        let bounds = try #require(try readJSONObject(scratch.file("out.json"))["bounds"] as? [String: Any])
        #expect(bounds["decode_bytes_per_step"] as? Int == 4 * (2 * perLayer + 32 + 600 * 32 + 32), "\(bounds)")
        for key in ["plain_read_gb_per_s", "prefill_gemm_seconds", "decode_ms_per_step", "prefill_tokens_per_s_per_rank"] {
            #expect((bounds[key] as? Double ?? 0) > 0, "\(key): \(bounds)")
        }
        #expect(job.ranks[0].stdout.contains("of the GEMM-bound rate") && job.ranks[0].stdout.contains("of the bytes-bound rate"), "\(job)")
    }

    @Test("--head-precision int8: the LM head quantised per vocabulary row; prefill logits within 3% of max|logits| of transformers' (mean within 0.5%) on 2 ranks")
    func int8Head() throws {
        let scratch = try ScratchDirectory()
        let folder = scratch.file("imported")
        try #require(try runMoe(["import-hf", "Tests/Fixtures/decoder/mixtral", "--output", folder]).status == 0)
        try writePrompts(try decoderPrompts("mixtral").prompts, to: scratch.file("prompts.txt"))
        let job = try runMPI(ranks: 2, ["generate", "--model", "\(folder)/model.json", "--weights", "\(folder)/weights.safetensors",
                                        "--prompt-ids", scratch.file("prompts.txt"), "--max-new-tokens", "4", "--quiet", "--head-precision", "int8",
                                        "--logits-output", scratch.file("logits.npy")])
        try #require(job.mpirunStatus == 0, "\(job)")
        #expect(job.ranks[0].stdout.contains("LM head: int8 weights per output channel"), "\(job)")
        let logits = try #require(try NpyArray.load(path: scratch.file("logits.npy")).float32Values)
        let expected = try #require(try NpyArray.load(path: "Tests/Fixtures/decoder/mixtral/logits.npy").float32Values)
        try #require(logits.count == expected.count)
        let largest = expected.map(abs).max()!
        let errors = zip(logits, expected).map { abs($0 - $1) }
        // Measured: max 1.6%, mean 0.25% (7-bit activations on AVX2); fp32 gives 7e-7.
        #expect(errors.max()! <= 0.03 * largest && errors.reduce(0, +) / Float(errors.count) <= 0.005 * largest,
                "max \(errors.max()! / largest), mean \(errors.reduce(0, +) / Float(errors.count) / largest)")
        #expect(errors.max()! > 1e-5 * largest, "the int8 head gave fp32's logits: it did not run")
    }

    @Test("a sequence's tokens do not depend on its batch: alone, among 8 of other lengths, joining at later steps; greedy and sampled")
    func batchIndependence() throws {
        let scratch = try ScratchDirectory()
        let folder = scratch.file("imported")
        try #require(try runMoe(["import-hf", "Tests/Fixtures/decoder/qwen2_moe", "--output", folder]).status == 0)
        let (prompts, _) = try decoderPrompts("qwen2_moe")
        let many = Array((prompts + prompts.map { Array($0.reversed()) }).prefix(8))
        try writePrompts([many[3]], to: scratch.file("alone.txt"))
        try writePrompts(many, to: scratch.file("many.txt"))
        // The same 8 requests joining at steps 0, 0, 1, 2, 3, 5, 5 and 8 (continuous batching).
        let arrivals = [0, 0, 1, 2, 3, 5, 5, 8]
        try zip(many, arrivals).map { #"{"prompt": [\#($0.map(String.init).joined(separator: ", "))], "arrival_step": \#($1)}"# }
            .joined(separator: "\n").write(toFile: scratch.file("joined.txt"), atomically: true, encoding: .utf8)
        for sampling in [[], ["--temperature", "0.9", "--top-p", "0.8", "--seed", "5"]] {
            var outputs: [[[Int]]] = []
            for (file, ranks) in [("alone", 1), ("many", 2), ("many", 1), ("joined", 2)] {
                let job = try runMPI(ranks: ranks, ["generate", "--model", "\(folder)/model.json", "--weights", "\(folder)/weights.safetensors",
                                                    file == "joined" ? "--requests" : "--prompt-ids", scratch.file("\(file).txt"),
                                                    "--max-new-tokens", "12", "--quiet",
                                                    "--output", scratch.file("\(file)-\(ranks).json")] + sampling)
                try #require(job.mpirunStatus == 0, "\(job)")
                outputs.append(try generatedTokens(scratch.file("\(file)-\(ranks).json")))
            }
            // Sequence 3 of the batch is the lone sequence: it runs as sequence id 3, so the sampled
            // case compares it with the batch runs only (the stream follows the id).
            #expect(outputs[1] == outputs[2], "\(sampling): 2 ranks and 1 rank differ")
            #expect(outputs[1] == outputs[3], "\(sampling): requests joining at later steps got other tokens")
            if sampling.isEmpty { #expect(outputs[0][0] == outputs[1][3], "greedy: alone \(outputs[0][0]), in the batch \(outputs[1][3])") }
            #expect(outputs[1].allSatisfy { $0.count == 12 })
        }
    }

    @Test("bad input: an id outside the vocabulary, a prompt longer than the context, a KV cache too small, --max-new-tokens 0, an unsupported tokenizer, a checkpoint missing an attention tensor, a model without a decoder")
    func badInput() throws {
        let scratch = try ScratchDirectory()
        let folder = scratch.file("imported")
        try #require(try runMoe(["import-hf", "Tests/Fixtures/decoder/mixtral", "--output", folder]).status == 0)
        let common = ["generate", "--model", "\(folder)/model.json", "--weights", "\(folder)/weights.safetensors"]
        try "1 2 3\n4 9999 5\n".write(toFile: scratch.file("vocab.txt"), atomically: true, encoding: .utf8)
        try (Array(repeating: "7", count: 120).joined(separator: " ") + "\n").write(toFile: scratch.file("long.txt"), atomically: true, encoding: .utf8)
        try "1 2 3\n".write(toFile: scratch.file("ok.txt"), atomically: true, encoding: .utf8)
        try #"{"model": {"type": "WordPiece", "vocab": {"a": 0}}}"#.write(toFile: scratch.file("wordpiece.json"), atomically: true, encoding: .utf8)
        let cases: [([String], Int32, String)] = [
            (["--prompt-ids", scratch.file("vocab.txt")], 1, "vocab.txt: sequence 2, token 2: id 9999 is outside the vocabulary (0..<600)"),
            (["--prompt-ids", scratch.file("long.txt")], 1, "long.txt: sequence 1: 120 prompt tokens + 16 new ones exceed the model's context of 128 positions"),
            (["--prompt-ids", scratch.file("ok.txt"), "--kv-cache-gib", "0.000001"], 1, "KV-cache slots (prompt + new tokens) but the cache holds"),
            (["--prompt-ids", scratch.file("ok.txt"), "--max-new-tokens", "0"], 2, "--max-new-tokens"),
            (["--prompts", scratch.file("ok.txt"), "--tokenizer", scratch.file("wordpiece.json")], 1,
             "wordpiece.json: field 'model.type': 'WordPiece' is not supported"),
        ]
        for (extra, status, message) in cases {
            let job = try runMPI(ranks: 2, common + extra, extraMPIArguments: waitForEveryRank)
            #expect(job.ranks.allSatisfy { $0.exitStatus == status }, "\(extra): \(job)")
            // A usage error (exit 2) comes before MPI starts: each rank says it; a bad input after, once.
            let lines = job.allStderr.split(separator: "\n").filter { $0.contains("error") }
            #expect((status == 2 || lines.count == 1) && lines.allSatisfy { $0.contains(message) }, "\(extra): expected '\(message)'\n\(job)")
        }
        // A checkpoint without its LM head (Tests/Fixtures/hf/qwen3_moe) imports its MoE layers and says why not the decoder.
        let partial = try runMoe(["import-hf", "Tests/Fixtures/hf/qwen3_moe", "--output", scratch.file("partial")])
        #expect(partial.status == 0 && partial.stdout.contains("decoder: not imported — ") && partial.stdout.contains("'lm_head.weight' is missing"),
                "\(partial.stdout)\(partial.stderr)")
        // A checkpoint missing one attention tensor (DeepSeek's latent expansion of layer 1): the
        // same, naming the tensor; moe generate then refuses the model.
        let broken = scratch.file("broken-deepseek")
        try FileManager.default.copyItem(atPath: "\(repositoryRoot)/Tests/Fixtures/decoder/deepseek_v3", toPath: broken)
        try editSafetensorsHeader("\(broken)/model.safetensors") { header in
            header["renamed"] = header.removeValue(forKey: "model.layers.1.self_attn.kv_b_proj.weight")
        }
        let withoutAttention = try runMoe(["import-hf", broken, "--output", scratch.file("no-attention")])
        #expect(withoutAttention.status == 0 && withoutAttention.stdout.contains("decoder: not imported — ")
                && withoutAttention.stdout.contains("'model.layers.1.self_attn.kv_b_proj.weight' is missing"), "\(withoutAttention.stdout)\(withoutAttention.stderr)")
        let refused = try runMPI(ranks: 2, ["generate", "--model", scratch.file("no-attention/model.json"), "--weights", scratch.file("no-attention/weights.safetensors"),
                                            "--prompt-ids", scratch.file("ok.txt")], extraMPIArguments: waitForEveryRank)
        #expect(refused.ranks.allSatisfy { $0.exitStatus == 2 } && refused.allStderr.contains("has no \"decoder\" section"), "\(refused)")
        let plain = try runMPI(ranks: 2, ["generate", "--prompt-ids", scratch.file("ok.txt")], extraMPIArguments: waitForEveryRank)
        #expect(plain.ranks.allSatisfy { $0.exitStatus == 2 } && plain.allStderr.contains("has no \"decoder\" section"), "\(plain)")
    }
}
}
