import ArgumentParsing
import FileFormats
import JobControl
import Foundation
import MoE

/// Options shared by the commands that run a model (`run`, `reference`): declared once.
enum ModelOptions {
    static let model = TypedOption<String?>.string("model", "FILE", "model JSON file (see docs/MODEL.md); default: the built-in model")
    static let weights = TypedOption<String?>.string(
        "weights", "FILE", "safetensors weights (moe init-weights writes one); default: seeded from --seed")
    static let tokensPerRank = TypedOption<Int>.integer("tokens-per-rank", default: 512, in: 0...(1 << 24),
                                                        "tokens per rank when inputs are generated")
    static let input = TypedOption<String?>.string(
        "input", "FILE", "float32 .npy [tokens, d_model] of hidden states, split over ranks in contiguous blocks")
    static let taskIds = TypedOption<String?>.string("task-ids", "FILE", "int32/int64 .npy [tokens] of task ids, for models with task_experts")
    static let seed = TypedOption<UInt64>.seed(default: 1, "seed of generated weights and inputs")
    static let sequenceLength = TypedOption<Int?>.integer(
        "sequence-length", in: 1...(1 << 24),
        "capacity per sequence of this many tokens (Switch Transformers): inputs are split over ranks in whole sequences")
    static let routingTrace = TypedOption<String?>.string(
        "routing-trace", "FILE", "replay recorded routing instead of the gate: int32/int64 .npy [steps, layers, tokens, k] of expert ids (docs/MODEL.md)")
    static let routingTraceWeights = TypedOption<String?>.string(
        "routing-trace-weights", "FILE", "float32 .npy of the trace's shape: each route's weight before normalisation (default 1/k)")
    static let specs = [model.spec, weights.spec, tokensPerRank.spec, input.spec, taskIds.spec, seed.spec, sequenceLength.spec,
                        routingTrace.spec, routingTraceWeights.spec]

    struct Values {
        let modelPath: String?
        let weightsPath: String?
        let tokensPerRank: Int
        let inputPath: String?
        let taskIdsPath: String?
        let seed: UInt64
        let sequenceLength: Int?
        let routingTracePath: String?
        let routingTraceWeightsPath: String?
    }

    static func read(_ options: ParsedOptions) throws(UsageError) -> Values {
        if try options.value(taskIds) != nil, try options.value(input) == nil {
            throw .conflict(command: options.command, detail: "--task-ids gives the task of each --input token; without --input the tasks are generated")
        }
        let values = Values(modelPath: try options.value(model), weightsPath: try options.value(weights),
                            tokensPerRank: try options.value(tokensPerRank), inputPath: try options.value(input),
                            taskIdsPath: try options.value(taskIds), seed: try options.value(seed),
                            sequenceLength: try options.value(sequenceLength), routingTracePath: try options.value(routingTrace),
                            routingTraceWeightsPath: try options.value(routingTraceWeights))
        if values.routingTraceWeightsPath != nil, values.routingTracePath == nil {
            throw .conflict(command: options.command, detail: "--routing-trace-weights gives the weights of a --routing-trace; give the trace too")
        }
        if let length = values.sequenceLength, values.inputPath == nil, values.tokensPerRank % length != 0 {
            throw .conflict(command: options.command, detail: "--tokens-per-rank \(values.tokensPerRank) is not a whole number of --sequence-length \(length) sequences")
        }
        return values
    }
}

extension ModelOptions {
    /// The model as text that is the same in every process for the same model (dictionaries
    /// sorted: their order differs between processes).
    static func canonical(_ model: ModelConfiguration) -> String {
        "\(model.name), d_model \(model.dModel), d_ff \(model.dFF), \(model.activation.rawValue), layers \(model.layers)"
            + ", task_experts " + model.taskExperts.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; ")
    }

    /// What identifies a weights file across hosts: its size and every tensor's name, dtype,
    /// shape and offsets (not its path or time stamps, which copies do not share).
    static func identity(_ file: SafetensorsReader) -> String {
        "\(file.fileSize) bytes: " + file.entries.sorted { $0.key < $1.key }
            .map { "\($0.key):\($0.value.dtype)\($0.value.shape)@\($0.value.dataRange.lowerBound)" }.joined(separator: ",")
    }
}

extension ModelOptions.Values {
    /// The files the run reads, by option (for the output checks).
    var inputPaths: [(option: String, path: String?)] {
        [ModelOptions.model.naming(modelPath), ModelOptions.weights.naming(weightsPath), ModelOptions.input.naming(inputPath),
         ModelOptions.taskIds.naming(taskIdsPath), ModelOptions.routingTrace.naming(routingTracePath),
         ModelOptions.routingTraceWeights.naming(routingTraceWeightsPath)]
    }

    /// The most tokens one of `ranks` ranks holds per step: `--tokens-per-rank`, or its share of
    /// `--input` (from the file's header only).
    func tokensPerRank(ranks: Int) throws -> Int {
        guard let inputPath else { return tokensPerRank }
        let rows = try NpyArray.header(path: inputPath).shape.first ?? 0
        let unit = sequenceLength ?? 1
        return ((rows / unit + ranks - 1) / ranks) * unit
    }

    /// Why an option cannot apply to `configuration`, if it cannot (refused with exit 2).
    func problem(with configuration: ModelConfiguration) -> String? {
        if let taskIdsPath, configuration.taskExperts.isEmpty {
            return "--task-ids \(taskIdsPath): the model '\(configuration.name)' routes by gate (it has no task_experts), so task ids would be ignored"
        }
        return nil
    }

    /// The model.
    func loadModel() throws -> ModelConfiguration { try loadModelFile().model }

    /// The model file: the model, and the run knobs an older file carries.
    func loadModelFile() throws -> ModelFile {
        try modelPath.map { path throws in try ModelFile.load(path: path) } ?? ModelFile(model: .builtInDefault)
    }

    func openWeights() throws -> SafetensorsReader? {
        guard let weightsPath else { return nil }
        return try SafetensorsReader(path: weightsPath)
    }

    /// The routing trace of `--routing-trace`, checked against the model and the job (`ranks`
    /// ranks, `steps` steps), or nil.
    func loadTrace(model configuration: ModelConfiguration, ranks: Int, steps: Int) throws -> RoutingTrace? {
        guard let routingTracePath else { return nil }
        let globalTokens = try inputPath.map { path throws in try NpyArray.header(path: path).shape.first ?? 0 } ?? tokensPerRank * ranks
        do {
            return try RoutingTrace.load(expertsPath: routingTracePath, weightsPath: routingTraceWeightsPath, model: configuration,
                                         globalTokens: globalTokens, steps: steps)
        } catch {
            throw InputError(description: error.description)
        }
    }

    /// The inputs of `step` for the global tokens `range` of a job with `ranks` ranks: from
    /// `--input` (the same every step) or seeded per step. Rejects NaN and infinities.
    func batch(model: ModelConfiguration, rank: Int, ranks: Int, step: Int) throws -> TokenBatch {
        let tasks = model.taskExperts.keys.sorted()
        var batch: TokenBatch
        if let inputPath {
            // This rank's rows only: the file is never read whole.
            var range = 0..<0
            var unsplittable: Int?
            let (slice, fileShape) = try NpyArray.loadRows(path: inputPath) { total in
                if let sequenceLength, total % sequenceLength != 0 { unsplittable = total; return 0..<0 }
                range = TokenPartition.range(rank: rank, ranks: ranks, total: total, unit: sequenceLength ?? 1)
                return range
            }
            if let unsplittable, let sequenceLength {
                throw InputError(description: "\(inputPath): \(unsplittable) tokens are not a whole number of --sequence-length \(sequenceLength) sequences")
            }
            guard fileShape.count == 2, fileShape[1] == model.dModel, let values = slice.float32Values else {
                throw InputError(description: "\(inputPath): expected float32 [tokens, \(model.dModel)] (d_model of the model), got \(slice.elementType.rawValue) \(fileShape)")
            }
            batch = TokenBatch(hidden: values, taskIds: [], dModel: model.dModel)
            batch.firstToken = range.lowerBound
            if !tasks.isEmpty {
                guard let taskIdsPath else {
                    throw InputError(description: "the model routes by task (task_experts) but no --task-ids file was given for \(inputPath)")
                }
                let (ids, idsShape) = try NpyArray.loadRows(path: taskIdsPath) { _ in range }
                guard idsShape == [fileShape[0]], let values = ids.integerValues else {
                    throw InputError(description: "\(taskIdsPath): expected int32 or int64 [\(fileShape[0])] (one id per input token), got \(ids.elementType.rawValue) \(idsShape)")
                }
                batch.taskIds = values
            }
        } else {
            let range = rank * tokensPerRank..<(rank + 1) * tokensPerRank
            batch = TokenBatch.seeded(range: range, dModel: model.dModel, seed: seed &+ UInt64(step) &* 0x9E37_79B9, tasks: tasks)
        }
        batch.sequenceLength = sequenceLength
        if let (token, feature) = batch.firstNonFinite() {
            let source = inputPath ?? "generated inputs"
            let global = (inputPath == nil ? rank * tokensPerRank : 0) + token
            throw InputError(description: "\(source): hidden state of \(inputPath == nil ? "token \(global)" : "rank-local token \(token) (rank \(rank))") feature \(feature) is \(batch.hidden[token * model.dModel + feature]) (NaN or infinite)")
        }
        if let unknown = batch.taskIds.first(where: { model.taskExperts[$0] == nil }) {
            throw InputError(description: "\(taskIdsPath ?? "task ids"): task id \(unknown) is not in the model's task_experts (\(tasks.map(String.init).joined(separator: ", ")))")
        }
        return batch
    }
}

/// Routing decisions as JSON: `{"layers": [{"layer": l, "ranks": [{"expert": [...], "slot": [...],
/// "kept_per_expert": [...], "dropped_per_expert": [...]}]}]}`, route arrays flattened `[k][T]`.
enum RoutingReport {
    static func rankEntry(_ plan: RoutingPlan) -> JSONValue {
        .object([
            ("tokens", .number(Double(plan.tokenCount))), ("capacity", plan.capacity.map { .number(Double($0)) } ?? .null),
            ("capacity_per_expert", plan.capacities.map { .array($0.map { .number(Double($0)) }) } ?? .null),
            ("expert", .array(plan.expert.map { .number(Double($0)) })), ("slot", .array(plan.slot.map { .number(Double($0)) })),
            ("kept_per_expert", .array(plan.keptPerExpert.map { .number(Double($0)) })),
            ("dropped_per_expert", .array(plan.droppedPerExpert.map { .number(Double($0)) })),
        ])
    }

    /// `entries[layer][rank]` already rendered by `rankEntry`.
    static func document(_ entries: [[JSONValue]]) -> JSONValue {
        .object([("layers", .array(entries.enumerated().map { layer, ranks in
            .object([("layer", .number(Double(layer))), ("ranks", .array(ranks))])
        }))])
    }
}
