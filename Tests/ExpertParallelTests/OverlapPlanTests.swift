import Exchange
import Testing
@testable import ExpertParallel
import MoE

@Suite("Pipelined layer: chunk split and auto degree (pure, no MPI)")
struct OverlapPlanTests {
    @Test("chunks cover every row once, in order within each share, and agree with the receiver's view")
    func chunkSplit() {
        // This rank sends 2 ranks with 2 and 1 slots; the counts a receiver would see mirror them.
        let rowsPerSlotTo = [[5, 0], [7]]
        let rowsFrom = [[3, 4], [0, 9]]
        for degree in 1...9 {
            let plan = ChunkPlan(degree: degree, rowsPerSlotTo: rowsPerSlotTo, rowsFrom: rowsFrom)
            #expect(plan.layouts.count == degree)
            // A permutation of 0..<12, and rows of one share stay in order.
            #expect(plan.chunkRowOfPackedRow.sorted() == Array(0..<12), "degree \(degree)")
            for share in [0..<5, 5..<12] {
                let rows = share.map { plan.chunkRowOfPackedRow[$0] }
                #expect(rows == rows.sorted(), "degree \(degree): a share's rows out of order")
            }
            // Per destination and per source, the chunks add up to the whole.
            #expect((0..<2).map { peer in plan.layouts.reduce(0) { $0 + $1.sendCounts[peer] } } == [5, 7])
            #expect((0..<2).map { peer in plan.layouts.reduce(0) { $0 + $1.receiveCounts[peer] } } == [7, 9])
            for source in 0..<2 {
                for slot in 0..<2 {
                    #expect(plan.rowsFrom.reduce(0) { $0 + $1[source][slot] } == rowsFrom[source][slot])
                }
            }
            // Chunks are contiguous in both buffers.
            for chunk in 1..<degree {
                #expect(plan.sendBase[chunk] == plan.sendBase[chunk - 1] + plan.layouts[chunk - 1].sendRows)
                #expect(plan.receiveBase[chunk] == plan.receiveBase[chunk - 1] + plan.layouts[chunk - 1].receiveRows)
            }
        }
        // The split rule by hand. One slot, 7 rows over 3 chunks: 2, 2, 3.
        #expect((0..<3).map { ChunkPlan.part(of: 7, slot: 0, slotCount: 1, chunk: $0, degree: 3) } == [0..<2, 2..<4, 4..<7])
        // Four slots over two chunks: whole slots, two per chunk.
        #expect((0..<4).map { slot in (0..<2).map { ChunkPlan.part(of: 10, slot: slot, slotCount: 4, chunk: $0, degree: 2).count } }
                == [[10, 0], [10, 0], [0, 10], [0, 10]])
        // Two slots over three chunks: slot 0 in chunk 0, slot 1 split over chunks 1 and 2.
        #expect((0..<2).map { slot in (0..<3).map { ChunkPlan.part(of: 10, slot: slot, slotCount: 2, chunk: $0, degree: 3).count } }
                == [[10, 0, 0], [0, 5, 5]])
        let three = ChunkPlan(degree: 3, rowsPerSlotTo: rowsPerSlotTo, rowsFrom: rowsFrom)
        // Destination 0 (2 slots): slot 0 whole in chunk 0, slot 1 (empty) over chunks 1–2;
        // destination 1 (1 slot): 7 rows as 2, 2, 3.
        #expect(three.layouts.map(\.sendCounts) == [[5, 2], [0, 2], [0, 3]])
        // Chunk 0 holds the (0,0) share and rows 0–1 of the (1,0) share: packed rows 0…6.
        #expect((0..<7).map { three.chunkRowOfPackedRow[$0] } == Array(0..<7))
    }

    @Test("the pipeline's time: sequential at N = 1, the slower of link and CPU sets the pace, no links no overlap")
    func costModel() {
        // Links 10 ms for dispatch + combine in all, 1 ms fixed per chunk; experts 40 ms; no CPU part.
        let model = OverlapCostModel(linkSeconds: { 0.010 / Double($0) + 0.001 }, exchangeCPUSeconds: { _ in 0 },
                                     computeSeconds: { 0.040 / Double($0) })
        #expect(abs(model.predictedSeconds(degree: 1) - 0.051) < 1e-12)
        // N = 4: l = 3.5 ms, u = 10 ms: 13.5 + 3 · 10 = 43.5 ms.
        #expect(abs(model.predictedSeconds(degree: 4) - 0.0435) < 1e-12)
        #expect(model.best(of: [1, 2, 4, 8, 16]).degree == 16)
        // Shared memory only: the exchange is CPU work, more chunks only add fixed costs.
        let host = OverlapCostModel(linkSeconds: { _ in 0 }, exchangeCPUSeconds: { 0.010 / Double($0) + 0.0001 },
                                    computeSeconds: { 0.040 / Double($0) })
        #expect(host.best(of: [1, 2, 4, 8, 16]).degree == 1)
        // Link-bound: 40 ms of link against 10 ms of experts; chunk fixed costs stop large N.
        let linkBound = OverlapCostModel(linkSeconds: { 0.040 / Double($0) + 0.002 }, exchangeCPUSeconds: { _ in 0 },
                                         computeSeconds: { 0.010 / Double($0) })
        let best = linkBound.best(of: [1, 2, 4, 8, 16])
        #expect(best.degree == 2 && abs(best.seconds - 0.049) < 1e-12)
    }

    @Test("overlap degrees parse: integers 1…32 and auto; anything else names the problem")
    func degreeParsing() throws {
        #expect(try OverlapDegree.parse("4").get() == .fixed(4))
        #expect(try OverlapDegree.parse("auto").get() == .auto)
        for bad in ["0", "-1", "33", "x", ""] {
            guard case .failure = OverlapDegree.parse(bad) else {
                Issue.record("'\(bad)' accepted")
                continue
            }
        }
    }

    @Test("overlap_degree in a model file: read, written back, refused when out of range")
    func modelField() throws {
        let text = #"{"d_model": 8, "d_ff": 6, "overlap_degree": "auto", "layers": [{"experts": 2, "top_k": 1}]}"#
        let file = try ModelFile.parse(Array(text.utf8), path: "m.json")
        #expect(file.overlapDegree == .auto)
        var again = try ModelFile.parse(Array(file.document().serialized().utf8), path: "m.json")
        again.model.name = file.model.name
        #expect(again == file)
        #expect(throws: ModelConfigurationError.self) {
            try ModelConfiguration.parse(Array(#"{"d_model": 8, "d_ff": 6, "overlap_degree": 0, "layers": [{"experts": 2, "top_k": 1}]}"#.utf8), path: "m.json")
        }
        do {
            _ = try ModelConfiguration.parse(Array(#"{"d_model": 8, "d_ff": 6, "overlap_degree": 2.5, "layers": [{"experts": 2, "top_k": 1}]}"#.utf8), path: "m.json")
            Issue.record("2.5 accepted")
        } catch {
            #expect(error.description == "m.json: field 'overlap_degree': must be an integer or \"auto\"")
        }
    }
}
