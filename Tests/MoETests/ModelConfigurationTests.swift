import Foundation
import Testing
@testable import MoE

private func parse(_ text: String) throws(ModelConfigurationError) -> ModelConfiguration {
    try ModelConfiguration.parse(Array(text.utf8), path: "m.json")
}

@Suite("Model files")
struct ModelConfigurationTests {
    @Test("layers take layer_defaults and override them")
    func defaults() throws {
        let model = try parse(#"{"d_model": 8, "d_ff": 16, "activation": "swiglu", "layer_defaults": {"experts": 4, "top_k": 2, "capacity_factor": 1.5}, "layers": [{}, {"top_k": 1, "drop_policy": "batch-prioritized", "priority": "sum"}]}"#)
        #expect(model.name == "m")
        #expect(model.activation == .swiglu)
        #expect(model.layers[0] == LayerConfiguration(experts: 4, topK: 2, capacityFactor: 1.5))
        #expect(model.layers[1] == LayerConfiguration(experts: 4, topK: 1, capacityFactor: 1.5, dropPolicy: .batchPrioritized, priority: .sum))
    }

    @Test("invalid models name the file and field", arguments: [
        (#"{"d_model": 8, "d_ff": 16, "layers": [{"experts": 2, "top_k": 3}]}"#,
         "m.json: field 'layers[0].top_k': must be in 1...2 (the layer's experts), got 3"),
        (#"{"d_model": 8, "d_ff": 16, "layers": [{"experts": 2}]}"#,
         "m.json: field 'layers[0].top_k': missing (give it here or in layer_defaults)"),
        (#"{"d_model": 8, "d_ff": 16, "activation": "tanh", "layers": [{"experts": 2, "top_k": 1}]}"#,
         "m.json: field 'activation': unknown activation 'tanh' (relu, gelu, swiglu, clamped-glu)"),
        (#"{"d_model": 0, "d_ff": 16, "layers": [{"experts": 2, "top_k": 1}]}"#, "m.json: field 'd_model': must be in 1...65536, got 0"),
        (#"{"d_model": 8, "d_ff": 16, "layers": [{"experts": 2, "top_k": 1, "capacity": 2}]}"#,
         "m.json: field 'layers[0].capacity': unknown field (allowed: experts, top_k, capacity_factor, min_capacity, drop_policy, priority, residual, dense, expert_d_ff, dense_d_ff, shared_d_ff, shared_gate, expert_capacity, score, normalize_top_k, scaling_factor, router_bias, selection_bias, groups, top_groups, group_score, expert_precision)"),
        (#"{"d_model": 8, "d_ff": 16, "layers": [{"experts": 4, "top_k": 2, "residual": true}]}"#,
         "m.json: field 'layers[0].top_k': a residual layer sends each token to one expert (top_k 1) beside its dense MLP, got 2"),
        (#"{"d_model": 8, "d_ff": 16, "layers": [{"experts": 4, "residual": 1}]}"#,
         "m.json: field 'layers[0].residual': expected true or false, found a number"),
        (#"{"d_model": 8, "d_ff": 16, "layers": [{"experts": 4, "top_k": 2}], "task_experts": {"0": [1]}}"#,
         "m.json: field 'task_experts.0': lists 1 experts but layer 0 routes each token to top_k = 2"),
        (#"{"d_model": 8, "d_ff": 16, "layers": [{"experts": 4, "top_k": 1, "drop_policy": "random"}]}"#,
         "m.json: field 'layers[0].drop_policy': unknown policy 'random' (in-order, batch-prioritized, none)"),
        (#"{"d_model": 8, "d_ff": 16, "layers": []}"#, "m.json: field 'layers': must hold 1...1024 layers, got 0"),
        (#"{"d_model": 8, "d_ff": 16, "layers": [{"experts": 6, "top_k": 2, "groups": 4}]}"#,
         "m.json: field 'layers[0].groups': must divide the layer's 6 experts into equal groups, got 4"),
        (#"{"d_model": 8, "d_ff": 16, "layers": [{"experts": 8, "top_k": 3, "groups": 4, "top_groups": 1}]}"#,
         "m.json: field 'layers[0].top_groups': 1 groups of 2 experts cannot supply top_k = 3 experts"),
        (#"{"d_model": 8, "d_ff": 16, "layers": [{"experts": 8, "top_k": 2, "group_score": "max"}]}"#,
         "m.json: field 'layers[0].groups': top_groups and group_score need groups"),
        (#"{"d_model": 8, "d_ff": 16, "layers": [{"experts": 8, "top_k": 2, "score": "tanh"}]}"#,
         "m.json: field 'layers[0].score': unknown score 'tanh' (softmax, sigmoid, softmax-top-k)"),
        (#"{"d_model": 8, "d_ff": 16, "layers": [{"dense": true, "experts": 4}]}"#,
         "m.json: field 'layers[0].experts': a dense layer has no gate or experts; only dense_d_ff applies"),
        (#"{"d_model": 8, "d_ff": 16, "layers": [{"experts": 4, "top_k": 1, "shared_gate": true}]}"#,
         "m.json: field 'layers[0].shared_gate': gates a shared expert, but shared_d_ff is 0 (no shared expert)"),
        (#"{"d_model": 8, "d_ff": 16, "norm": "batch", "layers": [{"experts": 4, "top_k": 1}]}"#,
         "m.json: field 'norm': unknown norm 'batch' (layer, rms, none)"),
    ])
    func invalid(text: String, message: String) {
        #expect { try parse(text) } throws: { "\($0)" == message }
    }

    @Test("residual layers are top-1 even when layer_defaults says otherwise; pyramid expert counts per layer")
    func residualAndPyramid() throws {
        let model = try parse(#"{"d_model": 8, "d_ff": 16, "layer_defaults": {"experts": 4, "top_k": 2}, "layers": [{"residual": true}, {"experts": 8, "residual": true, "top_k": 1}, {"experts": 8}]}"#)
        #expect(model.layers.map(\.residual) == [true, true, false])
        #expect(model.layers.map(\.topK) == [1, 1, 2])
        #expect(model.layers.map(\.experts) == [4, 8, 8])
    }

    @Test("residual layers add the dense MLP and coefficient tensors")
    func residualTensorNames() throws {
        let model = try parse(#"{"d_model": 8, "d_ff": 16, "layers": [{"experts": 1, "residual": true}]}"#)
        let shapes = ModelWeights.tensorShapes(model)
        #expect(shapes.map(\.name).suffix(6) == ["layers.0.dense.w1", "layers.0.dense.w2", "layers.0.dense.b1", "layers.0.dense.b2",
                                                 "layers.0.coefficient.weight", "layers.0.coefficient.bias"])
        #expect(shapes.suffix(2).map(\.shape) == [[8, 2], [2]])
        let weights = try ModelWeights.load(model, heldExperts: { _ in [0] }, seed: 3, file: nil)
        let residual = try #require(weights[0].residual)
        #expect(residual.coefficientBias.allSatisfy { abs($0) <= 0.1 })
        #expect(residual.dense.w1 == ModelWeights.seededTensor(name: "layers.0.dense.w1", shape: [8, 16], seed: 3))
    }

    @Test("weights: tensor names and shapes per activation")
    func tensorNames() throws {
        let gelu = try parse(#"{"d_model": 8, "d_ff": 16, "layers": [{"experts": 2, "top_k": 1}]}"#)
        #expect(ModelWeights.tensorShapes(gelu).map(\.name) == [
            "layers.0.norm.scale", "layers.0.norm.shift", "layers.0.gate.weight",
            "layers.0.experts.0.w1", "layers.0.experts.0.w2", "layers.0.experts.0.b1", "layers.0.experts.0.b2",
            "layers.0.experts.1.w1", "layers.0.experts.1.w2", "layers.0.experts.1.b1", "layers.0.experts.1.b2",
        ])
        let swiglu = try parse(#"{"d_model": 8, "d_ff": 16, "activation": "swiglu", "layers": [{"experts": 1, "top_k": 1}]}"#)
        #expect(ModelWeights.tensorShapes(swiglu).map(\.name).suffix(3) == ["layers.0.experts.0.w1", "layers.0.experts.0.w2", "layers.0.experts.0.w3"])
        #expect(ModelWeights.tensorShapes(swiglu).first { $0.name.hasSuffix("w2") }?.shape == [16, 8])
    }

    @Test("imported-architecture fields parse, name their tensors, and survive a round trip through the model file")
    func architectureFields() throws {
        let text = #"""
            {"d_model": 8, "d_ff": 6, "activation": "clamped-glu", "norm": "rms", "norm_epsilon": 1e-6, "glu_limit": 3,
             "layers": [{"dense": true, "dense_d_ff": 10},
                        {"experts": 4, "top_k": 2, "capacity_factor": 0, "drop_policy": "none", "score": "sigmoid", "groups": 2,
                         "top_groups": 1, "group_score": "top2-sum", "normalize_top_k": "chosen", "scaling_factor": 2.5,
                         "selection_bias": true, "router_bias": true, "shared_d_ff": 12, "shared_gate": true, "expert_d_ff": 5},
                        {"experts": 4, "top_k": 1, "expert_capacity": 3}]}
            """#
        let model = try parse(text)
        #expect(model.norm == .rms && model.normEpsilon == 1e-6 && model.ffnBias && model.glu.limit == 3)
        #expect(model.layers[0].dense && model.form(.dense, layer: 0).dFF == 10)
        let layer = model.layers[1]
        #expect(layer.gateRule == GateRule(score: .sigmoid, selection: .groupLimited(groups: 2, topGroups: 1, score: .topTwoSum),
                                           normalization: .chosen, scalingFactor: 2.5))
        #expect(layer.routerBias && layer.selectionBias && layer.sharedGate && layer.sharedDFF == 12)
        #expect(model.form(.expert, layer: 1).dFF == 5 && model.form(.shared, layer: 1).dFF == 12 && model.form(.expert, layer: 2).dFF == 6)
        #expect(model.layers[2].expertCapacity == 3 && !model.layers[2].isDropless)
        let names = ModelWeights.tensorShapes(model).map(\.name)
        #expect(names.prefix(7) == ["layers.0.norm.scale", "layers.0.dense.w1", "layers.0.dense.w2", "layers.0.dense.w3",
                                    "layers.0.dense.b1", "layers.0.dense.b2", "layers.0.dense.b3"])
        for name in ["layers.1.gate.bias", "layers.1.gate.selection_bias", "layers.1.shared.w3", "layers.1.shared_gate.weight",
                     "layers.1.experts.3.b3"] {
            #expect(names.contains(name), "\(name) missing")
        }
        #expect(!names.contains("layers.0.gate.weight") && !names.contains("layers.0.norm.shift"))
        let plain = try parse(#"{"d_model": 8, "d_ff": 6, "norm": "none", "activation": "swiglu", "layers": [{"experts": 2, "top_k": 1}]}"#)
        #expect(!ModelWeights.tensorShapes(plain).contains { $0.name.contains("norm") }, "no norm, no norm tensors")
        let weights = try ModelWeights.load(plain, heldExperts: { _ in [0, 1] }, seed: 1, file: nil)
        let x: [Float] = [1, -2, 3, 4, 5, 6, 7, 8]
        var y = [Float](repeating: 0, count: 8)
        x.withUnsafeBufferPointer { input in y.withUnsafeMutableBufferPointer { weights[0].norm.apply(input.baseAddress!, rows: 1, width: 8, into: $0.baseAddress!) } }
        #expect(y == x, "norm none passes the hidden state through")
        var again = try ModelConfiguration.parse(Array(model.document().serialized().utf8), path: "m.json")
        again.name = model.name
        #expect(again == model)
    }
}

@Suite("The model file's field tables")
struct ModelFileFieldTableTests {
    @Test("docs/MODEL.md lists every field of the tables, with its default, as the tables state them")
    func docsListEveryField() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let docs = try String(contentsOf: root.appendingPathComponent("docs/MODEL.md"), encoding: .utf8)
        let (model, layer, decoder) = ModelFile.fieldTables()
        let missing = (model + layer + decoder).filter { !docs.contains($0) }
        #expect(missing.isEmpty, "docs/MODEL.md lacks these rows (paste the tables):\n\(model.joined(separator: "\n"))\n\n\(layer.joined(separator: "\n"))\n\n\(decoder.joined(separator: "\n"))")
    }

    @Test("a decoder section round-trips through its table (grouped-query with YaRN, sinks and windows per layer; latent); bad fields are refused by name")
    func decoderRoundTrip() throws {
        var model = ModelConfiguration(name: "t", dModel: 16, dFF: 32, activation: .swiglu, layers: [LayerConfiguration(experts: 4, topK: 2)])
        model.decoder = DecoderConfiguration(vocabulary: 50, heads: 4, kvHeads: 2, headDim: 6, ropeTheta: 1e6, maxPositions: 64, slidingWindow: 32,
                                             attentionBias: true, qkNorm: .projection, tiedEmbeddings: true, endTokens: [1, 7])
        let file = ModelFile(model: model)
        #expect(try ModelFile.parse(Array(file.document().serialized().utf8), path: "t.json") == file)
        // GPT-OSS's attention: YaRN, sinks, an output bias, a window on some layers, a scale.
        var gptOSS = model
        gptOSS.layers = [LayerConfiguration(experts: 4, topK: 2), LayerConfiguration(experts: 4, topK: 2)]
        gptOSS.decoder!.yarn = YaRN(factor: 32, originalMaxPositions: 4096, betaFast: 16, betaSlow: 2, truncate: false)
        (gptOSS.decoder!.attentionSinks, gptOSS.decoder!.outputBias, gptOSS.decoder!.slidingWindowLayers, gptOSS.decoder!.softmaxScale) = (true, true, [1], 0.3)
        gptOSS.decoder!.ropePairs = .interleaved
        #expect(try ModelFile.parse(Array(ModelFile(model: gptOSS).document().serialized().utf8), path: "t.json") == ModelFile(model: gptOSS))
        #expect(gptOSS.decoder!.window(layer: 0) == nil && gptOSS.decoder!.window(layer: 1) == 32)
        // DeepSeek's latent attention: the cache holds the latent and the rotated key, no values.
        var deepSeek = model
        deepSeek.decoder = DecoderConfiguration(vocabulary: 50, heads: 4, kvHeads: 4, headDim: 12, maxPositions: 64)
        deepSeek.decoder!.latent = LatentAttention(queryRank: 6, kvRank: 10, nopeDim: 8, ropeDim: 4, valueDim: 5)
        #expect(try ModelFile.parse(Array(ModelFile(model: deepSeek).document().serialized().utf8), path: "t.json") == ModelFile(model: deepSeek))
        #expect(deepSeek.decoder!.cacheWidths == (14, 0) && deepSeek.decoder!.rotaryDim == 4 && deepSeek.decoder!.queryKeyScale == Float(1 / 12.0.squareRoot()))
        let base = #"{"d_model": 16, "d_ff": 32, "layers": [{"experts": 4, "top_k": 2}], "decoder": "#
        for (decoder, problem) in [(#"{"vocab_size": 9, "heads": 4, "kv_heads": 3, "max_positions": 8}"#, "field 'decoder.kv_heads': must divide heads (4), got 3"),
                                   (#"{"vocab_size": 9, "heads": 4, "head_dim": 5, "max_positions": 8}"#, "field 'decoder.head_dim': must be even"),
                                   (#"{"vocab_size": 9, "heads": 4, "max_positions": 8, "eos_token_ids": [9]}"#, "field 'decoder.eos_token_ids[0]': must be a token id below vocab_size 9"),
                                   (#"{"heads": 4, "max_positions": 8}"#, "field 'decoder.vocab_size': missing"),
                                   (#"{"vocab_size": 9, "heads": 4, "max_positions": 8, "attention": "latent", "kv_lora_rank": 8, "qk_nope_head_dim": 4, "v_head_dim": 4}"#,
                                    "field 'decoder.qk_rope_head_dim': missing (latent attention needs it)"),
                                   (#"{"vocab_size": 9, "heads": 4, "max_positions": 8, "q_lora_rank": 8}"#, "field 'decoder.q_lora_rank': only latent attention takes it"),
                                   (#"{"vocab_size": 9, "heads": 4, "max_positions": 8, "sliding_window": 4, "sliding_window_layers": [0, 1]}"#,
                                    "field 'decoder.sliding_window_layers[1]': must be below the 1 layers, got 1"),
                                   (#"{"vocab_size": 9, "heads": 4, "max_positions": 8, "yarn": {"factor": 0.5, "original_max_positions": 4}}"#,
                                    "field 'decoder.yarn.factor': must be in 1...1e6, got 0.5")] {
            #expect(throws: ModelConfigurationError.self) { try ModelFile.parse(Array((base + decoder + "}").utf8), path: "m.json") }
            do { _ = try ModelFile.parse(Array((base + decoder + "}").utf8), path: "m.json") } catch {
                #expect("\(error)".contains(problem), "\(error)")
            }
        }
    }

    @Test("a layer's fields round-trip through the table: every non-default value is written and read back")
    func layerRoundTrip() throws {
        var layer = LayerConfiguration(experts: 12, topK: 3, capacityFactor: 2, minCapacity: 0, dropPolicy: .batchPrioritized, priority: .sum,
                                       gateRule: GateRule(score: .sigmoid, selection: .groupLimited(groups: 4, topGroups: 2, score: .topTwoSum),
                                                          normalization: .chosen, scalingFactor: 2.5),
                                       routerBias: true, selectionBias: true, expertDFF: 24, sharedDFF: 8, sharedGate: true)
        layer.expertCapacity = 7
        var model = ModelConfiguration(name: "t", dModel: 16, dFF: 32, activation: .swiglu, layers: [layer, .denseLayer(dFF: 40),
                                       LayerConfiguration(experts: 4, topK: 1, residual: true)])
        model.norm = .rms
        model.ffnBias = true
        let file = ModelFile(model: model, overlapDegree: .fixed(3))
        #expect(try ModelFile.parse(Array(file.document().serialized().utf8), path: "t.json") == file)
        // Every layer field of the first layer differs from its default, so each was written.
        let written = try #require(file.document().serialized(pretty: false).split(separator: "[").dropFirst().first)
        for key in ["experts", "top_k", "capacity_factor", "min_capacity", "drop_policy", "priority", "expert_d_ff", "shared_d_ff", "shared_gate",
                    "expert_capacity", "score", "normalize_top_k", "scaling_factor", "router_bias", "selection_bias", "groups", "top_groups", "group_score"] {
            #expect(written.contains("\"\(key)\""), "\(key) not written")
        }
    }
}
