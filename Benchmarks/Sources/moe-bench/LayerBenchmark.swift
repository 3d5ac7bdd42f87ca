import ArgumentParsing
import ClusterTopology
import Exchange
import ExpertParallel
import FileFormats
import Foundation
import JobControl
import MessagePassing
import MoE
import Session

/// `moe-bench layer`: one MoE layer's throughput and where its time goes, beside the same expert
/// GEMMs alone through `cblas_sgemm`, measured in the same run.
struct LayerBenchmark: JobCommand {
    static let spec = CommandSpec(
        name: "layer",
        summary: "Throughput of one MoE layer, per phase, against its expert GEMMs alone (cblas_sgemm).",
        discussion: """
            For every combination of --experts, --top-k, --capacity-factor and --tokens, builds one
            layer (seeded weights and inputs), runs it --warmup times untimed and --repetitions times
            timed (slowest rank per repetition, median reported), then times the same expert GEMMs
            (the row counts each rank's experts received, same shapes, no activation or bias) the
            same way. 'gemm share' = GEMM time / layer time. 'ffn' is the time inside the expert
            FFNs and the dense MLP (GEMMs, bias, activation); 'overhead share' = (layer − ffn) /
            layer, the part spent on routing, packing, exchanges, gathering rows per expert and
            combining. 'dispatch MiB' is the bytes of one dispatch exchange summed over ranks (the
            combine moves the same). With --residual each configuration runs a PR-MoE layer (top-1
            expert + dense MLP, DeepSpeed-MoE) beside a top-2 layer of the same width. With --model
            (an imported Hugging Face model, or any model file) every distinct layer of that model
            is benchmarked with its own width, router, experts, shared expert or dense FFN (seeded
            weights of the model's shapes), and --d-model, --d-ff, --activation, --experts, --top-k,
            --capacity-factor and --residual do not apply; 'ffn' then includes the shared expert.
            """,
        options: TopologyOptions.specs + BLASThreadOptions.specs + PrecisionOptions.specs + Options.specs + TableOutputOptions.specs)

    enum Options {
        static let dModel = TypedOption<Int>.integer("d-model", default: 512, in: 1...65536, "hidden size")
        static let dFF = TypedOption<Int>.integer("d-ff", default: 2048, in: 1...65536, "expert FFN size")
        static let activation = TypedOption<Activation>.choice("activation", "NAME", default: .gelu, "relu, gelu or swiglu")
        static let experts = TypedOption<[Int]>.integers("experts", default: [8, 16], in: 1...(1 << 14), "expert counts")
        static let topK = TypedOption<[Int]>.integers("top-k", default: [1, 2], in: 1...(1 << 14), "routes per token")
        static let capacityFactor = TypedOption<[Double]>.numbers("capacity-factor", default: [1.0, 1.25], in: 0...1e6, "capacity factors")
        static let tokens = TypedOption<[Int]>.integers("tokens", default: [1024, 4096], in: 1...(1 << 24), "tokens per rank")
        static let exchange = TypedOption<AllToAllAlgorithm>.choice("exchange", "NAME", default: .linear, "all-to-all algorithm")
        static let warmup = warmupOption(default: 1)
        static let repetitions = repetitionsOption(default: 5)
        static let seed = TypedOption<UInt64>.seed(default: 1, "seed of weights and inputs")
        static let residual = TypedOption<Bool>.flag(
            "residual", "compare a PR-MoE residual layer (top-1 expert + dense MLP) with a top-2 layer (ignores --top-k)")
        static let model = TypedOption<String?>.string("model", "FILE", "benchmark the distinct layers of this model file instead")
        static let specs = [dModel.spec, dFF.spec, activation.spec, experts.spec, topK.spec, capacityFactor.spec, tokens.spec, exchange.spec,
                            warmup.spec, repetitions.spec, seed.spec, residual.spec, model.spec]
    }

    let dModel: Int, dFF: Int
    let activation: Activation
    let experts: [Int], topKs: [Int], factors: [Double], tokens: [Int]
    let algorithm: AllToAllAlgorithm
    let warmup: Int, repetitions: Int
    let blasThreads: Int?
    let seed: UInt64
    let output: TableOutputOptions.Values
    let residual: Bool
    let topologyOptions: TopologyOptions.Values
    let modelPath: String?
    let precision: PrecisionOptions.Values

    init(options: ParsedOptions) throws(UsageError) {
        precision = try PrecisionOptions.read(options)
        modelPath = try options.value(Options.model)
        dModel = try options.value(Options.dModel)
        dFF = try options.value(Options.dFF)
        activation = try options.value(Options.activation)
        experts = try options.value(Options.experts)
        topKs = try options.value(Options.topK)
        tokens = try options.value(Options.tokens)
        factors = try options.value(Options.capacityFactor)
        algorithm = try options.value(Options.exchange)
        warmup = try options.value(Options.warmup)
        repetitions = try options.value(Options.repetitions)
        blasThreads = try options.value(BLASThreadOptions.blasThreads)
        seed = try options.value(Options.seed)
        output = try TableOutputOptions.read(options)
        residual = try options.value(Options.residual)
        topologyOptions = try TopologyOptions.read(options)
    }

    @MainActor
    func run(_ context: JobContext) throws {
        let harness = try BenchmarkHarness.start(context, outputs: [TableOutputOptions.csv.naming(output.csvPath), TableOutputOptions.json.naming(output.jsonPath)])
        let world = harness.world
        let fileModel = try context.collectively { try modelPath.map { path throws in try ModelConfiguration.load(path: path) } }
        let (topology, links) = try context.topologyAndLinks(topologyOptions)
        let (threads, localRanks) = try context.configureBLASThreads(requested: blasThreads)
        let isa = try RunConfiguration.resolve(precision.cpuISA, world: world)
        if world.rank == 0 {
            printHeader(harness: harness, fileModel: fileModel, topology: topology, simulated: links != nil, threads: threads, localRanks: localRanks, isa: isa)
        }
        var table = ResultTable(columns: ["ranks", "tokens_per_rank", "experts", "layer", "capacity_factor", "precision", "layer_ms", "tokens_per_s",
                                          "gate_ms", "dense_ms", "pack_ms", "dispatch_ms", "experts_ms", "combine_ms", "ffn_ms", "gemm_ms",
                                          "gemm_share", "ffn_alone_ms", "experts_over_ffn_alone", "weight_gb_per_s", "overhead_share", "dispatch_mib", "dropped"])
        // With --residual every configuration runs a PR-MoE layer and a top-2 layer side by side.
        let configurations = layerModels(fileModel)
        for (index, (tokenCount, variant, model)) in configurations.enumerated() {
            let layer = model.layers[0]
            let expertCount = layer.experts, factor = layer.capacityFactor, dModel = model.dModel
            harness.progress("[\(index + 1)/\(configurations.count)] tokens \(tokenCount), experts \(expertCount), \(variant), C \(factor)")
            guard layer.topK <= expertCount else { continue }
            let placement = ExpertPlacement(experts: expertCount, worldSize: world.size)
            let weights = try ModelWeights.load(model, heldExperts: { _ in Array(placement.heldExperts(ofRank: world.rank)) }, seed: seed, file: nil)
            // The layer runs through the library session, the path `moe run` takes.
            var run = RunConfiguration()
            run.algorithms = [algorithm]
            run.tokensPerRank = tokenCount
            (run.expertPrecision, run.cpuISA, run.exchangePrecision) = (precision.expertPrecision, precision.cpuISA, precision.exchangePrecision)
            run.int8 = precision.int8
            let prepared = try InferenceSession.prepare(weights, configuration: run, model: model, world: world)
            let session = try InferenceSession(configuration: run, model: model, weights: prepared, trace: nil, algorithm: algorithm,
                                               world: world, topology: topology, links: links, logStatistics: false, liveEvery: 0)
            let input = TokenBatch.seeded(range: world.rank * tokenCount..<(world.rank + 1) * tokenCount, dModel: dModel, seed: seed, tasks: [])
            // The session times the forward pass itself (slowest rank): its statistics and sums
            // are not part of the layer's time.
            var outcomes: [StepOutcome] = []
            for repetition in 0..<(warmup + repetitions) {
                var batch = input
                try world.barrier()
                let outcome = try session.forward(&batch, step: 0, lastStep: true)
                if repetition >= warmup { outcomes.append(outcome) }
            }
            let layerSamples = outcomes.map(\.wallSeconds)
            let phaseSamples = outcomes.map { $0.slowestPhases.values + [$0.slowestExpertComputeSeconds] }
            let moeLayer = session.distributed.layers[0]
            let last = outcomes[outcomes.count - 1]
            let phaseCount = PhaseTimes.names.count
            let phases = (0...phaseCount).map { phase in Statistics(phaseSamples.suffix(repetitions).map { $0[phase] }).median }
            // The same GEMMs alone: each local expert's received row count (and the dense MLP or
            // shared expert over every local token), same shapes.
            var gemms = layer.dense ? [] : moeLayer.receivedRowsPerExpert.map { ($0, model.form(.expert, layer: 0)) }
            if layer.residual || layer.dense { gemms.append((tokenCount, model.form(.dense, layer: 0))) }
            if layer.sharedDFF > 0 { gemms.append((tokenCount, model.form(.shared, layer: 0))) }
            let gemmSamples = try gemmOnly(gemms, dModel: dModel, harness: harness)
            // The same FFNs alone in the layer's own precision (its backend, same rows), and the
            // expert weights the step read.
            let ffnAloneSamples = try ffnAlone(gemms, kernels: session.kernels[0], dModel: dModel, harness: harness)
            let bytesRead = Double(moeLayer.expertBytesHeld) * Double(moeLayer.receivedRowsPerExpert.filter { $0 > 0 }.count)
                / Double(max(1, moeLayer.receivedRowsPerExpert.count))
            let totals = [last.droppedRoutes, last.droppedRoutes + last.keptRoutes, last.dispatchBytesByLayer[0]]  // over all ranks
            let layerTime = Statistics(layerSamples).median
            let gemmTime = Statistics(gemmSamples).median
            let ffnTime = phases[phaseCount] + phases[1]  // expert FFNs + dense MLP
            let ffnAloneTime = Statistics(ffnAloneSamples).median
            table.append([String(world.size), String(tokenCount), layer.dense ? "dense" : String(expertCount), variant, String(factor),
                          session.kernels[0].precision.rawValue, format(layerTime * 1000), format(Double(tokenCount * world.size) / layerTime, 0)]
                         + phases.prefix(phaseCount).map { format($0 * 1000) }
                         + [format(ffnTime * 1000), format(gemmTime * 1000), format(gemmTime / layerTime),
                            format(ffnAloneTime * 1000), format(phases[4] / max(ffnAloneTime, 1e-9)),
                            format(bytesRead / max(phases[phaseCount], 1e-9) / 1e9, 1),
                            format(max(0, layerTime - ffnTime) / layerTime), format(Double(totals[2]) / 1_048_576),
                            format(Double(totals[0]) / Double(max(1, totals[1])))])
        }
        harness.endProgress()
        guard world.rank == 0 else { return }
        print(table.aligned)
        let metadata: [(String, JSONValue)] = [
            ("benchmark", .string("layer")), ("mpi", .string(MPIRuntime.libraryVersion())), ("blas_core", .string(BLAS.coreName)),
            ("blas_threads_per_rank", .number(Double(threads))), ("d_model", .number(Double(fileModel?.dModel ?? dModel))),
            ("d_ff", .number(Double(fileModel?.dFF ?? dFF))), ("activation", .string((fileModel?.activation ?? activation).rawValue)),
            ("exchange", .string(algorithm.rawValue)), ("model", modelPath.map { .string($0) } ?? .null),
        ]
        if let csvPath = output.csvPath { try AtomicFileWriter.write(table.csv, to: csvPath) }
        if let jsonPath = output.jsonPath { try AtomicFileWriter.write(table.json(metadata: metadata), to: jsonPath) }
    }

    /// The lines that say where the numbers come from: MPI, BLAS, topology, shapes, the CPU's
    /// features and the kernels, and the memory bandwidth of a plain read.
    @MainActor
    private func printHeader(harness: BenchmarkHarness, fileModel: ModelConfiguration?, topology: Topology, simulated: Bool, threads: Int,
                             localRanks: Int, isa: CPUISA) {
        print(harness.environmentLine(blasThreads: threads, localRanks: localRanks))
        print("# topology \(topology.name) (\(topology.nodes.count) node(s))" + (!simulated ? "" : ", inter-node links SIMULATED (\(topology.interNode.latencyMicroseconds) µs, \(topology.interNode.bandwidthGigabytesPerSecond) GB/s per node)"))
        if let fileModel {
            print("# moe-bench layer: model \(fileModel.name) (\(modelPath!)), d_model \(fileModel.dModel), \(fileModel.activation.rawValue), exchange \(algorithm.rawValue), \(warmup) warm-up + \(repetitions) timed runs, medians of the slowest rank")
        } else {
            print("# moe-bench layer: d_model \(dModel), d_ff \(dFF), \(activation.rawValue), exchange \(algorithm.rawValue), \(warmup) warm-up + \(repetitions) timed runs, medians of the slowest rank")
        }
        print("# cpu: \(CPUFeatures.detected); kernels at \(isa.rawValue); exchanges in \(precision.exchangePrecision.rawValue); plain read of 256 MiB: \(format(MemoryBandwidth.plainRead(), 1)) GB/s")
        for expertPrecision in Set((fileModel?.precisions(override: precision.expertPrecision)) ?? [precision.expertPrecision ?? .fp32]).sorted(by: { $0.rawValue < $1.rawValue }) {
            print("# experts \(expertPrecision.rawValue): \(expertPrecision.kernels(isa: isa, int8: precision.int8).implementation)")
        }
    }

    /// The one-layer models to benchmark, with their label and token count: every distinct layer
    /// of `fileModel` (labelled by its first index and how many layers share it), or the
    /// --experts × --top-k × --capacity-factor (× --residual) sweep.
    private func layerModels(_ fileModel: ModelConfiguration?) -> [(tokens: Int, name: String, model: ModelConfiguration)] {
        var variants: [(name: String, model: ModelConfiguration)] = []
        if let fileModel {
            var seen: [LayerConfiguration] = []
            for layer in fileModel.layers where !seen.contains(layer) {
                seen.append(layer)
                var model = fileModel
                model.layers = [layer]
                let indices = fileModel.layers.indices.filter { fileModel.layers[$0] == layer }
                let kind = layer.dense ? "dense" : "top-\(layer.topK)" + (layer.sharedDFF > 0 ? "+shared" : "")
                variants.append(("layer \(indices[0])" + (indices.count > 1 ? " ×\(indices.count)" : "") + " \(kind)", model))
            }
        } else {
            let shapes: [(name: String, topK: Int, residual: Bool)] = residual
                ? [("top-2", 2, false), ("pr-moe", 1, true)] : topKs.map { ("top-\($0)", $0, false) }
            for e in experts {
                for c in factors {
                    for shape in shapes {
                        let layer = LayerConfiguration(experts: e, topK: shape.topK, capacityFactor: c, minCapacity: 4, residual: shape.residual)
                        variants.append((shape.name, ModelConfiguration(name: "bench", dModel: dModel, dFF: dFF, activation: activation, layers: [layer])))
                    }
                }
            }
        }
        return tokens.flatMap { t in variants.map { (t, $0.name, $0.model) } }
    }

    /// Times the FFNs alone in `kernels`' precision: for each (rows, form), one FFN of that form
    /// (seeded weights, prepared once) over that many rows.
    @MainActor
    private func ffnAlone(_ ffns: [(rows: Int, form: FFNForm)], kernels: any ExpertKernels, dModel: Int, harness: BenchmarkHarness) throws -> [Double] {
        var prepared: [Int: any PreparedFFN] = [:]  // by dFF
        for (_, form) in ffns where prepared[form.dFF] == nil {
            let count = dModel * form.dFF
            let values = (0..<count).map { Float(($0 * 7919) % 997) / 9970 - 0.05 }
            let weights = ExpertWeights(w1: values, b1: form.hasBias ? [Float](repeating: 0.01, count: form.dFF) : [], w2: values,
                                        b2: form.hasBias ? [Float](repeating: 0.01, count: dModel) : [], w3: form.activation.isGated ? values : [],
                                        b3: form.hasBias && form.activation.isGated ? [Float](repeating: 0.01, count: form.dFF) : [])
            prepared[form.dFF] = kernels.prepare(weights, form: form, dModel: dModel)
        }
        let maximumRows = ffns.map(\.rows).max() ?? 0
        let input = (0..<max(1, maximumRows * dModel)).map { Float(($0 * 31) % 101) / 101 - 0.5 }
        var output = [Float](repeating: 0, count: max(1, maximumRows * dModel))
        let workspace = ExpertWorkspace()
        return try harness.measure(warmup: warmup, repetitions: repetitions) {
            input.withUnsafeBufferPointer { x in
                output.withUnsafeMutableBufferPointer { y in
                    for (rows, form) in ffns where rows > 0 {
                        prepared[form.dFF]!.forward(input: x.baseAddress!, rows: rows, output: y.baseAddress!, workspace: workspace)
                    }
                }
            }
        }
    }

    /// Times the FFN GEMMs alone: for each (rows, form), the form's two (gated: three) GEMMs
    /// over that many rows.
    @MainActor
    private func gemmOnly(_ gemms: [(rows: Int, form: FFNForm)], dModel: Int, harness: BenchmarkHarness) throws -> [Double] {
        let maximumRows = gemms.map(\.rows).max() ?? 0
        let maximumWidth = gemms.map(\.form.dFF).max() ?? 1
        let input = [Float](repeating: 0.5, count: max(1, maximumRows * dModel))
        let w1 = [Float](repeating: 0.01, count: dModel * maximumWidth)
        let w2 = [Float](repeating: 0.01, count: maximumWidth * dModel)
        var hidden = [Float](repeating: 0, count: max(1, maximumRows * maximumWidth))
        var up = [Float](repeating: 0, count: max(1, maximumRows * maximumWidth))
        var output = [Float](repeating: 0, count: max(1, maximumRows * dModel))
        return try harness.measure(warmup: warmup, repetitions: repetitions) {
            for (count, form) in gemms where count > 0 {
                BLAS.multiply(rows: count, columns: form.dFF, inner: dModel, input, w1, into: &hidden)
                if form.activation.isGated { BLAS.multiply(rows: count, columns: form.dFF, inner: dModel, input, w1, into: &up) }
                BLAS.multiply(rows: count, columns: dModel, inner: form.dFF, hidden, w2, into: &output)
            }
        }
    }
}
