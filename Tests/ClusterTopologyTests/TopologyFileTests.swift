import Foundation
import Testing
@testable import ClusterTopology

/// The repository's Topologies/ folder, found from this source file's path.
let topologiesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Topologies").path

func parse(_ text: String) throws(TopologyError) -> Topology {
    try Topology.parse(Array(text.utf8), path: "t.json")
}

@Suite("Topology files")
struct TopologyFileTests {
    @Test("every shipped topology loads, and its name matches its shape", arguments: ["1x2", "1x4", "2x2", "2x4", "3x1", "4x2"])
    func shipped(name: String) throws {
        let topology = try Topology.load(path: "\(topologiesDirectory)/\(name).json")
        let parts = name.split(separator: "x").compactMap { Int($0) }
        #expect(topology.nodes.count == parts[0])
        #expect(topology.nodes.allSatisfy { $0.ranks.count == parts[1] })
        #expect(topology.worldSize == parts[0] * parts[1])
        #expect(topology.name == name)
    }

    @Test("node and local rank of every rank, ranks need not be contiguous")
    func placement() throws {
        let topology = try parse(#"{"nodes": [{"name": "a", "ranks": [0, 2]}, {"name": "b", "ranks": [3, 1]}]}"#)
        #expect(topology.nodeOfRank == [0, 1, 0, 1])
        #expect(topology.localRankOfRank == [0, 1, 1, 0])
        #expect(topology.node(ofRank: 3).name == "b")
        #expect(topology.intraNode == .sharedMemoryDefault)
        #expect(topology.interNode == .networkDefault)
        #expect(topology.name == "t")
    }

    @Test("link costs are read in microseconds and GB/s")
    func links() throws {
        let topology = try parse(#"{"nodes": [{"name": "a", "ranks": [0]}], "links": {"inter_node": {"latency_us": 50, "bandwidth_gb_per_s": 1.5}}}"#)
        #expect(topology.interNode == LinkCost(latencyMicroseconds: 50, bandwidthGigabytesPerSecond: 1.5))
        #expect(topology.intraNode == .sharedMemoryDefault)
    }

    @Test("invalid files give one line naming the file and the field", arguments: [
        (#"{"nodes": [{"name": "a", "ranks": [0, 1]}, {"name": "b", "ranks": [1]}]}"#,
         "t.json: field 'nodes[1].ranks[0]': rank 1 is listed twice (also on node \"a\")"),
        (#"{"nodes": [{"name": "a", "ranks": [0, 2]}]}"#,
         "t.json: field 'nodes': rank 1 is missing: the nodes list 2 ranks, so they must be exactly 0...1"),
        (#"{"nodes": [{"name": "a", "ranks": [-1]}]}"#, "t.json: field 'nodes[0].ranks[0]': rank -1 is negative"),
        (#"{"nodes": [{"name": "a", "ranks": []}]}"#, "t.json: field 'nodes[0].ranks': node \"a\" has no ranks"),
        (#"{"nodes": []}"#, "t.json: field 'nodes': must name at least one node"),
        (#"{"nodes": [{"name": "a", "ranks": [0]}, {"name": "a", "ranks": [1]}]}"#,
         "t.json: field 'nodes[1].name': node name \"a\" is used twice"),
        (#"{"nodes": [{"name": "a", "ranks": [0.5]}]}"#, "t.json: field 'nodes[0].ranks[0]': expected an integer, found 0.5"),
        (#"{"nodes": [{"name": "a", "ranks": [0]}], "links": {"inter_node": {"latency_us": -1, "bandwidth_gb_per_s": 1}}}"#,
         "t.json: field 'links.inter_node.latency_us': must be a finite number ≥ 0, got -1.0"),
        (#"{"nodes": [{"name": "a", "ranks": [0]}], "links": {"intra_node": {"latency_us": 1, "bandwidth_gb_per_s": 0}}}"#,
         "t.json: field 'links.intra_node.bandwidth_gb_per_s': must be a finite number > 0, got 0.0"),
        (#"{"nodes": [{"name": "a", "ranks": [0]}], "links": {"inter_node": {"latency_us": 5e9, "bandwidth_gb_per_s": 1}}}"#,
         "t.json: field 'links.inter_node.latency_us': must be at most 1000000 (1 s), got 5000000000.0"),
        (#"{"nodes": [{"name": "a", "ranks": [0]}], "links": {"inter_node": {"latency_us": 5, "bandwidth_gb_per_s": 1e-9}}}"#,
         "t.json: field 'links.inter_node.bandwidth_gb_per_s': must be at least 0.001 (1 MB/s), got 1e-09"),
        (#"{"nodes": [{"name": "a", "ranks": [0]}], "link": {}}"#,
         "t.json: field 'link': unknown field (allowed: name, description, nodes, links)"),
        (#"{"nodes": [{"name": "a", "ranks": [0], "gpus": 8}]}"#,
         "t.json: field 'nodes[0].gpus': unknown field (allowed: name, ranks)"),
        (#"{"nodes": [{"ranks": [0]}]}"#, "t.json: field 'nodes[0].name': missing required field"),
        (#"{"nodes": [}"#, "t.json: invalid JSON at line 1, column 12: unexpected character '}', expected a value"),
        (#"[1]"#, "t.json: field '': expected an object, found an array"),
    ])
    func invalid(text: String, message: String) {
        #expect { try parse(text) } throws: { "\($0)" == message }
    }

    @Test("a world size that differs from the file names both numbers")
    func rankCountMismatch() throws {
        let topology = try Topology.load(path: "\(topologiesDirectory)/2x4.json")
        #expect(throws: Never.self) { try topology.requireWorldSize(8) }
        #expect { try topology.requireWorldSize(4) } throws: {
            "\($0)" == "\(topologiesDirectory)/2x4.json declares 8 ranks but mpirun started 4"
        }
    }

    @Test("a missing file is an error naming the path")
    func missingFile() {
        #expect { try Topology.load(path: "/no/such/topology.json") } throws: {
            "\($0)" == "cannot read topology /no/such/topology.json: no such file"
        }
    }

    @Test("nodes from MPI's shared-memory split are ordered by lowest rank")
    func fromSharedMemorySplit() throws {
        let topology = try Topology.fromSharedMemorySplit(nodeLabelOfRank: [0, 0, 2, 2, 0], hostNameOfRank: ["h1", "h1", "h2", "h2", "h1"])
        #expect(topology.nodes == [Node(name: "h1", ranks: [0, 1, 4]), Node(name: "h2", ranks: [2, 3])])
        #expect(topology.origin == .sharedMemorySplit)
        #expect(!topology.hasUniformNodes)
    }
}
