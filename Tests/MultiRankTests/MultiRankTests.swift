import Exchange
import Foundation
import Testing

/// Every test that launches real `mpirun` jobs lives inside this suite (other files extend it),
/// and `.serialized` is inherited by the nested suites: jobs run one at a time, so two jobs never
/// compete for the machine's cores, and the leftover-process check sees only its own job.
@Suite("Multi-rank (mpirun)", .serialized)
struct MultiRankTests {
    @Suite("Exchange algorithms equal MPI_Alltoallv", .serialized)
    struct ExchangeEquivalence {
        @Test("every algorithm is byte-identical to MPI_Alltoallv on random, empty, skewed and uneven sizes", arguments: [
            (1, nil), (2, nil), (3, "Topologies/3x1.json"), (4, "Topologies/2x2.json"), (4, "Topologies/1x4.json"),
            (8, "Topologies/2x4.json"), (8, "Topologies/4x2.json"), (6, "Topologies/uneven-6.json"),
        ] as [(Int, String?)])
        func equivalence(ranks: Int, topology: String?) throws {
            try checkExchanges(ranks: ranks, topology: topology, simulate: nil)
        }

        @Test("simulated links never alter data; without simulation the same topologies pass too", arguments: [
            (4, "Topologies/2x2.json", true), (8, "Topologies/2x4.json", false), (6, "Topologies/uneven-6.json", false),
        ] as [(Int, String, Bool)])
        func simulation(ranks: Int, topology: String, simulate: Bool) throws {
            try checkExchanges(ranks: ranks, topology: topology, simulate: simulate)
        }

        /// Runs `moe exchange-check` and expects every algorithm to match the oracle byte for
        /// byte; `simulate` nil leaves simulation as the topology says (on for the multi-node files).
        func checkExchanges(ranks: Int, topology: String?, simulate: Bool?) throws {
            let json = FileManager.default.temporaryDirectory.appendingPathComponent("moe-check-\(UUID()).json").path
            defer { try? FileManager.default.removeItem(atPath: json) }
            // 24 trials cover every traffic shape with each of the four row sizes.
            var arguments = ["exchange-check", "--trials", "24", "--max-rows", "40", "--seed", "\(ranks * 7 + 1)", "--json", json]
            if let topology { arguments += ["--topology", topology] }
            if let simulate { arguments += ["--simulate-links", simulate ? "on" : "off"] }
            let job = try runMPI(ranks: ranks, arguments)
            try #require(job.mpirunStatus == 0, "\(job)")
            #expect(job.ranks.allSatisfy { $0.exitStatus == 0 }, "\(job)")
            let report = try readJSONObject(json)
            #expect(report["passed"] as? Bool == true, "\(job)")
            // Multi-node topology files turn simulation on; messages really went through it.
            let multiNode = (report["nodes"] as? Int ?? 1) > 1
            let simulated = simulate ?? multiNode
            #expect(report["simulated_links"] as? Bool == simulated, "\(job)")
            if simulated && multiNode { #expect((report["simulated_messages"] as? Int ?? 0) > 0, "\(job)") }
            #expect(report["world_size"] as? Int == ranks)
            let algorithms = try #require(report["algorithms"] as? [[String: Any]])
            #expect(algorithms.map { $0["name"] as? String } == ["mpi-oracle-vs-generated"] + AllToAllAlgorithm.allCases.map(\.rawValue))
            for entry in algorithms {
                #expect(entry["mismatched_trials"] as? Int == 0, "\(entry)\n\(job)")
            }
            // Data really moved: every algorithm received the same, non-zero number of bytes.
            let bytes = algorithms.dropFirst().compactMap { $0["bytes_received"] as? Int }
            #expect(bytes.count == 4 && Set(bytes).count == 1 && bytes[0] > 0, "\(algorithms)")
        }

        @Test("the check catches a corrupted byte: it can fail")
        func detectsCorruption() throws {
            let job = try runMPI(ranks: 3, ["exchange-check", "--trials", "6", "--corrupt", "pairwise"], extraMPIArguments: waitForEveryRank)
            #expect(job.ranks.allSatisfy { $0.exitStatus == 1 }, "\(job)")
            #expect(job.ranks[0].stdout.contains("pairwise      FAIL"), "\(job)")
            #expect(job.ranks[0].stdout.contains("linear        pass"), "\(job)")
            #expect(job.ranks[0].stdout.contains("first mismatch of pairwise: trial 0"), "\(job)")
            #expect(job.allStderr.components(separatedBy: "moe: error: exchange check failed").count == 2, "\(job)")
        }
    }

    @Suite("Topologies under mpirun", .serialized)
    struct Topologies {
        @Test("a rank count that differs from the file ends every rank with one line naming both numbers")
        func rankCountMismatch() throws {
            let job = try runMPI(ranks: 3, ["exchange-check", "--topology", "Topologies/2x2.json"], timeoutSeconds: 60,
                                 extraMPIArguments: waitForEveryRank)
            #expect(job.ranks.allSatisfy { $0.exitStatus == 1 }, "\(job)")
            #expect(job.ranks[0].stderr == "moe: error: Topologies/2x2.json declares 4 ranks but mpirun started 3 [rank 0]\n", "\(job)")
            #expect(job.ranks.dropFirst().allSatisfy { $0.stderr.isEmpty }, "\(job)")
        }

        @Test("a malformed topology file ends every rank with the file and field named")
        func malformedFile() throws {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("moe-bad-\(UUID()).json").path
            try #"{"nodes": [{"name": "a", "ranks": [0, 1]}, {"name": "b", "ranks": [1]}]}"#.write(toFile: path, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: path) }
            // mpirun's default reaction here: the job fails as a whole.
            let job = try runMPI(ranks: 2, ["topology", "--topology", path], timeoutSeconds: 60)
            #expect(job.mpirunStatus != 0, "\(job)")
            #expect(job.ranks[0].stderr.contains("\(path): field 'nodes[1].ranks[0]': rank 1 is listed twice"), "\(job)")
        }

        @Test("moe topology reports each rank's node and local rank from the file")
        func explainsPlacement() throws {
            let job = try runMPI(ranks: 8, ["topology", "--topology", "Topologies/4x2.json"])
            try #require(job.mpirunStatus == 0, "\(job)")
            let out = job.ranks[0].stdout
            #expect(out.contains("topology 4x2 (Topologies/4x2.json): 8 ranks on 4 nodes"), "\(out)")
            #expect(out.contains("inter-node: latency 50 µs, bandwidth 1 GB/s"), "\(out)")
            for rank in 0..<8 {
                #expect(out.contains("rank \(rank): node node\(rank / 2) (local rank \(rank % 2))"), "\(out)")
            }
        }

        @Test("without a file, nodes come from MPI's shared-memory split: one node on one machine")
        func nodesFromMPI() throws {
            let job = try runMPI(ranks: 3, ["topology"])
            try #require(job.mpirunStatus == 0, "\(job)")
            #expect(job.ranks[0].stdout.contains("(MPI shared-memory split): 3 ranks on 1 node"), "\(job)")
        }

        @Test("a bad flag is reported once, before MPI starts, with exit status 2 on every rank")
        func badFlag() throws {
            let job = try runMPI(ranks: 2, ["exchange-check", "--trails", "3"], timeoutSeconds: 60, extraMPIArguments: waitForEveryRank)
            #expect(job.ranks.allSatisfy { $0.exitStatus == 2 }, "\(job)")
            #expect(job.ranks[0].stderr.hasPrefix("moe exchange-check: error: unknown option '--trails' (did you mean '--trials'?)"), "\(job)")
            #expect(job.ranks[1].stderr.isEmpty, "\(job)")
        }
    }
}
