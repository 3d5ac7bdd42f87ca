import ArgumentParsing
import FileFormats
import JobControl
import MoE

/// `moe placement`: what EPLB-style redundant placement would do with a recorded workload — reads
/// a stats log (`moe run --stats`), takes each layer's moving-average load per expert, and prints
/// the static placement's rank imbalance beside the balanced one's (`ReplicaPlacement`). No MPI;
/// `moe run --placement balanced` does the same online and migrates the experts.
struct PlacementCommand: JobCommand {
    static let spec = CommandSpec(
        name: "placement",
        summary: "Plan redundant expert placement (DeepSeek's EPLB greedy rule) from a stats log and predict the rank imbalance (no MPI).",
        discussion: """
            Each layer's load per expert is the moving average (weight --smoothing on the newer step) of the
            rows it kept (the routes that chose it, less drops) over the log's steps. The static placement
            is SwiftMoE's contiguous blocks; the balanced one gives --redundant-experts extra slots to every rank, replicates the experts with
            the highest load per replica, and packs replicas heaviest first onto the least-loaded rank with
            a free slot (docs/CAPACITY.md, "Placement"). 'imbalance' is max / mean predicted rank load.
            This is the offline planner; 'moe run --placement balanced --redundant-experts R' re-places
            online from the coordinator's statistics and migrates the experts between steps.
            """,
        options: [Options.ranks.spec, Options.redundant.spec, Options.ranksPerNode.spec, Options.smoothing.spec, Options.json.spec],
        positional: "FILE")

    enum Options {
        static let ranks = TypedOption<Int>.integer("ranks", default: 8, in: 1...1_000_000, "ranks (expert-parallel group size) to place on")
        static let redundant = TypedOption<Int>.integer("redundant-experts", "R", default: 1, in: 0...1024, "extra expert slots per rank")
        static let ranksPerNode = TypedOption<Int?>.integer(
            "ranks-per-node", in: 1...1_000_000, "node-aware variant: consecutive ranks form nodes of this size")
        static let smoothing = TypedOption<Double>.number("smoothing", "A", default: 0.5, in: 0.000001...1,
                                                          "weight of the newer step in the load's moving average")
        static let json = TypedOption<String?>.string("json", "FILE", "write the placements as JSON")
    }

    let path: String
    let ranks: Int, redundant: Int, ranksPerNode: Int?
    let smoothing: Double
    let jsonPath: String?

    init(options: ParsedOptions) throws(UsageError) {
        path = try options.singlePositional("stats log file (moe placement FILE)")
        ranks = try options.value(Options.ranks)
        redundant = try options.value(Options.redundant)
        ranksPerNode = try options.value(Options.ranksPerNode)
        smoothing = try options.value(Options.smoothing)
        jsonPath = try options.value(Options.json)
    }

    func run(_ context: JobContext) throws {
        try context.checkPaths(outputs: [Options.json.naming(jsonPath)], inputs: [("stats log", path)])
        let steps: [StatsLog.Step]
        do { steps = try StatsCommand.load(path).steps } catch { throw JobFailure(message: "\(error)", reportingRank: 0) }
        let nodeOfRank = ranksPerNode.map { size in (0..<ranks).map { $0 / size } }
        print("\(path): \(steps.count) steps; \(ranks) ranks, \(redundant) redundant slot(s) per rank"
              + (ranksPerNode.map { ", nodes of \($0) ranks (node-aware)" } ?? ""))
        var layers: [JSONValue] = []
        for layer in steps[0].routed.indices {
            // The rows each expert kept, as the runtime's planner balances them.
            var load = steps[0].kept[layer].map(Double.init)
            for step in steps.dropFirst() {
                load = zip(load, step.kept[layer]).map { (1 - smoothing) * $0 + smoothing * Double($1) }
            }
            guard load.reduce(0, +) > 0 else {
                print("layer \(layer): no routes (a dense layer, or nothing routed)")
                continue
            }
            let staticPlacement = ReplicaPlacement.contiguous(load: load, ranks: ranks)
            let balanced = ReplicaPlacement.balanced(load: load, ranks: ranks, redundant: redundant, nodeOfRank: nodeOfRank)
            let slots = ReplicaPlacement.slotsPerRank(experts: load.count, ranks: ranks, redundant: redundant)
            print(String(format: "layer %d: %d experts; imbalance (max/mean rank load) static %.3f → balanced %.3f (%d slots per rank)",
                         layer, load.count, staticPlacement.imbalance, balanced.imbalance, slots))
            let replicated = balanced.replicas.enumerated().filter { $0.element.count > 1 }
            if !replicated.isEmpty {
                print("  replicated: " + replicated.map { "expert \($0.offset) ×\($0.element.count)" }.joined(separator: ", "))
            }
            for (rank, experts) in balanced.slots.enumerated() {
                print(String(format: "  rank %d: experts %@ (load %.1f)", rank, experts.map(String.init).joined(separator: ", "), balanced.rankLoad[rank]))
            }
            layers.append(.object([
                ("layer", .number(Double(layer))), ("load", .array(load.map { .number($0) })),
                ("static_imbalance", .number(staticPlacement.imbalance)), ("balanced_imbalance", .number(balanced.imbalance)),
                ("slots", .array(balanced.slots.map { .array($0.map { .number(Double($0)) }) })),
                ("replicas", .array(balanced.replicas.map { .array($0.map { .number(Double($0)) }) })),
            ]))
        }
        if let jsonPath {
            try AtomicFileWriter.write(JSONValue.object([("ranks", .number(Double(ranks))), ("redundant_experts", .number(Double(redundant))),
                                                         ("layers", .array(layers))]).serialized() + "\n", to: jsonPath)
        }
    }
}

/// The lines `moe run` and `moe reference` print about placement: both print the same change
/// lines for the same job, so a test can compare the reference's replay with the run.
enum PlacementReport {
    /// The policy, when it is not the plain static placement.
    static func policyLine(_ policy: PlacementPolicy, planner: PlacementPlanner) -> String? {
        guard policy != .contiguous else { return nil }
        let slots = planner.layers.indices.filter { !planner.layers[$0].dense }.map { layer in
            planner.maxSlotsPerRank(layer: layer, group: 0)
        }
        let moves = policy.kind == .static ? "never moved"
            : "re-planned every \(plural(policy.rebalanceEvery, "step")) when the predicted max/mean rank load improves by more than \(policy.threshold * 100)%"
        return "placement \(policy.kind.rawValue): \(policy.redundant) redundant expert slot\(policy.redundant == 1 ? "" : "s") per rank "
            + "(slots per rank by layer: \(slots.map(String.init).joined(separator: ","))), \(moves)"
    }

    /// One line per change decided after `afterStep` (0-based).
    static func changeLines(_ changes: [PlacementChange], afterStep step: Int) -> [String] {
        changes.map { change in
            "placement change after step \(step + 1): layer \(change.layer) group \(change.group): predicted max/mean rank load "
                + String(format: "%.3f → %.3f", change.before, change.after) + ", \(plural(change.movedSlots.count, "slot")) refilled"
        }
    }
}
