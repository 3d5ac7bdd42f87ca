import Exchange
import Foundation
import Testing

extension MultiRankTests {
@Suite("moe-bench end to end", .serialized)
struct BenchmarkTests {
    @Test("alltoall: every algorithm and pattern per size, the model beside each row, CSV, JSON and SVG")
    func allToAll() throws {
        let scratch = try ScratchDirectory()
        let job = try runMPI(ranks: 4, ["alltoall", "--topology", "Topologies/2x2.json", "--patterns", "uniform,moe",
                                        "--max-size", "4096", "--step", "16", "--iterations", "3", "--warmup", "1",
                                        "--csv", scratch.file("a.csv"), "--json", scratch.file("a.json"), "--svg", scratch.file("plot")],
                             executable: benchExecutable)
        try #require(job.mpirunStatus == 0, "\(job)")
        let document = try readJSONObject(scratch.file("a.json"))
        #expect(document["simulated_links"] as? Bool == true)
        let rows = try #require(document["rows"] as? [[String: Any]])
        // 2 patterns × sizes 1, 16, 256, 4096 × 4 algorithms.
        #expect(rows.count == 2 * 4 * 4, "\(rows.count) rows")
        #expect(Set(rows.compactMap { $0["algorithm"] as? String }) == Set(AllToAllAlgorithm.allCases.map(\.rawValue)))
        for row in rows {
            let model = try #require(row["model_us"] as? Double)
            // 2x2 with 50 µs simulated links: flat sends 4 transfers per node link (≥ 200 µs).
            #expect(model > 0)
            if row["algorithm"] as? String == "linear", row["pattern"] as? String == "uniform" { #expect(model >= 200, "\(row)") }
            #expect((row["avg_us"] as? Double ?? 0) > 0)
        }
        let csv = try String(contentsOfFile: scratch.file("a.csv"), encoding: .utf8)
        #expect(csv.hasPrefix("pattern,bytes_per_peer,algorithm,avg_us,"))
        for pattern in ["uniform", "moe"] {
            let svg = try String(contentsOfFile: scratch.file("plot-\(pattern).svg"), encoding: .utf8)
            #expect(svg.hasPrefix("<svg") && svg.contains("<polyline") && svg.contains("stroke-dasharray"), "\(pattern)")
        }
    }

    @Test("alltoall with a malformed topology: one line, every rank exits 1")
    func badTopology() throws {
        let scratch = try ScratchDirectory()
        try #"{"nodes": [{"name": "a", "ranks": [0, 1]}], "links": {"inter_node": {"latency_us": -1, "bandwidth_gb_per_s": 1}}}"#
            .write(toFile: scratch.file("t.json"), atomically: true, encoding: .utf8)
        let job = try runMPI(ranks: 2, ["alltoall", "--topology", scratch.file("t.json")], timeoutSeconds: 60,
                             extraMPIArguments: waitForEveryRank, executable: benchExecutable)
        #expect(job.ranks.allSatisfy { $0.exitStatus == 1 }, "\(job)")
        let lines = job.allStderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains("field 'links.inter_node.latency_us': must be a finite number ≥ 0, got -1"), "\(job)")
    }

    @Test("project: the model alone for 512 nodes × 8 ranks, with a crossover")
    func project() throws {
        let scratch = try ScratchDirectory()
        let job = try runMPI(ranks: 1, ["project", "--nodes", "2,512", "--topology", "Topologies/2x4.json", "--json", scratch.file("p.json"),
                                        "--svg", scratch.file("p.svg")], executable: benchExecutable)
        try #require(job.mpirunStatus == 0, "\(job)")
        let document = try readJSONObject(scratch.file("p.json"))
        let rows = try #require(document["rows"] as? [[String: Any]])
        #expect(rows.count == 2 * 23)  // sizes 1 B ... 4 MiB in powers of 2
        #expect(rows.contains { $0["ranks"] as? Int == 4096 })
        let crossovers = try #require(document["crossovers"] as? [String])
        #expect(crossovers.count == 2 && crossovers.allSatisfy { $0.contains("crossover") }, "\(crossovers)")
    }

    @Test("pack: row packing and memcpy bandwidth are both reported")
    func pack() throws {
        let scratch = try ScratchDirectory()
        let job = try runMPI(ranks: 1, ["pack", "--tokens", "256", "--d-model", "64", "--repetitions", "3", "--json", scratch.file("k.json")],
                             executable: benchExecutable)
        try #require(job.mpirunStatus == 0, "\(job)")
        let rows = try #require(try readJSONObject(scratch.file("k.json"))["rows"] as? [[String: Any]])
        #expect(rows.count == 1 && (rows[0]["pack_gb_per_s"] as? Double ?? 0) > 0 && (rows[0]["memcpy_gb_per_s"] as? Double ?? 0) > 0)
    }

    @Test("layer --model: every distinct layer of an imported model, dense and shared included, against its GEMMs")
    func layerOfImportedModel() throws {
        let scratch = try ScratchDirectory()
        let imported = try importFixture("qwen2_moe", into: scratch)
        let job = try runMPI(ranks: 2, ["layer", "--model", imported.model, "--tokens", "32", "--warmup", "0", "--repetitions", "2",
                                        "--json", scratch.file("l.json")], executable: benchExecutable)
        try #require(job.mpirunStatus == 0, "\(job)")
        let rows = try #require(try readJSONObject(scratch.file("l.json"))["rows"] as? [[String: Any]])
        #expect(rows.map { $0["layer"] as? String } == ["layer 0 ×2 top-2+shared", "layer 1 dense"], "\(rows)")
        #expect(rows.map { "\($0["experts"] ?? "")" } == ["8", "dense"], "\(rows)")
        for row in rows { #expect((row["gemm_ms"] as? Double ?? 0) > 0 && (row["dense_ms"] as? Double ?? 0) > 0, "\(row)") }
    }
}
}
