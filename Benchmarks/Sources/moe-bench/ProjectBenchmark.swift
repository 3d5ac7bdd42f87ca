import ArgumentParsing
import ClusterTopology
import FileFormats
import Foundation
import JobControl
import Plotting
import MessagePassing

/// `moe-bench project`: the cost model alone, for clusters this machine cannot run — flat
/// against hierarchical across message sizes, and the crossover size.
struct ProjectBenchmark: JobCommand {
    static let spec = CommandSpec(
        name: "project",
        summary: "Cost-model projection of flat vs hierarchical all-to-all for large clusters (no measurement).",
        discussion: """
            Evaluates the closed-form cost model (docs/COST_MODEL.md) for uniform traffic on N nodes
            of L ranks, for every N in --nodes, at per-peer sizes from --min-size to --max-size
            (powers of 2). Link costs come from --topology's links (default: the built-in intra-node
            0.3 µs / 10 GB/s and inter-node 7 µs / 2.2 GB/s), each overridable. The crossover is the
            smallest size at which hierarchical is no faster than flat. Needs no MPI peers: run it
            with one process (mpirun -np 1, or directly).
            """,
        options: [Options.nodes.spec, Options.ranksPerNode.spec, Options.topology.spec] + Options.overrides.map(\.spec)
            + [Options.copyBandwidth.spec, Options.minSize.spec, Options.maxSize.spec] + TableOutputOptions.specs + [Options.svg.spec])

    enum Options {
        static let nodes = TypedOption<[Int]>.integers("nodes", default: [2, 8, 64, 512], in: 1...1_000_000, "node counts N")
        static let ranksPerNode = TypedOption<Int>.integer("ranks-per-node", "L", default: 8, in: 1...4096, "ranks per node")
        static let topology = TypedOption<String?>.string("topology", "FILE", "take link costs from this topology file")
        /// Link costs that replace the topology's (latencies ≥ 0, bandwidths > 0).
        static let overrides: [TypedOption<Double?>] = [
            .number("inter-latency-us", "US", in: 0...1e9, "inter-node latency α_n"),
            .number("inter-bandwidth", "GB/S", in: 1e-9...1e9, "inter-node bandwidth per node link B_n"),
            .number("intra-latency-us", "US", in: 0...1e9, "intra-node latency α_s"),
            .number("intra-bandwidth", "GB/S", in: 1e-9...1e9, "intra-node bandwidth B_s"),
        ]
        static let copyBandwidth = TypedOption<Double>.number("copy-bandwidth", "GB/S", default: 20, in: 1e-9...1e9, "memory-copy bandwidth γ")
        static let minSize = TypedOption<Int>.integer("min-size", "BYTES", default: 1, in: 1...(1 << 30), "smallest bytes per peer")
        static let maxSize = TypedOption<Int>.integer("max-size", "BYTES", default: 4 << 20, in: 1...(1 << 30), "largest bytes per peer")
        static let svg = TypedOption<String?>.string("svg", "FILE", "write the plot (latency vs size, log-log; flat solid, hierarchical dashed)")
    }

    let nodeCounts: [Int]
    let ranksPerNode: Int
    let topologyPath: String?
    let overrides: [String: Double]
    let copyBandwidth: Double
    let sizes: [Int]
    let csvPath: String?, jsonPath: String?, svgPath: String?

    init(options: ParsedOptions) throws(UsageError) {
        nodeCounts = try options.value(Options.nodes)
        ranksPerNode = try options.value(Options.ranksPerNode)
        topologyPath = try options.value(Options.topology)
        var overrides: [String: Double] = [:]
        for option in Options.overrides {
            if let value = try options.value(option) { overrides[option.spec.name] = value }
        }
        self.overrides = overrides
        copyBandwidth = try options.value(Options.copyBandwidth)
        let minimum = try options.value(Options.minSize)
        let maximum = try options.value(Options.maxSize)
        var sizes: [Int] = []
        var size = minimum
        while size <= maximum { sizes.append(size); size *= 2 }
        self.sizes = sizes
        let output = try TableOutputOptions.read(options)
        (csvPath, jsonPath) = (output.csvPath, output.jsonPath)
        svgPath = try options.value(Options.svg)
    }

    func run(_ context: JobContext) throws {
        let harness = try BenchmarkHarness.start(context, outputs: [TableOutputOptions.csv.naming(csvPath), TableOutputOptions.json.naming(jsonPath), Options.svg.naming(svgPath)])
        let world = harness.world
        guard world.rank == 0 else { return }
        var intra = LinkCost.sharedMemoryDefault, inter = LinkCost.networkDefault
        if let topologyPath {
            do {
                let topology = try Topology.load(path: topologyPath)
                (intra, inter) = (topology.intraNode, topology.interNode)
            } catch { throw JobFailure(message: "\(error)", reportingRank: 0) }
        }
        if let value = overrides["inter-latency-us"] { inter.latencyMicroseconds = value }
        if let value = overrides["inter-bandwidth"] { inter.bandwidthGigabytesPerSecond = value }
        if let value = overrides["intra-latency-us"] { intra.latencyMicroseconds = value }
        if let value = overrides["intra-bandwidth"] { intra.bandwidthGigabytesPerSecond = value }
        print("# moe-bench project: cost model only (docs/COST_MODEL.md); L = \(ranksPerNode) ranks per node; "
              + "intra \(intra.latencyMicroseconds) µs, \(intra.bandwidthGigabytesPerSecond) GB/s; inter \(inter.latencyMicroseconds) µs, "
              + "\(inter.bandwidthGigabytesPerSecond) GB/s per node link; copies \(copyBandwidth) GB/s")
        var table = ResultTable(columns: ["nodes", "ranks_per_node", "ranks", "bytes_per_peer", "flat_us", "hierarchical_us", "hierarchical_over_flat"])
        var plot = SVGPlot(title: "cost model: flat (solid) vs hierarchical (dashed), \(ranksPerNode) ranks per node",
                           xLabel: "bytes per peer", yLabel: "predicted latency (µs)")
        var crossovers: [String] = []
        for (index, nodes) in nodeCounts.enumerated() {
            func seconds(_ schedule: ModeledSchedule, _ size: Int) -> Double {
                CostModel.uniformSeconds(schedule, nodes: nodes, ranksPerNode: ranksPerNode, bytesPerPeer: size,
                                         intraNode: intra, interNode: inter, copyBandwidthGigabytesPerSecond: copyBandwidth)
            }
            var flatPoints: [(x: Double, y: Double)] = [], hierarchicalPoints: [(x: Double, y: Double)] = []
            for size in sizes {
                let flat = seconds(.flat, size), hierarchical = seconds(.hierarchical, size)
                table.append([String(nodes), String(ranksPerNode), String(nodes * ranksPerNode), String(size),
                              format(flat * 1e6, 2), format(hierarchical * 1e6, 2), format(hierarchical / flat)])
                flatPoints.append((Double(size), flat * 1e6))
                hierarchicalPoints.append((Double(size), hierarchical * 1e6))
            }
            let color = SVGPlot.palette[index % SVGPlot.palette.count]
            let label = "\(nodes)×\(ranksPerNode)"
            plot.series.append(.init(name: "\(label) flat", points: flatPoints, color: color))
            plot.series.append(.init(name: "\(label) hierarchical", points: hierarchicalPoints, color: color, dashed: true))
            let crossover = CostModel.crossover(sizes: sizes, faster: { seconds(.hierarchical, $0) }, baseline: { seconds(.flat, $0) })
            if seconds(.hierarchical, sizes[0]) >= seconds(.flat, sizes[0]) {
                crossovers.append("\(label): hierarchical is never faster in this range")
            } else if let crossover {
                crossovers.append("\(label): hierarchical faster below \(crossover) B per peer (crossover \(crossover) B)")
                plot.markers.append((Double(crossover), "crossover \(label)"))
            } else {
                crossovers.append("\(label): hierarchical faster at every size up to \(sizes.last!) B")
            }
        }
        print(table.aligned)
        for line in crossovers { print("# crossover " + line) }
        let metadata: [(String, JSONValue)] = [
            ("benchmark", .string("project")), ("ranks_per_node", .number(Double(ranksPerNode))),
            ("intra_latency_us", .number(intra.latencyMicroseconds)), ("intra_bandwidth_gb_per_s", .number(intra.bandwidthGigabytesPerSecond)),
            ("inter_latency_us", .number(inter.latencyMicroseconds)), ("inter_bandwidth_gb_per_s", .number(inter.bandwidthGigabytesPerSecond)),
            ("copy_bandwidth_gb_per_s", .number(copyBandwidth)), ("crossovers", .array(crossovers.map { .string($0) })),
        ]
        if let csvPath { try AtomicFileWriter.write(table.csv, to: csvPath) }
        if let jsonPath { try AtomicFileWriter.write(table.json(metadata: metadata), to: jsonPath) }
        if let svgPath { try AtomicFileWriter.write(plot.render(), to: svgPath) }
    }
}
