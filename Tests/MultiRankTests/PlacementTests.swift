import FileFormats
import Foundation
import Testing

/// Expects `moved` (a run with redundant experts and migrations) to equal `static` (the same run
/// with the static placement) within 1e-6 relative: OpenBLAS's row results depend on how many
/// rows one `cblas_sgemm` is given (docs/ARCHITECTURE.md, "Expert slots"), so splitting an
/// expert's rows over replicas is not bitwise.
func expectWithinOnePPM(_ moved: [Float], _ base: [Float], _ context: String) {
    #expect(moved.count == base.count, "\(context): \(moved.count) vs \(base.count) values")
    let scale = max(1, base.map(abs).max() ?? 0)
    let worst = zip(moved, base).map { abs($0 - $1) }.max() ?? 0
    #expect(worst / scale <= 1e-6, "\(context): largest difference \(worst) against max |value| \(scale)")
}

extension MultiRankTests {
@Suite("Expert placement: replicas, migration, same numbers", .serialized)
struct PlacementTests {
    /// Runs `moe run` on `ranks` ranks twice — static placement, then `placement` — with every
    /// exchange, and the reference with the same placement options. Expects identical routing,
    /// outputs within 1e-6 relative of the static run (and within the usual 1e-5 of the
    /// reference), placement changes that happened, and the reference printing the same change
    /// lines. Returns the balanced run's rank-0 output.
    @discardableResult
    func compare(ranks: Int, model: String, topology: String?, placement: [String], extra: [String] = [], steps: Int = 5,
                 runExtra: [String] = []) throws -> String {
        let scratch = try ScratchDirectory()
        let common = ["--model", model, "--seed", "\(ranks + 5)", "--steps", "\(steps)"] + extra
        let topologyArguments = topology.map { ["--topology", $0] } ?? []
        func run(_ name: String, _ options: [String]) throws -> MPIJobResult {
            let job = try runMPI(ranks: ranks, ["run"] + common + options + runExtra + topologyArguments
                                 + ["--exchange", "all", "--quiet", "--output", scratch.file("\(name).npy"),
                                    "--routing-output", scratch.file("\(name).json"), "--stats", scratch.file("\(name).jsonl")])
            try #require(job.mpirunStatus == 0, "\(job)")
            #expect(job.ranks[0].stdout.contains("outputs identical across exchanges: mpi, linear, pairwise, hierarchical"), "\(job)")
            return job
        }
        _ = try run("static", [])
        let balanced = try run("balanced", placement)
        let stdout = balanced.ranks[0].stdout
        let context = "\(model) on \(ranks) ranks, \(placement.joined(separator: " "))"
        #expect(try routingDecisions(scratch.file("balanced.json")) == routingDecisions(scratch.file("static.json")), "\(context): routing differs")
        let moved = try #require(try NpyArray.load(path: scratch.file("balanced.npy")).float32Values)
        let base = try #require(try NpyArray.load(path: scratch.file("static.npy")).float32Values)
        expectWithinOnePPM(moved, base, context)
        // The placement did move: changes, migrations, the stats log's record of them.
        let changes = stdout.split(separator: "\n").filter { $0.hasPrefix("[mpi] placement change after step") }
            .map { $0.replacingOccurrences(of: "[mpi] ", with: "") }
        for algorithm in ["linear", "pairwise", "hierarchical"] {
            let again = stdout.split(separator: "\n").filter { $0.hasPrefix("[\(algorithm)] placement change after step") }
                .map { $0.replacingOccurrences(of: "[\(algorithm)] ", with: "") }
            #expect(again == changes, "\(context): \(algorithm) decided other placements")
        }
        #expect(!changes.isEmpty, "\(context): no placement change\n\(stdout)")
        #expect(stdout.contains("[mpi] migration after step"), "\(context)\n\(stdout)")
        let log = try String(contentsOfFile: scratch.file("balanced.jsonl"), encoding: .utf8)
        #expect(log.contains("\"placement_changes\""), "\(context): the stats log does not record the changes")
        // The reference replays the same placement decisions from the same statistics.
        let reference = try runMoe(["reference"] + common + placement + topologyArguments
                                   + ["--ranks", "\(ranks)", "--output", scratch.file("ref.npy")])
        try #require(reference.status == 0, "\(reference.stderr)")
        let replayed = reference.stdout.split(separator: "\n").filter { $0.contains("placement change after step") }.map(String.init)
        #expect(replayed == changes, "\(context): the reference decided other placements\nrun:\n\(changes.joined(separator: "\n"))\nreference:\n\(replayed.joined(separator: "\n"))")
        let expected = try #require(try NpyArray.load(path: scratch.file("ref.npy")).float32Values)
        expectClose(moved, expected, context)
        return stdout
    }

    @Test("2 ranks: one redundant slot, re-placed every 2 steps under drift")
    func twoRanks() throws {
        try compare(ranks: 2, model: "Models/test-gelu.json", topology: "Topologies/1x2.json",
                    placement: ["--placement", "balanced", "--redundant-experts", "1", "--rebalance-every", "2"],
                    extra: ["--tokens-per-rank", "48", "--drift", "3", "--drift-period", "4"])
    }

    @Test("4 ranks on 2 nodes: R = 2, node-aware packing, capacity plan caching, the hierarchical exchange")
    func fourRanks() throws {
        try compare(ranks: 4, model: "Models/test-relu.json", topology: "Topologies/2x2.json",
                    placement: ["--placement", "balanced-node", "--redundant-experts", "2", "--rebalance-every", "2"],
                    extra: ["--tokens-per-rank", "40", "--drift", "3", "--drift-period", "4"], runExtra: ["--plan-cache", "capacity"])
    }

    @Test("8 ranks: expert-parallel groups (2, 4, 3 experts), a PR-MoE layer, dropped routes, observed plan caching")
    func eightRanksWithGroups() throws {
        try compare(ranks: 8, model: "Models/test-pyramid.json", topology: "Topologies/2x4.json",
                    placement: ["--placement", "balanced", "--redundant-experts", "1", "--rebalance-every", "2", "--rebalance-threshold", "0"],
                    extra: ["--tokens-per-rank", "24", "--drift", "3", "--drift-period", "4"], steps: 4, runExtra: ["--plan-cache", "observed"])
    }

    @Test("a static placement with redundant slots fills them and never moves; same numbers")
    func staticRedundant() throws {
        let scratch = try ScratchDirectory()
        let common = ["run", "--model", "Models/test-gelu.json", "--tokens-per-rank", "32", "--steps", "3", "--drift", "3", "--quiet"]
        let plain = try runMPI(ranks: 4, common + ["--output", scratch.file("plain.npy")])
        let redundant = try runMPI(ranks: 4, common + ["--redundant-experts", "1", "--output", scratch.file("redundant.npy")])
        try #require(plain.mpirunStatus == 0 && redundant.mpirunStatus == 0, "\(plain)\n\(redundant)")
        #expect(!redundant.ranks[0].stdout.contains("placement change"))
        expectWithinOnePPM(try #require(try NpyArray.load(path: scratch.file("redundant.npy")).float32Values),
                           try #require(try NpyArray.load(path: scratch.file("plain.npy")).float32Values), "static R = 1")
    }

    @Test("a migration that fails on one rank: every rank stops with one line, no output written")
    func failedMigration() throws {
        let scratch = try ScratchDirectory()
        let job = try runMPI(ranks: 4, ["run", "--model", "Models/test-gelu.json", "--tokens-per-rank", "32", "--steps", "4", "--drift", "3",
                                        "--placement", "balanced", "--redundant-experts", "1", "--rebalance-every", "2",
                                        "--rebalance-threshold", "0", "--fail-migration", "2@2", "--output", scratch.file("out.npy")],
                             timeoutSeconds: 60, extraMPIArguments: waitForEveryRank)
        #expect(job.ranks.allSatisfy { $0.exitStatus == 1 }, "\(job)")
        let lines = job.allStderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("moe: error: step 2: expert migration failed on rank 2: testing aid --fail-migration"), "\(job)")
        #expect(lines.first?.contains("no rank adopted the new placement") == true, "\(job)")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("out.npy")))
    }

    @Test("bad placement options: one line, exit 2", arguments: [
        (["--redundant-experts", "8"], "--redundant-experts 8: layer 0 has 8 experts on a group of 4 ranks, so at most 6 redundant slots per rank fit"),
        (["--placement", "balanced", "--rebalance-every", "0"], "--rebalance-every"),
        (["--rebalance-every", "4"], "--rebalance-every applies to --placement balanced or balanced-node"),
        (["--placement", "everywhere"], "--placement"),
    ] as [([String], String)])
    func badOptions(options: [String], message: String) throws {
        let job = try runMPI(ranks: 4, ["run", "--model", "Models/test-gelu.json", "--tokens-per-rank", "16"] + options,
                             timeoutSeconds: 60, extraMPIArguments: waitForEveryRank)
        #expect(job.ranks.allSatisfy { $0.exitStatus == 2 }, "\(job)")
        // Every rank reaches the same verdict; the message is one line (and the --help hint).
        let lines = Set(job.allStderr.split(separator: "\n").filter { !$0.hasPrefix("(see 'moe") })
        #expect(lines.count == 1 && lines.first!.contains(message), "\(job)")
    }
}
}
