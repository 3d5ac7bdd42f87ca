import FileFormats
import Foundation
import Testing

extension MultiRankTests {
@Suite("Pipelined layer: overlap of exchange and experts, same numbers", .serialized)
struct OverlapTests {
    /// Runs `moe run` at overlap degree 1 and at each of `degrees` with every exchange algorithm,
    /// and expects identical routing and outputs within 1e-6 relative of degree 1 (bitwise where
    /// the GEMM row split allows; docs/ARCHITECTURE.md, "Pipelined layer").
    /// Degrees in `bitwise` (at most the experts per rank: every expert still runs one GEMM)
    /// must give exactly degree 1's bytes.
    func compare(ranks: Int, model: String, topology: String? = nil, degrees: [String], bitwise: Set<String> = [], extra: [String] = []) throws {
        let scratch = try ScratchDirectory()
        let common = ["run", "--model", model, "--seed", "\(ranks + 11)", "--steps", "2", "--exchange", "all", "--quiet"]
            + (topology.map { ["--topology", $0] } ?? []) + extra
        func run(_ degree: String) throws -> MPIJobResult {
            let job = try runMPI(ranks: ranks, common + ["--overlap-degree", degree, "--output", scratch.file("\(degree).npy"),
                                                        "--routing-output", scratch.file("\(degree).json")], timeoutSeconds: 300)
            try #require(job.mpirunStatus == 0, "\(job)")
            #expect(job.ranks[0].stdout.contains("outputs identical across exchanges: mpi, linear, pairwise, hierarchical"), "\(job)")
            return job
        }
        _ = try run("1")
        let base = try #require(try NpyArray.load(path: scratch.file("1.npy")).float32Values)
        for degree in degrees {
            let job = try run(degree)
            let context = "\(model) on \(ranks) ranks, overlap degree \(degree)"
            if degree == "auto" {
                #expect(job.ranks[0].stdout.contains("(auto): per chunk dispatch"), "\(context): no reason printed\n\(job)")
            } else {
                #expect(job.ranks[0].stdout.contains("overlap degree \(degree): each layer step runs as \(degree) chunks"), "\(job)")
            }
            #expect(try routingDecisions(scratch.file("\(degree).json")) == routingDecisions(scratch.file("1.json")), "\(context): routing differs")
            let pipelined = try #require(try NpyArray.load(path: scratch.file("\(degree).npy")).float32Values)
            expectWithinOnePPM(pipelined, base, context)
            if bitwise.contains(degree) { #expect(pipelined == base, "\(context): whole experts per chunk must be bitwise") }
        }
    }

    @Test("2 ranks: degrees 2, 3 (whole experts, bitwise) and 8 (split experts) give the sequential layer's numbers")
    func twoRanks() throws {
        try compare(ranks: 2, model: "Models/test-swiglu.json", degrees: ["2", "3", "8"], bitwise: ["2", "3"])
    }

    @Test("1 rank: a degenerate pipeline (only self-copies) is still the same layer")
    func oneRank() throws {
        try compare(ranks: 1, model: "Models/test-gelu.json", degrees: ["4"])
    }

    @Test("8 ranks on 2x4 with simulated links: PR-MoE, expert-parallel groups, dropped routes; degrees 2, 5 and auto")
    func eightRanksSimulated() throws {
        try compare(ranks: 8, model: "Models/test-pyramid.json", topology: "Topologies/2x4.json", degrees: ["2", "5", "auto"],
                    extra: ["--tokens-per-rank", "40", "--simulate-links", "on"])
    }

    @Test("4 ranks, replicated experts that migrate: the pipeline follows the placement")
    func withPlacement() throws {
        try compare(ranks: 4, model: "Models/test-residual.json", topology: "Topologies/2x2.json", degrees: ["4"],
                    extra: ["--redundant-experts", "1", "--placement", "balanced", "--rebalance-every", "1", "--tokens-per-rank", "40", "--drift", "3", "--drift-period", "4"])
    }

    @Test("every algorithm's nonblocking form, several exchanges in flight, equals MPI_Alltoallv (with and without simulated links)")
    func exchangesInFlight() throws {
        for (ranks, topology, simulate) in [(4, "Topologies/2x2.json", "on"), (6, "Topologies/uneven-6.json", "on"), (8, "Topologies/2x4.json", "off")] {
            let job = try runMPI(ranks: ranks, ["exchange-check", "--trials", "12", "--in-flight", "5", "--topology", topology,
                                                "--simulate-links", simulate], timeoutSeconds: 300)
            #expect(job.mpirunStatus == 0, "\(job)")
            #expect(job.ranks[0].stdout.contains("exchange check passed"), "\(job)")
            for algorithm in ["linear", "pairwise", "hierarchical"] {
                #expect(job.ranks[0].stdout.split(separator: "\n").contains { $0.hasPrefix("  \(algorithm)") && $0.contains("pass") }, "\(algorithm)\n\(job)")
            }
        }
    }

    @Test("bad overlap degrees: one line, exit 2", arguments: [
        (["--overlap-degree", "0"], "--overlap-degree"),
        (["--overlap-degree", "-3"], "--overlap-degree"),
        (["--overlap-degree", "33"], "outside 1...32"),
        (["--overlap-degree", "fast"], "neither an integer nor 'auto'"),
        (["--overlap-degree", "20"], "--overlap-degree 20 is larger than the rows allow: each rank has 16 tokens per step"),
        (["--overlap-degree", "auto", "--plan-cache", "capacity"], "--plan-cache applies to the sequential layer"),
    ] as [([String], String)])
    func badDegrees(options: [String], message: String) throws {
        let job = try runMPI(ranks: 2, ["run", "--model", "Models/test-gelu.json", "--tokens-per-rank", "16"] + options,
                             timeoutSeconds: 60, extraMPIArguments: waitForEveryRank)
        #expect(job.ranks.allSatisfy { $0.exitStatus == 2 }, "\(job)")
        let lines = Set(job.allStderr.split(separator: "\n").filter { !$0.hasPrefix("(see 'moe") })
        #expect(lines.count == 1 && lines.first!.contains(message), "\(job)")
    }

    @Test("a rank killed mid-pipeline ends the whole job within seconds")
    func killedMidPipeline() throws {
        let started = Date()
        let job = try runMPI(ranks: 4, ["run", "--model", "Models/test-gelu.json", "--tokens-per-rank", "32", "--steps", "200", "--quiet",
                                        "--overlap-degree", "4", "--kill-rank", "1@3"], timeoutSeconds: 60)
        #expect(job.mpirunStatus != 0, "\(job)")
        #expect(job.ranks[1].exitStatus == 137, "\(job)")
        #expect(Date().timeIntervalSince(started) < 55, "ended by mpirun, not by its timeout")
    }
}
}
