import ClusterTopology
import Coordination
import ExpertParallel
import FileFormats
import Foundation
import JobControl
import MessagePassing
import MoE
import Session

/// `moe run`'s set-up before the session: the checks on options, the model and this rank's
/// weights, the banner; and the outputs after it.
extension RunCommand {
    /// What `loadModel` read: the model, this rank's weights of the first placement, the trace.
    struct LoadedModel {
        let configuration: ModelConfiguration
        /// Emptied once the FFNs are prepared (`InferenceSession.prepare`), so the fp32 arrays go.
        var weights: [LayerWeights]
        let trace: RoutingTrace?
        /// The model file's `overlap_degree` (a run knob kept for compatibility).
        let fileOverlapDegree: OverlapDegree
    }

    /// Options that cannot apply to this job are refused, not ignored (every rank reaches the
    /// same verdict from the same numbers; usage errors exit 2).
    func refuseInapplicableOptions(_ context: JobContext, ranks: Int) throws {
        if let problem = testingAids.problem(ranks: ranks, steps: runConfiguration.steps) {
            throw JobFailure(message: "run: \(problem)", reportingRank: 0, exitCode: 2)
        }
        let coordinatorRank = runConfiguration.coordinatorRank
        try context.collectively {
            guard coordinatorRank < ranks else {
                throw InputError(description: "--coordinator \(coordinatorRank): the job has ranks 0...\(ranks - 1)")
            }
        }
    }

    /// Reads the model, checks that it fits the node, loads this rank's weights of the first
    /// placement (the same on every rank and in every coordinator: it depends on the policy
    /// alone) and the trace; every rank must run the same model.
    func loadModel(_ context: JobContext, world: Communicator, topology: Topology) throws -> LoadedModel {
        let ranks = world.size, here = world.rank
        let localRanks = try context.configureBLASThreads(requested: blasThreads).localRanks
        let file = try context.collectively { try model.loadModelFile() }
        let configuration = file.model
        if let problem = placementPolicy.problem(layers: configuration.layers, worldSize: ranks) {
            throw JobFailure(message: "run: \(problem)", reportingRank: 0, exitCode: 2)
        }
        let firstPlacement = PlacementPlanner(policy: placementPolicy, layers: configuration.layers, worldSize: ranks, nodeOfRank: topology.nodeOfRank)
        func slotExperts(_ layer: Int) -> [Int] {
            let placement = firstPlacement.placements[layer]
            return firstPlacement.slots[layer][placement.group(ofRank: here)].slots[placement.rankInGroup(here)]
        }
        let (weights, weightsIdentity) = try context.collectively { () throws -> ([LayerWeights], String) in
            // Before any weight or buffer is allocated: does this fit the node?
            let estimate = MemoryEstimate.of(
                model: configuration,
                expertSlots: { firstPlacement.maxSlotsPerRank(layer: $0, group: firstPlacement.placements[$0].group(ofRank: here)) },
                tokens: try model.tokensPerRank(ranks: ranks), sourceRanks: ranks, capacityPlanCache: runConfiguration.planCache == .capacity)
            if let problem = estimate.problem(processes: localRanks) { throw InputError(description: problem) }
            let file = try model.openWeights()
            let weights = try ModelWeights.load(configuration, heldExperts: slotExperts, seed: model.seed, file: file)
            return (weights, file.map(ModelOptions.identity) ?? "seeded from \(model.seed)")
        }
        // The same command line can still name files that differ between hosts.
        try context.agree(on: [("model", ModelOptions.canonical(configuration)), ("weights", weightsIdentity)], what: "model")
        if let problem = model.problem(with: configuration) { throw JobFailure(message: "run: \(problem)", reportingRank: 0, exitCode: 2) }
        let trace = try context.collectively { try model.loadTrace(model: configuration, ranks: ranks, steps: runConfiguration.steps) }
        if trace != nil, !configuration.taskExperts.isEmpty {
            throw JobFailure(message: "run: --routing-trace replaces a gate's choices, but the model '\(configuration.name)' routes by task", reportingRank: 0, exitCode: 2)
        }
        return LoadedModel(configuration: configuration, weights: weights, trace: trace, fileOverlapDegree: file.overlapDegree)
    }

    /// The session's configuration for `configuration`: the overlap degree (the option, else the
    /// model file's), tokens per rank, and the refusals of settings that cannot go together.
    func sessionConfiguration(for loaded: LoadedModel, ranks: Int) throws -> RunConfiguration {
        var run = runConfiguration
        run.overlap = overlapDegree ?? loaded.fileOverlapDegree
        run.tokensPerRank = try model.tokensPerRank(ranks: ranks)
        if case let .fixed(degree) = run.overlap, degree > max(run.tokensPerRank, 1) {
            throw JobFailure(message: "run: --overlap-degree \(degree) is larger than the rows allow: each rank has \(run.tokensPerRank) tokens per step, so at most \(max(run.tokensPerRank, 1)) chunks", reportingRank: 0, exitCode: 2)
        }
        if run.overlap != .fixed(1), run.planCache != nil {
            throw JobFailure(message: "run: \(DispatchModeError.planCacheWithOverlap(overlap: run.overlap.description))", reportingRank: 0, exitCode: 2)
        }
        return run
    }

    /// Step `step`'s rank-local input: from `--input` (read once, the same every step) or seeded.
    func inputs(_ context: JobContext, model configuration: ModelConfiguration, rank: Int, ranks: Int) -> (Int) throws -> TokenBatch {
        var fileBatch: TokenBatch?
        return { step in
            if let fileBatch { return fileBatch }
            let batch = try context.collectively { try model.batch(model: configuration, rank: rank, ranks: ranks, step: step) }
            if model.inputPath != nil { fileBatch = batch }
            return batch
        }
    }

    func printBanner(_ configuration: ModelConfiguration, ranks: Int, topology: Topology, simulated: Bool, threads: Int, localRanks: Int,
                     isa: CPUISA) {
        let tokens = model.inputPath == nil ? "\(model.tokensPerRank) tokens per rank (seeded)" : "inputs from \(model.inputPath!)"
        print("model \(configuration.name): \(configuration.layers.count) layers, d_model \(configuration.dModel), d_ff \(configuration.dFF), \(configuration.activation.rawValue); experts per layer \(configuration.layers.map { $0.dense ? "dense" : String($0.experts) }.joined(separator: ","))")
        for line in Self.placementSummary(configuration, ranks: ranks) { print(line) }
        let planner = PlacementPlanner(policy: placementPolicy, layers: configuration.layers, worldSize: ranks, nodeOfRank: topology.nodeOfRank)
        if let line = PlacementReport.policyLine(placementPolicy, planner: planner) { print(line) }
        if simulated {
            print("simulated inter-node links: \(topology.interNode.latencyMicroseconds) µs + bytes at \(topology.interNode.bandwidthGigabytesPerSecond) GB/s per node uplink/downlink")
        }
        if let line = capacity.summaryLine { print(line) }
        print("job: \(plural(ranks, "rank")) on \(plural(topology.nodes.count, "node")) (\(topology.name)), \(tokens), \(plural(runConfiguration.steps, "step")), OpenBLAS \(BLAS.coreName) × \(threads) thread\(threads == 1 ? "" : "s") per rank (\(localRanks) ranks share this node's \(ProcessInfo.processInfo.activeProcessorCount) cores)"
)
        print(Self.expertLine(configuration, override: runConfiguration.expertPrecision, isa: isa, int8: runConfiguration.int8))
    }

    /// "cpu: <features>; kernels at <isa>; experts: <precision by layer> (<implementation>)" (rank 0's CPU).
    static func expertLine(_ configuration: ModelConfiguration, override: ExpertPrecision?, isa: CPUISA, int8: Int8Settings) -> String {
        let precisions = configuration.precisions(override: override)
        let distinct = ExpertPrecision.allCases.filter(precisions.contains)
        let layers = distinct.count == 1 ? "every layer \(distinct[0].rawValue)"
            : precisions.enumerated().map { "\($0.offset): \($0.element.rawValue)" }.joined(separator: ", ")
        return "cpu: \(CPUFeatures.detected); kernels at \(isa.rawValue); experts: \(layers) ("
            + distinct.map { $0.kernels(isa: isa, int8: int8).implementation }.joined(separator: "; ") + ")"
    }

    func printMemory(world: Communicator, afterFirstStep: Double, lastStep: Int) throws {
        let memory = try world.allReduce([afterFirstStep, ConsoleReporter.residentMebibytes(), ConsoleReporter.peakResidentMebibytes()], .maximum)
        guard world.rank == 0 else { return }
        print((lastStep > 1 ? String(format: "memory: resident %.1f MiB after step 1, %.1f MiB after step %d", memory[0], memory[1], lastStep)
                            : String(format: "memory: resident %.1f MiB after the step", memory[0]))
              + String(format: ", peak %.1f MiB (largest rank)", memory[2]))
    }

    func writeOutputs(
        context: JobContext, world: Communicator, configuration: ModelConfiguration, batch: TokenBatch, plans: [RoutingPlan],
        runs: [JSONValue], topology: Topology, threads: Int
    ) throws {
        if let outputPath {
            let gathered = try world.gatherBytes(batch.hidden.withUnsafeBytes { Array($0) }, root: 0)
            try context.collectively {
                guard let gathered else { return }
                let bytes = gathered.flatMap { $0 }
                try NpyArray(shape: [bytes.count / 4 / configuration.dModel, configuration.dModel], elementType: .float32, data: bytes)
                    .write(to: outputPath)
            }
        }
        if let routingPath {
            var perLayer: [[JSONValue]] = []
            for plan in plans {
                let text = RoutingReport.rankEntry(plan).serialized(pretty: false)
                let gathered = try world.gatherBytes(Array(text.utf8), root: 0)
                perLayer.append(try gathered.map { try $0.map { try JSONParser.parse($0) } } ?? [])
            }
            try context.writeOnRankZero(RoutingReport.document(perLayer).serialized() + "\n", to: routingPath)
        }
        if let reportPath {
            let document = JSONValue.object([
                ("model", .string(configuration.name)), ("ranks", .number(Double(world.size))),
                ("topology", .string(topology.name)), ("nodes", .number(Double(topology.nodes.count))),
                ("blas_threads_per_rank", .number(Double(threads))), ("blas_core", .string(BLAS.coreName)),
                ("runs", .array(runs)),
            ])
            try context.writeOnRankZero(document.serialized() + "\n", to: reportPath)
        }
    }

    /// One line per run of layers whose placement is not plain expert parallelism (fewer
    /// experts than ranks), and one for residual layers.
    static func placementSummary(_ configuration: ModelConfiguration, ranks: Int) -> [String] {
        var lines: [String] = []
        var start = 0
        let layers = configuration.layers
        while start < layers.count {
            var end = start + 1
            while end < layers.count && layers[end].experts == layers[start].experts && layers[end].dense == layers[start].dense { end += 1 }
            let placement = ExpertPlacement(experts: layers[start].experts, worldSize: ranks)
            if placement.groupCount > 1, !layers[start].dense {
                let last = placement.ranks(ofGroup: placement.groupCount - 1).count
                let shape = last == placement.groupSize
                    ? "\(placement.groupCount) expert-parallel groups of \(placement.groupSize) ranks"
                    : "\(placement.groupCount - 1) expert-parallel groups of \(placement.groupSize) ranks and one of \(last)"
                let span = end - start == 1 ? "layer \(start)" : "layers \(start)-\(end - 1)"
                lines.append("\(span): \(layers[start].experts) experts < \(ranks) ranks: \(shape); tokens are dispatched inside their rank's group")
            }
            start = end
        }
        let residual = layers.indices.filter { layers[$0].residual }
        if !residual.isEmpty {
            lines.append("residual (PR-MoE) layers: \(residual.map(String.init).joined(separator: ",")): dense MLP + top-1 expert, mixed per token")
        }
        let dense = layers.indices.filter { layers[$0].dense }
        if !dense.isEmpty {
            lines.append("dense layers: \(dense.map(String.init).joined(separator: ",")): one FFN on every rank, no gate, no exchange")
        }
        let shared = layers.indices.filter { layers[$0].sharedDFF > 0 }
        if !shared.isEmpty {
            lines.append("shared experts in layers \(shared.map(String.init).joined(separator: ",")): computed on each token's own rank, added to the routed sum")
        }
        return lines
    }
}
