import Testing
@testable import Exchange

@Suite("Exchange schedules and layouts")
struct ScheduleTests {
    @Test("pairwise: each step is a permutation and every ordered pair meets exactly once", arguments: [1, 2, 3, 4, 5, 8])
    func pairwiseCoversEveryPair(size: Int) {
        var met = Set<[Int]>()
        for step in 0..<size {
            let destinations = (0..<size).map { PairwiseAllToAll.peers(rank: $0, size: size, step: step).sendTo }
            #expect(Set(destinations).count == size)
            for rank in 0..<size {
                let (sendTo, receiveFrom) = PairwiseAllToAll.peers(rank: rank, size: size, step: step)
                // The peer I send to in this step receives from me in the same step.
                #expect(PairwiseAllToAll.peers(rank: sendTo, size: size, step: step).receiveFrom == rank)
                #expect(PairwiseAllToAll.peers(rank: receiveFrom, size: size, step: step).sendTo == rank)
                met.insert([rank, sendTo])
            }
        }
        #expect(met.count == size * size)
    }

    @Test("layout displacements are exclusive prefix sums in peer order")
    func layout() throws {
        let layout = try #require(ExchangeLayout(sendCounts: [3, 0, 5], receiveCounts: [1, 2, 0]))
        #expect(layout.sendDisplacements == [0, 3, 3])
        #expect(layout.receiveDisplacements == [0, 1, 3])
        #expect(layout.sendRows == 8)
        #expect(layout.receiveRows == 3)
    }

    @Test("a layout with negative counts or mismatched peers is refused")
    func invalidLayout() {
        #expect(ExchangeLayout(sendCounts: [1, -1], receiveCounts: [0, 0]) == nil)
        #expect(ExchangeLayout(sendCounts: [1], receiveCounts: [0, 0]) == nil)
    }
}

@Suite("Synthetic traffic")
struct SyntheticTrafficTests {
    @Test("counts and contents are reproducible and differ between sources")
    func reproducible() {
        let traffic = SyntheticTraffic(seed: 7, trial: 0, maxRows: 16)
        #expect(traffic.sendCounts(source: 1, size: 4) == SyntheticTraffic(seed: 7, trial: 0, maxRows: 16).sendCounts(source: 1, size: 4))
        var a = [UInt8](repeating: 0, count: 33)
        var b = [UInt8](repeating: 0, count: 33)
        a.withUnsafeMutableBytes { traffic.fill($0, source: 0, destination: 1) }
        b.withUnsafeMutableBytes { traffic.fill($0, source: 1, destination: 0) }
        #expect(a != b)
        var again = [UInt8](repeating: 0, count: 33)
        again.withUnsafeMutableBytes { traffic.fill($0, source: 0, destination: 1) }
        #expect(a == again)
    }

    @Test("each shape produces what its name says", arguments: TrafficShape.allCases)
    func shapes(shape: TrafficShape) throws {
        let trial = try #require((0..<100).first { TrafficShape.forTrial($0) == shape })
        let traffic = SyntheticTraffic(seed: 3, trial: trial, maxRows: 10)
        let size = 5
        let counts = (0..<size).map { traffic.sendCounts(source: $0, size: size) }
        switch shape {
        case .empty: #expect(counts.allSatisfy { $0.allSatisfy { $0 == 0 } })
        case .oneReceiver:
            let receiver = trial % size
            #expect(counts.allSatisfy { row in row.indices.allSatisfy { (row[$0] > 0) == ($0 == receiver) } })
        case .selfOnly:
            #expect(counts.indices.allSatisfy { source in counts[source].indices.allSatisfy { (counts[source][$0] > 0) == ($0 == source) } })
        case .uneven: #expect(counts.allSatisfy { $0.allSatisfy { [0, 1, 80].contains($0) } })
        case .uniform, .sparse: #expect(counts.allSatisfy { $0.allSatisfy { (0...10).contains($0) } })
        }
    }
}
