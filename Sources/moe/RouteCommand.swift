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
        options: [Options.logits.spec, Options.topK.spec, Options.capacityFactor.spec, Options.minCapacity.spec, Options.policy.spec,
                  Options.priority.spec, Options.dropless.spec, Options.output.spec])

    enum Options {
        static let logits = TypedOption<String>.required("logits", "FILE", "float32 .npy [T, E] router logits")
        static let topK = TypedOption<Int>.integer("top-k", "K", default: 2, in: 1...65536, "routes per token")
        static let capacityFactor = TypedOption<Double>.number("capacity-factor", "C", default: 1.25, in: 0...1e6, "capacity factor (0 = no limit)")
        static let minCapacity = TypedOption<Int>.integer("min-capacity", "M", default: 4, in: 0...(1 << 30), "smallest capacity per expert")
        static let policy = TypedOption<DropPolicy>.choice("policy", "POLICY", default: .inOrder, "in-order, batch-prioritized or none")
        static let priority = TypedOption<RoutingPriority>.choice(
            "priority", "P", default: .max, "batch-prioritized score: max or sum of the top-k probabilities")
        static let dropless = TypedOption<Bool>.flag("dropless", "no capacity limit (same as --policy none)")
        static let output = TypedOption<String?>.string("output", "FILE", "the JSON file to write; default: standard output")
    }

    let logitsPath: String
    let topK: Int
    let capacityFactor: Double
    let minCapacity: Int
    let policy: DropPolicy
    let priority: RoutingPriority
    let outputPath: String?

    init(options: ParsedOptions) throws(UsageError) {
        logitsPath = try options.value(Options.logits)
        topK = try options.value(Options.topK)
        capacityFactor = try options.value(Options.capacityFactor)
        minCapacity = try options.value(Options.minCapacity)
        policy = try options.value(Options.dropless) ? .none : try options.value(Options.policy)
        priority = try options.value(Options.priority)
        outputPath = try options.value(Options.output)
    }

    func run(_ context: JobContext) throws {
        try context.checkPaths(outputs: [Options.output.naming(outputPath)], inputs: [Options.logits.naming(logitsPath)])
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
