import ArgumentParsing
import ClusterTopology
import Decoder
import Exchange
import ExpertParallel
import FileFormats
import Foundation
import JobControl
import MessagePassing
import MoE
import Session
import Tokenizer

/// `moe generate`: tokens from a model with a decoder section (a checkpoint imported by
/// `moe import-hf`), attention data-parallel over the ranks, MoE layers expert-parallel.
struct GenerateCommand: JobCommand {
    static let spec = CommandSpec(
        name: "generate",
        summary: "Generate tokens: data-parallel attention with a KV cache per rank, expert-parallel MoE layers.",
        discussion: """
            The model needs a "decoder" section (moe import-hf of mixtral, qwen2_moe, qwen3_moe, olmoe, gpt_oss, \
            deepseek_v2 or deepseek_v3; \
            docs/MODEL.md). Sequence i runs on rank i mod ranks: its attention and KV cache stay there, its \
            tokens travel to the experts' ranks in every MoE layer as in moe run. The first step of a sequence \
            runs its whole prompt (prefill); each later step one token per live sequence (decode), batched \
            with every other live sequence of the rank; a sequence ends at an end token of the model or after \
            --max-new-tokens. Greedy by default; --temperature and --top-p sample, seeded per sequence and token \
            (--seed), so a sequence's tokens do not depend on its batch. With several --exchange algorithms the \
            whole generation runs once per algorithm and the tokens must be identical.
            """,
        options: ModelOptions.specs.filter { ["model", "weights", "seed"].contains($0.name) } + PrecisionOptions.specs + PlacementOptions.specs
            + CapacityOptions.specs + Options.specs + TopologyOptions.specs + BLASThreadOptions.specs)

    enum Options {
        static let promptIds = TypedOption<String?>.string(
            "prompt-ids", "FILE", "the prompts as token ids: a text file with one sequence per line (ids separated by spaces or commas), "
                + "or an int32/int64 .npy [sequences, length]")
        static let stats = TypedOption<String?>.string(
            "stats", "FILE", "the coordinator's routing statistics, one JSON line per step (as moe run --stats; first algorithm)")
        static let prompts = TypedOption<String?>.string(
            "prompts", "FILE", "instead of --prompt-ids: the prompts as text, one per line, encoded with the checkpoint's tokenizer.json")
        static let tokenizer = TypedOption<String?>.string(
            "tokenizer", "FILE", "the tokenizer.json for --prompts and for the text of the output; default: tokenizer.json beside --model, if any")
        static let requests = TypedOption<String?>.string(
            "requests", "FILE", "instead of --prompt-ids: JSON lines {\"prompt\": [ids], \"arrival_step\": n, \"max_new_tokens\": m} "
                + "(continuous batching: a request joins at its arrival step; max_new_tokens defaults to --max-new-tokens)")
        static let maxNewTokens = TypedOption<Int>.integer("max-new-tokens", default: 16, in: 1...1_000_000, "new tokens per sequence at most")
        static let temperature = TypedOption<Double>.number("temperature", "T", default: 0, in: 0...1000, "sampling temperature; 0: greedy (the most likely token)")
        static let topP = TypedOption<Double>.number("top-p", "P", default: 1, in: 1e-9...1, "nucleus sampling: draw from the most likely tokens whose probability reaches P")
        static let kvCacheGiB = TypedOption<Double?>.number(
            "kv-cache-gib", "G", in: 1e-9...4096, "KV cache per rank in GiB, allocated once; default: what the rank's sequences need at once")
        static let exchange = TypedOption<[AllToAllAlgorithm]>.choices(
            "exchange", "LIST", default: [.linear],
            "all-to-all algorithm(s): " + AllToAllAlgorithm.allCases.map(\.rawValue).joined(separator: ",") + " or all")
        static let output = TypedOption<String?>.string(
            "output", "FILE", "write the run's report as JSON (rank 0): every sequence's ids (and text), one record per step, phases, latency, KV cache, --bounds")
        static let logitsOutput = TypedOption<String?>.string(
            "logits-output", "FILE", "write every prompt position's logits, prompts in order, as float32 .npy [positions, vocab] (rank 0)")
        static let quiet = TypedOption<Bool>.flag("quiet", "print only the summary")
        static let headPrecision = TypedOption<HeadPrecision>.choice(
            "head-precision", "P", default: .fp32,
            "the LM head's weights: fp32, or int8 (per vocabulary row, as int8 experts quantise: the largest matrix a batch-1 decode step reads besides the experts)")
        static let bounds = TypedOption<Bool>.flag(
            "bounds", "after the run, measure its physical limits on rank 0: the bytes a batch-1 decode step reads over a plain read's bandwidth, "
                + "and the prefill's matrix products alone (Benchmarks/README.md)")
        static let specs = [stats.spec, RunCommand.Options.overlapDegree.spec, promptIds.spec, prompts.spec, requests.spec, tokenizer.spec, maxNewTokens.spec, temperature.spec, topP.spec, kvCacheGiB.spec, exchange.spec, output.spec,
                            logitsOutput.spec, quiet.spec, headPrecision.spec, bounds.spec]
    }

    let model: ModelOptions.Values
    let precision: PrecisionOptions.Values
    let placementPolicy: PlacementPolicy
    let capacity: CapacityOptions.Values
    let overlapDegree: OverlapDegree?
    let statsPath: String?
    let topologyOptions: TopologyOptions.Values
    let blasThreads: Int?
    /// Where the prompts come from: `--prompt-ids`, `--prompts` (text) or `--requests` (exactly one).
    enum PromptSource: Hashable { case ids, text, requests }
    let promptPath: String
    let promptSource: PromptSource
    let tokenizerPath: String?
    let maxNewTokens: Int
    let sampling: Sampling
    let kvCacheGiB: Double?
    let algorithms: [AllToAllAlgorithm]
    let outputPath: String?
    let logitsPath: String?
    let quiet: Bool
    let measureBounds: Bool
    let headPrecision: HeadPrecision

    init(options: ParsedOptions) throws(UsageError) {
        // The model, its weights and the seed (ModelOptions' inputs and token counts do not apply).
        model = ModelOptions.Values(modelPath: try options.value(ModelOptions.model), weightsPath: try options.value(ModelOptions.weights),
                                    tokensPerRank: 0, inputPath: nil, taskIdsPath: nil, seed: try options.value(ModelOptions.seed),
                                    sequenceLength: nil, routingTracePath: nil, routingTraceWeightsPath: nil)
        precision = try PrecisionOptions.read(options)
        placementPolicy = try PlacementOptions.read(options)
        capacity = try CapacityOptions.read(options, seed: model.seed)
        overlapDegree = try options.value(RunCommand.Options.overlapDegree)
        statsPath = try options.value(Options.stats)
        topologyOptions = try TopologyOptions.read(options)
        blasThreads = try options.value(BLASThreadOptions.blasThreads)
        let sources = [(PromptSource.ids, try options.value(Options.promptIds)), (.text, try options.value(Options.prompts)),
                       (.requests, try options.value(Options.requests))].compactMap { source, path in path.map { (source, $0) } }
        guard sources.count == 1 else {
            throw .conflict(command: "generate", detail: sources.isEmpty
                ? "give the prompts: --prompt-ids FILE (token ids, one sequence per line), --prompts FILE (text) or --requests FILE"
                : "give one of --prompt-ids, --prompts and --requests")
        }
        (promptSource, promptPath) = sources[0]
        tokenizerPath = try options.value(Options.tokenizer)
        maxNewTokens = try options.value(Options.maxNewTokens)
        sampling = Sampling(temperature: try options.value(Options.temperature), topP: try options.value(Options.topP), seed: model.seed)
        kvCacheGiB = try options.value(Options.kvCacheGiB)
        algorithms = try options.value(Options.exchange)
        outputPath = try options.value(Options.output)
        logitsPath = try options.value(Options.logitsOutput)
        quiet = try options.value(Options.quiet)
        measureBounds = try options.value(Options.bounds)
        headPrecision = try options.value(Options.headPrecision)
    }

    func run(_ context: JobContext) throws {
        let world = try context.world()
        try context.checkPaths(outputs: [Options.output.naming(outputPath), Options.logitsOutput.naming(logitsPath), Options.stats.naming(statsPath),
                                         Options.stats.naming(statsPath.map { $0 + ".partial" })],
                               inputs: model.inputPaths + [[PromptSource.ids: Options.promptIds, .text: Options.prompts, .requests: Options.requests][promptSource]!.naming(promptPath),
                                                            Options.tokenizer.naming(tokenizerPath)])
        let (topology, links) = try context.topologyAndLinks(topologyOptions)
        let (threads, _) = try context.configureBLASThreads(requested: blasThreads)
        let file = try context.collectively { try model.loadModelFile() }
        let configuration = file.model
        guard let decoder = configuration.decoder else {
            throw JobFailure(message: "generate: \(model.modelPath ?? "the built-in model") has no \"decoder\" section: import a checkpoint with moe import-hf "
                             + "(without --ffn-only) of a decoder family (mixtral, qwen2_moe, qwen3_moe, olmoe, gpt_oss, deepseek_v2, deepseek_v3) with every attention tensor "
                             + "(its output says why a decoder was not imported)",
                             reportingRank: 0, exitCode: 2)
        }
        let tokenizer = try context.collectively { () throws -> Tokenizer? in
            let besideModel = model.modelPath.map { path in (path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : ".") + "/tokenizer.json" }
            guard let path = tokenizerPath ?? besideModel.flatMap({ FileKind.of($0) == .regular ? $0 : nil }) else {
                if promptSource == .text { throw InputError(description: "--prompts needs a tokenizer: give --tokenizer FILE (tokenizer.json), or use --prompt-ids") }
                return nil
            }
            return try Tokenizer.load(path: path)
        }
        let requests = try context.collectively { () throws -> [GenerationRequest] in
            switch promptSource {
            case .requests: return try Self.readRequests(promptPath, maxNewTokens: maxNewTokens)
            case .ids:
                return try Self.readPrompts(promptPath).enumerated().map { GenerationRequest(id: $0.offset, prompt: $0.element, maxNewTokens: maxNewTokens) }
            case .text:
                return try Self.readTextPrompts(promptPath, tokenizer: tokenizer!).enumerated().map {
                    GenerationRequest(id: $0.offset, prompt: $0.element, maxNewTokens: maxNewTokens)
                }
            }
        }
        let prompts = requests.map(\.prompt)
        let mine = requests.filter { $0.id % world.size == world.rank }
        let bytesPerSlot = KVCache.bytesPerToken(layers: configuration.layers.count, widths: decoder.cacheWidths)
        let neededHere = mine.reduce(0) { $0 + $1.cacheSlots }
        let cacheSlots = try kvCacheGiB.map { Int($0 * 1_073_741_824) / bytesPerSlot } ?? world.allReduce(max(neededHere, 1), .maximum)
        if let problem = GenerationRequest.check(requests, decoder: decoder, cacheSlots: cacheSlots, source: promptPath) {
            throw JobFailure(message: "generate: \(problem)", reportingRank: 0, exitCode: 1)
        }
        if let problem = placementPolicy.problem(layers: configuration.layers, worldSize: world.size) {
            throw JobFailure(message: "generate: \(problem)", reportingRank: 0, exitCode: 2)
        }
        // This rank's experts of the first placement (the coordinator may move them between steps).
        let firstPlacement = PlacementPlanner(policy: placementPolicy, layers: configuration.layers, worldSize: world.size, nodeOfRank: topology.nodeOfRank)
        let here = world.rank
        let expertWeights: [LayerWeights]
        var weights: DecoderWeights
        (expertWeights, weights) = try context.collectively { () throws -> ([LayerWeights], DecoderWeights) in
            let file = try model.openWeights()
            let held = { (layer: Int) -> [Int] in
                let placement = firstPlacement.placements[layer]
                return firstPlacement.slots[layer][placement.group(ofRank: here)].slots[placement.rankInGroup(here)]
            }
            return (try ModelWeights.load(configuration, heldExperts: held, seed: model.seed, file: file),
                    try DecoderWeights.load(configuration, seed: model.seed, file: file))
        }
        var run = RunConfiguration()
        run.algorithms = algorithms
        run.placement = placementPolicy
        run.overlap = overlapDegree ?? file.overlapDegree
        (run.capacityPolicy, run.drift) = (capacity.policy, capacity.drift)
        run.statsPath = statsPath
        run.tokensPerRank = max(1, mine.reduce(0) { $0 + $1.prompt.count })
        (run.expertPrecision, run.cpuISA, run.exchangePrecision, run.int8) = (precision.expertPrecision, precision.cpuISA, precision.exchangePrecision, precision.int8)
        let prepared = try InferenceSession.prepare(expertWeights, configuration: run, model: configuration, world: world)
        if headPrecision == .int8 {
            // Replaces the fp32 head, so its 4 bytes a weight are not held through the run.
            weights = weights.withInt8Head(Int8Kernels(isa: try run.resolvedISA(world: world), settings: run.int8), dModel: configuration.dModel)
        }
        if world.rank == 0 {
            print("job: \(world.size) rank\(world.size == 1 ? "" : "s"), \(requests.count) sequences (\(prompts.map(\.count).reduce(0, +)) prompt tokens), "
                  + "up to \(maxNewTokens) new tokens each, " + (sampling.isGreedy ? "greedy" : "temperature \(sampling.temperature), top-p \(sampling.topP)")
                  + ", OpenBLAS × \(threads) thread per rank")
            let slot = decoder.latent.map { "the latent and rotated key, \($0.kvRank) + \($0.ropeDim) values" } ?? "K and V × \(decoder.cacheWidths.key) values"
            if let head = weights.int8Head { print("LM head: \(head.implementation)") }
            if let line = capacity.summaryLine { print(line) }
            print("KV cache: \(cacheSlots) slots per rank (" + String(format: "%.2f", Double(cacheSlots * bytesPerSlot) / 1_048_576)
                  + " MiB: \(configuration.layers.count) layers × \(slot) × 4 bytes a slot)")
        }
        var firstTokens: [[Int]]?
        for algorithm in algorithms {
            let session = try InferenceSession(configuration: run, model: configuration, weights: prepared, trace: nil, algorithm: algorithm,
                                               world: world, topology: topology, links: links, logStatistics: algorithm == algorithms[0], liveEvery: 0)
            let generator = Generator(session: session, weights: weights, requests: mine, cacheSlots: cacheSlots, sampling: sampling,
                                      keepPrefillLogits: logitsPath != nil)
            if world.rank == 0 {
                // The auto degree is chosen from the prefill's rows (run.tokensPerRank); decode steps run the same chunks over fewer rows.
                for choice in session.distributed.overlapChoices { print("[\(algorithm)] " + choice.reason) }
            }
            try generator.run { step in
                guard !quiet, world.rank == 0 else { return }
                print("[\(algorithm)] step \(step.number + 1): \(step.prefillRows) prefill + \(step.decodeRows) decode rows on rank 0, "
                      + String(format: "%.1f ms", step.wallSeconds * 1000) + ", \(step.liveSequences) live, \(step.waitingSequences) waiting")
            }
            let report = try GenerationReport.gather(generator, world: world, cacheSlots: cacheSlots)
            guard let report else { continue }  // not rank 0
            let tokens = report.sequences.map(\.tokens)
            if let firstTokens, firstTokens != tokens {
                throw JobFailure(message: "generate: exchange \(algorithm.rawValue) generated other tokens than \(algorithms[0].rawValue)", reportingRank: 0)
            }
            firstTokens = tokens
            for line in report.summaryLines(algorithm: algorithm.rawValue) { print(line) }
            if algorithm == algorithms[0] {
                let texts = tokenizer.map { tokenizer in report.sequences.map { tokenizer.decode($0.tokens) } }
                if let texts, !quiet {
                    for (sequence, text) in zip(report.sequences, texts) { print("sequence \(sequence.id + 1): \(text.debugDescription)") }
                }
                var document = report.json(model: configuration.name, texts: texts)
                if measureBounds { document = Self.withBounds(document, report: report, model: configuration, weights: weights, promptLengths: mine.map(\.prompt.count), ranks: world.size) }
                if let outputPath { try AtomicFileWriter.write(document.serialized() + "\n", to: outputPath) }
                if let logitsPath {
                    try NpyArray(float32: report.prefillLogits, shape: [report.prefillLogits.count / decoder.vocabulary, decoder.vocabulary]).write(to: logitsPath)
                }
            }
        }
        if algorithms.count > 1, world.rank == 0 { print("tokens identical across exchanges: \(algorithms.map(\.rawValue).joined(separator: ", "))") }
    }

    /// Measures the run's bounds (rank 0's batch), prints them and adds them to `document`.
    static func withBounds(_ document: JSONValue, report: GenerationReport, model: ModelConfiguration, weights: DecoderWeights,
                           promptLengths: [Int], ranks: Int) -> JSONValue {
        let bounds = GenerationBounds.measure(model: model, weights: weights, promptLengths: promptLengths)
        // Per rank: the job's prefill rate over its ranks; decode compared where rank 0 ran one sequence a step.
        let prefillRate = Double(report.totals.prefillRows) / Double(ranks) / max(report.totals.prefillSeconds, 1e-12)
        let single = report.steps.filter { $0.prefillRows == 0 && $0.decodeRows == 1 }.map(\.wallSeconds).sorted()
        let decode = single.isEmpty || report.steps.contains { $0.decodeRows > 1 } ? nil : single[single.count / 2]
        for line in bounds.summaryLines(prefillTokensPerSecond: prefillRate, decodeSecondsPerStep: decode) { print(line) }
        guard case var .object(members) = document else { return document }
        members.append(("bounds", .object([
            ("decode_bytes_per_step", .number(Double(bounds.decodeBytes))), ("plain_read_gb_per_s", .number(bounds.plainReadGBps)),
            ("decode_bound_ms_per_step", .number(bounds.decodeSecondsPerStep * 1000)), ("decode_ms_per_step", decode.map { .number($0 * 1000) } ?? .null),
            ("prefill_gemm_seconds", .number(bounds.prefillGEMMSeconds)), ("prefill_bound_tokens_per_s", .number(bounds.prefillTokensPerSecond)),
            ("prefill_tokens_per_s_per_rank", .number(prefillRate)),
        ])))
        return .object(members)
    }

    /// One request per non-empty line: `{"prompt": [ids], "arrival_step": n, "max_new_tokens": m}`
    /// (the last two optional: 0 and `maxNewTokens`).
    static func readRequests(_ path: String, maxNewTokens: Int) throws -> [GenerationRequest] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw InputError(description: "\(path): cannot be read as UTF-8 text (\(error.localizedDescription))")
        }
        var requests: [GenerationRequest] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
        where !line.allSatisfy({ $0 == " " || $0 == "\r" || $0 == "\t" }) {
            do {
                let object = try JSONObjectReader(try JSONParser.parse(Array(line.utf8)))
                try object.rejectUnknownKeys(allowed: ["prompt", "arrival_step", "max_new_tokens"])
                let prompt = try object.array("prompt").map { (itemPath, item) throws(JSONFieldError) in try JSONObjectReader.integer(item, path: itemPath) }
                let arrival = try object.optionalInteger("arrival_step") ?? 0
                let budget = try object.optionalInteger("max_new_tokens") ?? maxNewTokens
                guard arrival >= 0 else { throw JSONFieldError(path: "arrival_step", problem: "must be ≥ 0, got \(arrival)") }
                guard budget >= 1 else { throw JSONFieldError(path: "max_new_tokens", problem: "must be ≥ 1, got \(budget)") }
                requests.append(GenerationRequest(id: requests.count, prompt: prompt, arrivalStep: arrival, maxNewTokens: budget))
            } catch {
                throw InputError(description: "\(path):\(number + 1): \(error)")
            }
        }
        guard !requests.isEmpty else { throw InputError(description: "\(path): no requests (one JSON object per line)") }
        return requests
    }

    /// One prompt per non-empty line of text, encoded with `tokenizer`.
    static func readTextPrompts(_ path: String, tokenizer: Tokenizer) throws -> [[Int]] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw InputError(description: "\(path): cannot be read as UTF-8 text (\(error.localizedDescription))")
        }
        let prompts = text.split(separator: "\n").map { tokenizer.encode(String($0)) }.filter { !$0.isEmpty }
        guard !prompts.isEmpty else { throw InputError(description: "\(path): no prompts (one per line)") }
        return prompts
    }

    /// One sequence of token ids per non-empty line (ids separated by spaces or commas), or the
    /// rows of an int32/int64 .npy `[sequences, length]`.
    static func readPrompts(_ path: String) throws -> [[Int]] {
        if path.hasSuffix(".npy") {
            let array: NpyArray
            do { array = try NpyArray.load(path: path) } catch { throw InputError(description: "\(error)") }
            guard array.shape.count == 2, array.shape[0] > 0, array.shape[1] > 0, let values = array.integerValues else {
                throw InputError(description: "\(path): expected int32 or int64 [sequences, length], got \(array.elementType.rawValue) \(array.shape)")
            }
            let length = array.shape[1]
            return (0..<array.shape[0]).map { Array(values[$0 * length..<($0 + 1) * length]) }
        }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw InputError(description: "\(path): cannot be read as UTF-8 text (\(error.localizedDescription))")
        }
        var prompts: [[Int]] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let fields = line.split { $0 == " " || $0 == "," || $0 == "\t" || $0 == "\r" }
            guard !fields.isEmpty else { continue }
            var ids: [Int] = []
            for field in fields {
                guard let id = Int(field) else { throw InputError(description: "\(path):\(number + 1): '\(field)' is not a token id") }
                ids.append(id)
            }
            prompts.append(ids)
        }
        guard !prompts.isEmpty else { throw InputError(description: "\(path): no prompts (one sequence of token ids per line)") }
        return prompts
    }
}
