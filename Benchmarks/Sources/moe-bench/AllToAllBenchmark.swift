import ArgumentParsing
import ClusterTopology
import Exchange
import FileFormats
import Foundation
import JobControl
import Plotting
import MessagePassing
import RandomStreams

/// Per-peer traffic of one benchmark row.
enum TrafficPattern: String, CaseIterable {
    /// Every rank sends the same number of bytes to every rank (`osu_alltoall`).
    case uniform
    /// Per-destination sizes drawn from a router with Zipf-skewed expert popularity
    /// (`osu_alltoallv`-like): one expert per rank, expert e's popularity ∝ 1/(e+1)^s.
    case moe

    /// `bytes[s][d]` for `ranks` ranks at a mean of `size` bytes per peer. MoE traffic: each
    /// source draws G·16 "tokens" of size/16 bytes (at least 1 byte, so small sizes draw fewer)
    /// and sends each to expert e with probability ∝ 1/(e+1)^s; deterministic in `seed`.
    func matrix(ranks: Int, size: Int, zipf: Double, seed: UInt64) -> [[Int]] {
        switch self {
        case .uniform:
            return [[Int]](repeating: [Int](repeating: size, count: ranks), count: ranks)
        case .moe:
            let weights = (0..<ranks).map { 1 / pow(Double($0 + 1), zipf) }
            let total = weights.reduce(0, +)
            var cumulative: [Double] = []
            var running = 0.0
            for weight in weights { running += weight / total; cumulative.append(running) }
            let unit = max(1, size / 16)
            let tokens = ranks * size / unit
            return (0..<ranks).map { source in
                var random = SeededGenerator(seed: seed, stream: UInt64(source), UInt64(size))
                var bytes = [Int](repeating: 0, count: ranks)
                for _ in 0..<tokens {
                    let draw = Double(random.next() >> 11) / Double(1 << 53)
                    let expert = cumulative.firstIndex { draw < $0 } ?? ranks - 1
                    bytes[expert] += unit
                }
                return bytes
            }
        }
    }
}

/// `moe-bench alltoall`: all-to-all latency against message size for every algorithm in the
/// same run, OSU-style, with the cost model's prediction beside each row.
struct AllToAllBenchmark: JobCommand {
    static let spec = CommandSpec(
        name: "alltoall",
        summary: "All-to-all latency vs message size for every algorithm, OSU-style, with the cost model.",
        discussion: """
            Comparable to the OSU micro-benchmarks' osu_alltoall (pattern uniform) and osu_alltoallv
            (pattern moe): for each per-peer size, each algorithm runs --warmup untimed and
            --iterations timed exchanges, each after a barrier; an iteration's time is the slowest
            rank's, and the table reports their average (OSU's "Avg Latency"), minimum, maximum and
            median in microseconds. Sizes above 8 KiB use the --large-* counts; the defaults are OSU's
            (1000 timed + 200 warm-up up to 8 KiB, 100 + 10 above) — long on 8 oversubscribed ranks, so
            the recorded runs in Benchmarks/README.md pass smaller counts. 'model' is the cost model's prediction for the same traffic matrix and
            topology (docs/COST_MODEL.md); 'vs mpi' is the ratio to MPI_Alltoallv in the same run.
            With --simulate-links on, inter-node messages are held back by the topology's link cost.
            """,
        options: TopologyOptions.specs + Options.specs + TableOutputOptions.specs + [Options.svg.spec])

    enum Options {
        static let algorithms = TypedOption<[AllToAllAlgorithm]>.choices(
            "algorithms", "LIST", default: AllToAllAlgorithm.allCases,
            "comma-separated: " + AllToAllAlgorithm.allCases.map(\.rawValue).joined(separator: ","))
        static let patterns = TypedOption<[TrafficPattern]>.choices("patterns", "LIST", default: [.uniform], "uniform, moe, or both comma-separated")
        static let zipf = TypedOption<Double>.number("zipf", "S", default: 1.2, in: 0...10, "Zipf exponent of expert popularity for the moe pattern")
        static let minSize = TypedOption<Int>.integer("min-size", "BYTES", default: 1, in: 1...(1 << 28), "smallest bytes per peer")
        static let maxSize = TypedOption<Int>.integer("max-size", "BYTES", default: 4 << 20, in: 1...(1 << 28), "largest bytes per peer (4 MiB)")
        static let step = TypedOption<Int>.integer("step", default: 4, in: 2...16, "size multiplier between rows (2 or 4)")
        static let iterations = TypedOption<Int>.integer("iterations", default: 1000, in: 1...1_000_000,
                                                         "timed iterations per size up to 8 KiB (OSU's default)")
        static let warmup = TypedOption<Int>.integer("warmup", default: 200, in: 0...1_000_000,
                                                     "untimed iterations per size up to 8 KiB (OSU's default)")
        static let largeIterations = TypedOption<Int>.integer("large-iterations", default: 100, in: 1...1_000_000,
                                                              "timed iterations per size above 8 KiB (OSU's default)")
        static let largeWarmup = TypedOption<Int>.integer("large-warmup", default: 10, in: 0...1_000_000,
                                                          "untimed iterations per size above 8 KiB (OSU's default)")
        static let copyBandwidth = TypedOption<Double>.number("copy-bandwidth", "GB/S", default: 20, in: 0.000001...1e6,
                                                              "memory-copy bandwidth γ the cost model assumes")
        static let seed = TypedOption<UInt64>.seed(default: 1, "seed of the moe pattern")
        static let svg = TypedOption<String?>.string("svg", "PREFIX", "write PREFIX-<pattern>.svg: latency vs size, log-log, model dashed")
        static let specs = [algorithms.spec, patterns.spec, zipf.spec, minSize.spec, maxSize.spec, step.spec, iterations.spec, warmup.spec,
                            largeIterations.spec, largeWarmup.spec, copyBandwidth.spec, seed.spec]
    }

    let topologyOptions: TopologyOptions.Values
    let algorithms: [AllToAllAlgorithm]
    let patterns: [TrafficPattern]
    let zipf: Double
    let sizes: [Int]
    let iterations: (small: Int, large: Int), warmup: (small: Int, large: Int)
    let copyBandwidth: Double
    let seed: UInt64
    let csvPath: String?, jsonPath: String?, svgPrefix: String?

    init(options: ParsedOptions) throws(UsageError) {
        topologyOptions = try TopologyOptions.read(options)
        algorithms = try options.value(Options.algorithms)
        patterns = try options.value(Options.patterns)
        zipf = try options.value(Options.zipf)
        let minimum = try options.value(Options.minSize)
        let maximum = try options.value(Options.maxSize)
        let step = try options.value(Options.step)
        var sizes: [Int] = []
        var size = minimum
        while size <= maximum { sizes.append(size); size *= step }
        guard !sizes.isEmpty else {
            throw .invalidValue(command: "alltoall", option: "max-size", value: String(maximum), expected: "at least --min-size (\(minimum))")
        }
        self.sizes = sizes
        iterations = (try options.value(Options.iterations), try options.value(Options.largeIterations))
        warmup = (try options.value(Options.warmup), try options.value(Options.largeWarmup))
        copyBandwidth = try options.value(Options.copyBandwidth)
        seed = try options.value(Options.seed)
        let output = try TableOutputOptions.read(options)
        (csvPath, jsonPath) = (output.csvPath, output.jsonPath)
        svgPrefix = try options.value(Options.svg)
    }


    func run(_ context: JobContext) throws {
        let harness = try BenchmarkHarness.start(context, outputs: [TableOutputOptions.csv.naming(csvPath), TableOutputOptions.json.naming(jsonPath), Options.svg.naming(svgPrefix.map { $0 + "-uniform.svg" })])
        let world = harness.world
        let (topology, links) = try context.topologyAndLinks(topologyOptions)
        let exchanges = try algorithms.map { try makeAllToAll($0, communicator: world, worldRank: world.rank, topology: topology, links: links) }
        let model = CostModel(topology: topology, copyBandwidthGigabytesPerSecond: copyBandwidth)
        let here = world.rank
        let ranks = world.size
        if here == 0 {
            print("# \(MPIRuntime.libraryVersion()); \(ranks) ranks on \(topology.nodes.count) node(s) (\(topology.name)); "
                  + "links: intra \(topology.intraNode.latencyMicroseconds) µs, \(topology.intraNode.bandwidthGigabytesPerSecond) GB/s; "
                  + "inter \(topology.interNode.latencyMicroseconds) µs, \(topology.interNode.bandwidthGigabytesPerSecond) GB/s; "
                  + (links == nil ? "links not simulated" : "inter-node links SIMULATED"))
            print("# moe-bench alltoall: latency in µs = average over iterations of the slowest rank (min, max, median too); model = cost model")
        }
        var table = ResultTable(columns: ["pattern", "bytes_per_peer", "algorithm", "avg_us", "min_us", "max_us", "median_us",
                                          "iterations", "model_us", "measured_over_model", "vs_mpi"])
        var plotData: [TrafficPattern: [String: [(x: Double, y: Double)]]] = [:]
        var sendBuffer: [UInt8] = []
        var receiveBuffer: [UInt8] = []
        let steps = patterns.count * sizes.count
        for (patternIndex, pattern) in patterns.enumerated() {
            for (sizeIndex, size) in sizes.enumerated() {
                harness.progress("[\(patternIndex * sizes.count + sizeIndex + 1)/\(steps)] \(pattern.rawValue), \(size) B per peer")
                let matrix = pattern.matrix(ranks: ranks, size: size, zipf: zipf, seed: seed)
                let layout = ExchangeLayout(sendCounts: matrix[here], receiveCounts: matrix.map { $0[here] })!
                if sendBuffer.count < layout.sendRows { sendBuffer = [UInt8](repeating: UInt8(here & 0xFF), count: layout.sendRows) }
                if receiveBuffer.count < layout.receiveRows { receiveBuffer = [UInt8](repeating: 0, count: layout.receiveRows) }
                let large = size > 8192
                let (count, untimed) = large ? (iterations.large, warmup.large) : (iterations.small, warmup.small)
                var mpiAverage: Double?
                for exchange in exchanges {
                    let slowest = try Self.time(exchange, sendBuffer, into: &receiveBuffer, layout: layout, untimed: untimed, count: count, world: world)
                    let average = slowest.reduce(0, +) / Double(slowest.count)
                    if exchange.algorithm == .mpi { mpiAverage = average }
                    let statistics = Statistics(slowest)
                    let predicted = model.predict(exchange.modeledSchedule, traffic: TrafficMatrix(bytes: matrix)).seconds
                    let meanSize = Double(matrix.joined().reduce(0, +)) / Double(ranks * ranks)
                    table.append([pattern.rawValue, String(size), exchange.algorithm.rawValue,
                                  format(average * 1e6, 2), format(statistics.minimum * 1e6, 2), format(statistics.maximum * 1e6, 2),
                                  format(statistics.median * 1e6, 2), String(count), format(predicted * 1e6, 2),
                                  format(average / predicted), mpiAverage.map { format(average / $0) } ?? "-"])
                    plotData[pattern, default: [:]][exchange.algorithm.rawValue, default: []].append((meanSize, average * 1e6))
                    plotData[pattern, default: [:]]["model: " + exchange.modeledSchedule.rawValue, default: []].append((meanSize, predicted * 1e6))
                }
            }
        }
        harness.endProgress()
        if let links, here == 0 {
            print("# simulated links: rank 0 sent \(links.simulatedMessages) inter-node messages and waited \(format(links.heldSeconds * 1000, 1)) ms for deliveries")
        }
        guard here == 0 else { return }
        print(table.aligned)
        let metadata: [(String, JSONValue)] = [
            ("benchmark", .string("alltoall")), ("mpi", .string(MPIRuntime.libraryVersion())), ("ranks", .number(Double(ranks))),
            ("topology", .string(topology.name)), ("nodes", .number(Double(topology.nodes.count))),
            ("simulated_links", .bool(links != nil)), ("zipf", .number(zipf)),
            ("inter_latency_us", .number(topology.interNode.latencyMicroseconds)),
            ("inter_bandwidth_gb_per_s", .number(topology.interNode.bandwidthGigabytesPerSecond)),
            ("intra_latency_us", .number(topology.intraNode.latencyMicroseconds)),
            ("intra_bandwidth_gb_per_s", .number(topology.intraNode.bandwidthGigabytesPerSecond)),
            ("copy_bandwidth_gb_per_s", .number(copyBandwidth)),
        ]
        if let csvPath { try AtomicFileWriter.write(table.csv, to: csvPath) }
        if let jsonPath { try AtomicFileWriter.write(table.json(metadata: metadata), to: jsonPath) }
        if let svgPrefix { try writePlots(plotData, exchanges: exchanges, ranks: ranks, topology: topology, simulated: links != nil, prefix: svgPrefix) }
    }

    /// Seconds of each timed iteration on the slowest rank (`untimed` warm-up iterations first).
    @MainActor
    static func time(
        _ exchange: any AllToAll, _ send: [UInt8], into receive: inout [UInt8], layout: ExchangeLayout, untimed: Int, count: Int, world: Communicator
    ) throws -> [Double] {
        var local: [Double] = []
        for iteration in 0..<(untimed + count) {
            try world.barrier()
            let start = MPIRuntime.wallTime()
            try exchange.exchange(send, into: &receive, layout: layout, rowBytes: 1)
            if iteration >= untimed { local.append(MPIRuntime.wallTime() - start) }
        }
        return try world.allReduce(local, .maximum)
    }

    /// One SVG per traffic pattern: measured latency per algorithm and the model's prediction.
    @MainActor
    func writePlots(
        _ plotData: [TrafficPattern: [String: [(x: Double, y: Double)]]], exchanges: [any AllToAll], ranks: Int, topology: Topology,
        simulated: Bool, prefix svgPrefix: String
    ) throws {
        for pattern in patterns {
            var plot = SVGPlot(title: "all-to-all, \(pattern.rawValue) traffic, \(ranks) ranks on \(topology.name)" + (simulated ? " (simulated links)" : ""),
                               xLabel: "bytes per peer" + (pattern == .moe ? " (mean)" : ""), yLabel: "latency (µs), slowest rank, average")
            let data = plotData[pattern] ?? [:]
            for (index, algorithm) in algorithms.enumerated() {
                plot.series.append(.init(name: algorithm.rawValue, points: data[algorithm.rawValue] ?? [], color: SVGPlot.palette[index % SVGPlot.palette.count]))
            }
            var drawn = Set<String>()
            for (index, exchange) in exchanges.enumerated() {
                let name = "model: " + exchange.modeledSchedule.rawValue
                guard drawn.insert(name).inserted else { continue }
                plot.series.append(.init(name: name, points: data[name] ?? [], color: SVGPlot.palette[index % SVGPlot.palette.count], dashed: true))
            }
            try AtomicFileWriter.write(plot.render(), to: "\(svgPrefix)-\(pattern.rawValue).svg")
        }
    }
}
