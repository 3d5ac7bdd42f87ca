import Testing
@testable import ClusterTopology

/// 2 nodes × 2 ranks; α_s 1 µs, B_s 10 GB/s; α_n 10 µs, B_n 1 GB/s; copies at 10 GB/s. At 1000
/// bytes a message costs 1.1 µs inside a node and 11 µs across, a copy 0.1 µs.
private func handTopology(nodes: [[Int]] = [[0, 1], [2, 3]]) throws -> Topology {
    try Topology(name: "hand", nodes: nodes.enumerated().map { Node(name: "n\($0.offset)", ranks: $0.element) },
                 intraNode: LinkCost(latencyMicroseconds: 1, bandwidthGigabytesPerSecond: 10),
                 interNode: LinkCost(latencyMicroseconds: 10, bandwidthGigabytesPerSecond: 1), origin: .file(path: "hand"))
}

private func microseconds(_ seconds: Double) -> Double { seconds * 1e6 }

@Suite("Cost model")
struct CostModelTests {
    @Test("flat on 2x2, 1000 B per peer: the node uplink carries 4 transfers of 11 µs; plus a 0.1 µs self copy")
    func flatHandCase() throws {
        let model = CostModel(topology: try handTopology(), copyBandwidthGigabytesPerSecond: 10)
        let prediction = model.predict(.flat, traffic: .uniform(ranks: 4, bytesPerPeer: 1000))
        #expect(abs(microseconds(prediction.seconds) - 44.1) < 1e-9)
        let inter = try #require(prediction.stages.first { $0.resource == .interNode })
        #expect(inter.busiestLinkTransfers == 4 && inter.messagesPerRank == 2 && inter.bytesPerRank == 2000)
        let intra = try #require(prediction.stages.first { $0.resource == .intraNode })
        #expect(intra.messagesPerRank == 1 && abs(microseconds(intra.seconds) - 1.1) < 1e-9)
    }

    @Test("hierarchical on 2x2, 1000 B per peer: counts 1.0016 + pack 0.2 + stage 1 1.2 + pack 0.4 + stage 2 2×12 µs")
    func hierarchicalHandCase() throws {
        let model = CostModel(topology: try handTopology(), copyBandwidthGigabytesPerSecond: 10)
        let prediction = model.predict(.hierarchical, traffic: .uniform(ranks: 4, bytesPerPeer: 1000))
        let stages = prediction.stages.map { microseconds($0.seconds) }
        let expected = [1.0016, 0.2, 1.2, 0.4, 24.0]
        for (got, want) in zip(stages, expected) { #expect(abs(got - want) < 1e-9, "\(stages)") }
        #expect(abs(microseconds(prediction.seconds) - 26.8016) < 1e-9)
        // Stage 2: one 2000-byte message per rank, 2 transfers on each node link.
        #expect(prediction.stages[4].messagesPerRank == 1 && prediction.stages[4].bytesPerRank == 2000)
        #expect(prediction.stages[4].busiestLinkTransfers == 2)
    }

    @Test("pairwise on 2 nodes × 1 rank: one step of one 11 µs transfer, plus the self copy")
    func pairwiseHandCase() throws {
        let model = CostModel(topology: try handTopology(nodes: [[0], [1]]), copyBandwidthGigabytesPerSecond: 10)
        let prediction = model.predict(.pairwise, traffic: .uniform(ranks: 2, bytesPerPeer: 1000))
        #expect(abs(microseconds(prediction.seconds) - 11.1) < 1e-9)
    }

    @Test("incast: every rank sends only to rank 0; node 0's downlink carries node 1's two transfers")
    func incast() throws {
        let model = CostModel(topology: try handTopology(), copyBandwidthGigabytesPerSecond: 10)
        var bytes = [[Int]](repeating: [0, 0, 0, 0], count: 4)
        for source in 0..<4 { bytes[source][0] = 1000 }
        let prediction = model.predict(.flat, traffic: TrafficMatrix(bytes: bytes))
        // max(intra 1.1, inter 2 × 11) + self copy of rank 0 (0.1)
        #expect(abs(microseconds(prediction.seconds) - 22.1) < 1e-9)
    }

    @Test("one node: no inter-node cost at all")
    func singleNode() throws {
        let model = CostModel(topology: try handTopology(nodes: [[0, 1, 2, 3]]), copyBandwidthGigabytesPerSecond: 10)
        let prediction = model.predict(.flat, traffic: .uniform(ranks: 4, bytesPerPeer: 1000))
        #expect(abs(microseconds(prediction.seconds) - (3 * 1.1 + 0.1)) < 1e-9)
    }

    @Test("the closed forms equal the traffic-matrix model on uniform traffic", arguments: [(2, 4), (4, 2), (3, 3), (1, 4), (4, 1)])
    func closedForms(nodes: Int, ranksPerNode: Int) throws {
        let layout = (0..<nodes).map { n in Array(n * ranksPerNode..<(n + 1) * ranksPerNode) }
        let topology = try handTopology(nodes: layout)
        let model = CostModel(topology: topology, copyBandwidthGigabytesPerSecond: 10)
        for bytes in [1, 1000, 1 << 20] {
            for schedule in ModeledSchedule.allCases {
                let matrix = model.predict(schedule, traffic: .uniform(ranks: nodes * ranksPerNode, bytesPerPeer: bytes)).seconds
                let closed = CostModel.uniformSeconds(schedule, nodes: nodes, ranksPerNode: ranksPerNode, bytesPerPeer: bytes,
                                                      intraNode: topology.intraNode, interNode: topology.interNode,
                                                      copyBandwidthGigabytesPerSecond: 10)
                #expect(abs(matrix - closed) <= 1e-12 * max(1, abs(closed)) + 1e-15, "\(schedule) \(nodes)x\(ranksPerNode) \(bytes) B: \(matrix) vs \(closed)")
            }
        }
    }

    @Test("hierarchical beats flat for small messages on slow links and loses for large ones; the crossover lies between")
    func crossover() {
        let intra = LinkCost(latencyMicroseconds: 1, bandwidthGigabytesPerSecond: 10)
        let inter = LinkCost(latencyMicroseconds: 50, bandwidthGigabytesPerSecond: 1)
        let sizes = (0...22).map { 1 << $0 }
        func seconds(_ schedule: ModeledSchedule, _ bytes: Int) -> Double {
            CostModel.uniformSeconds(schedule, nodes: 2, ranksPerNode: 4, bytesPerPeer: bytes, intraNode: intra, interNode: inter)
        }
        #expect(seconds(.hierarchical, 1) < seconds(.flat, 1))
        #expect(seconds(.hierarchical, 1 << 22) > seconds(.flat, 1 << 22))
        let size = CostModel.crossover(sizes: sizes, faster: { seconds(.hierarchical, $0) }, baseline: { seconds(.flat, $0) })
        #expect(size != nil && size! > 1 && size! < 1 << 22)
    }
}
