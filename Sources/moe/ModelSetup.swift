import ArgumentParsing
import FileFormats
import Foundation
import MoE

/// Options shared by the commands that run a model (`run`, `reference`): declared once.
enum ModelOptions {
    static let specs: [OptionSpec] = [
        .value("model", "FILE", "model JSON file (see docs/MODEL.md); default: the built-in model"),
        .value("weights", "FILE", "safetensors weights (moe init-weights writes one); default: seeded from --seed"),
        .value("tokens-per-rank", "N", default: "512", "tokens per rank when inputs are generated"),
        .value("input", "FILE", "float32 .npy [tokens, d_model] of hidden states, split over ranks in contiguous blocks"),
        .value("task-ids", "FILE", "int32/int64 .npy [tokens] of task ids, for models with task_experts"),
        .value("seed", "N", default: "1", "seed of generated weights and inputs"),
    ]

    struct Values {
        let modelPath: String?
        let weightsPath: String?
        let tokensPerRank: Int
        let inputPath: String?
        let taskIdsPath: String?
        let seed: UInt64
    }

    static func read(_ options: ParsedOptions) throws(UsageError) -> Values {
        Values(modelPath: options.string("model"), weightsPath: options.string("weights"),
               tokensPerRank: try options.integer("tokens-per-rank", in: 0...(1 << 24)) ?? 512,
               inputPath: options.string("input"), taskIdsPath: options.string("task-ids"),
               seed: UInt64(try options.integer("seed", in: 0...Int.max) ?? 1))
    }
}

/// A problem with a model run's inputs, as one line.
struct InputError: Error, CustomStringConvertible {
    let description: String
}

extension ModelOptions.Values {
    func loadModel() throws -> ModelConfiguration {
        guard let modelPath else { return .builtInDefault }
        return try ModelConfiguration.load(path: modelPath)
    }

    func openWeights() throws -> SafetensorsReader? {
        guard let weightsPath else { return nil }
        return try SafetensorsReader(path: weightsPath)
    }

    /// The inputs of `step` for the global tokens `range` of a job with `ranks` ranks: from
    /// `--input` (the same every step) or seeded per step. Rejects NaN and infinities.
    func batch(model: ModelConfiguration, rank: Int, ranks: Int, step: Int) throws -> TokenBatch {
        let tasks = model.taskExperts.keys.sorted()
        var batch: TokenBatch
        if let inputPath {
            let array = try NpyArray.load(path: inputPath)
            guard array.shape.count == 2, array.shape[1] == model.dModel, let values = array.float32Values else {
                throw InputError(description: "\(inputPath): expected float32 [tokens, \(model.dModel)] (d_model of the model), got \(array.elementType.rawValue) \(array.shape)")
            }
            let range = TokenPartition.range(rank: rank, ranks: ranks, total: array.shape[0])
            batch = TokenBatch(hidden: Array(values[range.lowerBound * model.dModel..<range.upperBound * model.dModel]), taskIds: [], dModel: model.dModel)
            if !tasks.isEmpty {
                guard let taskIdsPath else {
                    throw InputError(description: "the model routes by task (task_experts) but no --task-ids file was given for \(inputPath)")
                }
                let ids = try NpyArray.load(path: taskIdsPath)
                guard ids.shape == [array.shape[0]], let values = ids.integerValues else {
                    throw InputError(description: "\(taskIdsPath): expected int32 or int64 [\(array.shape[0])] (one id per input token), got \(ids.elementType.rawValue) \(ids.shape)")
                }
                batch.taskIds = Array(values[range])
            }
        } else {
            let range = rank * tokensPerRank..<(rank + 1) * tokensPerRank
            batch = TokenBatch.seeded(range: range, dModel: model.dModel, seed: seed &+ UInt64(step) &* 0x9E37_79B9, tasks: tasks)
        }
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

/// Options of the capacity policy and the drifting workload, shared by `run` and `reference`
/// (which replays the policy's plans).
enum CapacityOptions {
    static let specs: [OptionSpec] = [
        .value("policy", "NAME", default: "static", "capacity policy between steps: static, adaptive-factor, reallocate (docs/CAPACITY.md)"),
        .value("target-drop-rate", "R", default: "0.01", "adaptive-factor: drop rate to stay under"),
        .value("window", "STEPS", default: "4", "adaptive-factor: steps of history"),
        .value("floor", "F", default: "0.25", "reallocate: each expert keeps at least this share of the uniform capacity"),
        .value("smoothing", "A", default: "0.5", "reallocate: weight of the newest step in the load average"),
        .value("drift", "AMPLITUDE", default: "0", "drifting workload: peak router bias in logits (0 = off)"),
        .value("drift-period", "STEPS", default: "16", "drifting workload: steps for the hot experts to go once around"),
    ]

    enum PolicyName: String, CaseIterable { case `static`, adaptiveFactor = "adaptive-factor", reallocate }

    struct Values {
        let policy: CapacityPolicy
        let drift: RouterDrift?
    }

    static func read(_ options: ParsedOptions, seed: UInt64) throws(UsageError) -> Values {
        let name = try options.choice("policy", as: PolicyName.self) ?? .static
        let policy: CapacityPolicy
        switch name {
        case .static: policy = .staticFactor
        case .adaptiveFactor:
            policy = .adaptiveFactor(targetDropRate: try options.number("target-drop-rate", in: 0...1) ?? 0.01,
                                     window: try options.integer("window", in: 1...10_000) ?? 4)
        case .reallocate:
            policy = .reallocate(floor: try options.number("floor", in: 0...1) ?? 0.25,
                                 smoothing: try options.number("smoothing", in: 0.000001...1) ?? 0.5)
        }
        let amplitude = try options.number("drift", in: 0...100) ?? 0
        let period = try options.number("drift-period", in: 0.001...1e9) ?? 16
        return Values(policy: policy, drift: amplitude > 0 ? RouterDrift(amplitude: amplitude, period: period, seed: seed) : nil)
    }
}
