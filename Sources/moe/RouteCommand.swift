import ArgumentParsing
import FileFormats
import JobControl
import MoE

/// `moe route`: the router alone, offline, on logits from a file.
struct RouteCommand: JobCommand {
    static let spec = CommandSpec(
        name: "route",
        summary: "Route one rank's tokens from a logits file and write every decision as JSON (no MPI).",
        discussion: """
            Treats the float32 [T, E] logits as one rank's tokens and applies softmax, top-k,
            capacity and the drop policy exactly as a layer does (docs/ROUTING.md). Writes
            'capacity' and arrays of shape [k][T] (row r = every token's r-th choice): 'choice'
            (expert chosen before drops), 'expert' (-1 if dropped), 'slot' (-1 if dropped),
            'dropped' (0/1) and 'gate' (combine weight, 0 if dropped).
            """,
        options: [
            .value("logits", "FILE", "float32 .npy [T, E] router logits"),
            .value("top-k", "K", default: "2", "routes per token"),
            .value("capacity-factor", "C", default: "1.25", "capacity factor (0 = no limit)"),
            .value("min-capacity", "M", default: "4", "smallest capacity per expert"),
            .value("policy", "POLICY", default: "in-order", "in-order, batch-prioritized or none"),
            .value("priority", "P", default: "max", "batch-prioritized score: max or sum of the top-k probabilities"),
            .flag("dropless", "no capacity limit (same as --policy none)"),
            .value("output", "FILE", "the JSON file to write; default: standard output"),
        ])

    let logitsPath: String
    let topK: Int
    let capacityFactor: Double
    let minCapacity: Int
    let policy: DropPolicy
    let priority: RoutingPriority
    let outputPath: String?

    init(options: ParsedOptions) throws(UsageError) {
        guard let logits = options.string("logits") else {
            throw .missingValue(command: Self.spec.name, option: "logits", valueName: "FILE")
        }
        logitsPath = logits
        topK = try options.integer("top-k", in: 1...65536) ?? 2
        capacityFactor = try options.number("capacity-factor", in: 0...1e6) ?? 1.25
        minCapacity = try options.integer("min-capacity", in: 0...(1 << 30)) ?? 4
        policy = options.flag("dropless") ? .none : (try options.choice("policy", as: DropPolicy.self) ?? .inOrder)
        priority = try options.choice("priority", as: RoutingPriority.self) ?? .max
        outputPath = options.string("output")
    }

    func run(_ context: JobContext) throws {
        do {
            let array = try NpyArray.load(path: logitsPath)
            guard array.shape.count == 2, let logits = array.float32Values else {
                throw InputError(description: "\(logitsPath): expected float32 [T, E] logits, got \(array.elementType.rawValue) \(array.shape)")
            }
            let (tokens, experts) = (array.shape[0], array.shape[1])
            guard experts >= 1, topK <= experts else {
                throw InputError(description: "--top-k \(topK) needs at least \(topK) experts, but \(logitsPath) has \(experts)")
            }
            let layer = LayerConfiguration(experts: experts, topK: topK, capacityFactor: capacityFactor, minCapacity: minCapacity,
                                           dropPolicy: policy, priority: priority)
            let plan = try logits.withUnsafeBufferPointer { (buffer) throws(RoutingError) in
                try Router.route(logits: buffer, tokenCount: tokens, layer: layer)
            }
            func rows<T>(_ values: [T], _ convert: (T) -> JSONValue) -> JSONValue {
                .array((0..<topK).map { r in .array(values[r * tokens..<(r + 1) * tokens].map(convert)) })
            }
            let integer = { (value: Int) in JSONValue.number(Double(value)) }
            let document = JSONValue.object([
                ("tokens", .number(Double(tokens))), ("experts", .number(Double(experts))), ("top_k", .number(Double(topK))),
                ("policy", .string(policy.rawValue)), ("capacity", plan.capacity.map { .number(Double($0)) } ?? .null),
                ("choice", rows(plan.choice, integer)), ("expert", rows(plan.expert, integer)), ("slot", rows(plan.slot, integer)),
                ("dropped", rows(plan.expert) { .number($0 < 0 ? 1 : 0) }), ("gate", rows(plan.gate) { .number(Double($0)) }),
            ])
            let text = document.serialized() + "\n"
            if let outputPath { try AtomicFileWriter.write(text, to: outputPath) } else { print(text, terminator: "") }
        } catch let error as JobFailure {
            throw error
        } catch {
            throw JobFailure(message: "\(error)", reportingRank: 0)
        }
    }
}
