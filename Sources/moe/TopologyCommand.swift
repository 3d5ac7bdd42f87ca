import ArgumentParsing
import ClusterTopology
import Foundation
import JobControl
import MessagePassing

/// `moe topology`: loads a topology (or asks MPI for the nodes) and explains it.
struct TopologyCommand: JobCommand {
    static let spec = CommandSpec(
        name: "topology",
        summary: "Load a topology and explain it: nodes, ranks, link costs, where each rank runs.",
        discussion: """
            Under mpirun, every rank loads the file (or, without --topology, MPI's shared-memory
            split finds the nodes) and rank 0 prints the nodes and which node each rank is on.
            --validate checks a file without starting MPI; --rank-count prints only the number of
            ranks a file declares (Launch/run uses it to choose mpirun's -np).
            """,
        options: [Options.topology.spec, Options.validate.spec, Options.rankCount.spec])

    enum Options {
        static let topology = TypedOption<String?>.string(
            "topology", "FILE", "topology JSON file (see Topologies/README.md); default: nodes from MPI")
        static let validate = TypedOption<Bool>.flag("validate", "check the file without MPI and print a summary")
        static let rankCount = TypedOption<Bool>.flag("rank-count", "print only the number of ranks the file declares (no MPI)")
    }

    let path: String?
    let offline: Bool
    let rankCountOnly: Bool

    init(options: ParsedOptions) throws(UsageError) {
        path = try options.value(Options.topology)
        offline = try options.value(Options.validate)
        rankCountOnly = try options.value(Options.rankCount)
        if (offline || rankCountOnly) && path == nil {
            throw .conflict(command: Self.spec.name, detail: "--validate and --rank-count need --topology FILE")
        }
    }

    func run(_ context: JobContext) throws {
        if offline || rankCountOnly {
            let topology: Topology
            do { topology = try Topology.load(path: path!) } catch {
                throw JobFailure(message: "\(error)", reportingRank: 0)
            }
            print(rankCountOnly ? "\(topology.worldSize)" : Self.explanation(of: topology) + "\nvalid: \(plural(topology.worldSize, "rank")) on \(plural(topology.nodes.count, "node"))")
            return
        }
        let world = try context.world()
        let topology = try context.topology(path: path)
        let here = world.rank
        let line = "rank \(here): node \(topology.node(ofRank: here).name) (local rank \(topology.localRankOfRank[here])), host \(Communicator.processorName()), pid \(getpid())"
        let lines = try world.gatherBytes(Array(line.utf8), root: 0)
        if let lines {
            print(Self.explanation(of: topology))
            print("ranks:")
            for line in lines { print("  " + String(decoding: line, as: UTF8.self)) }
        }
    }

    /// A human-readable account of a topology.
    static func explanation(of topology: Topology) -> String {
        var lines = ["topology \(topology.name) (\(topology.origin.sourceName)): \(plural(topology.worldSize, "rank")) on \(plural(topology.nodes.count, "node"))"]
        if !topology.description.isEmpty { lines.append("  \(topology.description)") }
        lines.append("nodes:")
        for node in topology.nodes {
            lines.append("  \(node.name): ranks \(node.ranks.map(String.init).joined(separator: ", "))")
        }
        lines.append("links:")
        lines.append("  intra-node: \(format(topology.intraNode))")
        lines.append("  inter-node: \(format(topology.interNode))\(topology.nodes.count == 1 ? " (unused: one node)" : "")")
        return lines.joined(separator: "\n")
    }

    static func format(_ cost: LinkCost) -> String {
        "latency \(trim(cost.latencyMicroseconds)) µs, bandwidth \(trim(cost.bandwidthGigabytesPerSecond)) GB/s"
    }

    static func trim(_ value: Double) -> String {
        value.rounded() == value && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}
