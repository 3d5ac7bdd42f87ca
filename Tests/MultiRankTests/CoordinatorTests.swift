import FileFormats
import Foundation
import Testing

extension MultiRankTests {
@Suite("Coordinator and dynamic capacity", .serialized)
struct CoordinatorTests {
    @Test("distributed equals the reference under every capacity policy on the drifting workload", arguments: [
        ("static", 4), ("adaptive-factor", 4), ("reallocate", 4), ("reallocate", 8), ("dynamoe", 4),
    ])
    func policiesMatchReference(policy: String, ranks: Int) throws {
        // The reference replays the policy from its own statistics; any difference in a plan
        // would change capacities, routing and outputs in later steps.
        try ModelTests().compareWithReference(
            ranks: ranks, model: "Models/test-gelu.json", topology: ranks == 8 ? "Topologies/2x4.json" : "Topologies/2x2.json",
            extra: ["--tokens-per-rank", "48", "--policy", policy, "--drift", "2", "--drift-period", "6"],
            // dynamoe grows each layer's factor until nothing drops, so its last step may drop nothing.
            droppingLayers: policy == "dynamoe" ? [] : [0], steps: 5,
            expectInOutput: policy == "dynamoe" ? ["dynamoe: capacity factor per layer now"] : [])
    }

    @Test("plan caching skips the count exchange (capacity mode: every step after the first), falls back when rows do not fit (observed mode), and never changes a number")
    func planCache() throws {
        // 4 layers × 4 steps: the first step of each layer needs the count exchange.
        try ModelTests().compareWithReference(
            ranks: 4, model: "Models/test-gelu.json", topology: "Topologies/2x2.json",
            extra: ["--tokens-per-rank", "40", "--policy", "reallocate", "--drift", "1", "--drift-period", "6"],
            steps: 4, expectInOutput: ["[linear] plan cache: 12 hits, 0 misses of 16 layer-steps"], runExtra: ["--plan-cache", "capacity"])
        // Observed sizes with no headroom: the drifting routes overflow, every step falls back.
        try ModelTests().compareWithReference(
            ranks: 4, model: "Models/test-gelu.json", topology: nil,
            extra: ["--tokens-per-rank", "40", "--drift", "1", "--drift-period", "6"],
            steps: 4, expectInOutput: ["[linear] plan cache: 0 hits, 12 misses of 16 layer-steps"],
            runExtra: ["--plan-cache", "observed", "--plan-cache-headroom", "0"])
    }

    @Test("the statistics add up: routes = kept + dropped = k·tokens, bytes sent = bytes received = kept rows × row bytes")
    func statisticsSumToTruth() throws {
        let scratch = try ScratchDirectory()
        let job = try runMPI(ranks: 4, ["run", "--model", "Models/test-gelu.json", "--tokens-per-rank", "40", "--steps", "4", "--quiet",
                                        "--policy", "reallocate", "--drift", "1.5", "--stats", scratch.file("s.jsonl")])
        try #require(job.mpirunStatus == 0, "\(job)")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("s.jsonl.partial")))
        let lines = try String(contentsOfFile: scratch.file("s.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 4)
        let topK = [2, 1, 4, 2]  // Models/test-gelu.json
        for (index, line) in lines.enumerated() {
            let step = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(step["step"] as? Int == index && step["policy"] as? String == "reallocate")
            let expertSeconds = try #require(step["expert_seconds_by_rank"] as? [Double])
            #expect(expertSeconds.count == 4 && expertSeconds.allSatisfy { $0 > 0 })
            let layers = try #require(step["layers"] as? [[String: Any]])
            for (layer, entry) in layers.enumerated() {
                let routed = try #require(entry["routed"] as? [Int]), kept = try #require(entry["kept"] as? [Int])
                let dropped = try #require(entry["dropped"] as? [Int])
                #expect(entry["tokens"] as? Int == 160)
                #expect(routed.reduce(0, +) == topK[layer] * 160, "layer \(layer)")
                for expert in routed.indices { #expect(routed[expert] == kept[expert] + dropped[expert], "layer \(layer) expert \(expert)") }
                let sent = try #require(entry["bytes_sent_by_rank"] as? [Int]), received = try #require(entry["bytes_received_by_rank"] as? [Int])
                let sentTotal: Int = sent.reduce(0, +)
                let receivedTotal: Int = received.reduce(0, +)
                let keptRowBytes: Int = kept.reduce(0, +) * 32 * 4  // one row of d_model 32 floats per kept route
                #expect(sentTotal == receivedTotal)
                #expect(sentTotal == keptRowBytes, "layer \(layer)")
                #expect(entry["dispatch_bytes"] as? Int == sentTotal)
                // Rows each rank's experts received: its received bytes / row bytes; they add up to the kept routes.
                let rows = try #require(entry["rows_by_rank"] as? [Int])
                #expect(rows.count == 4 && rows.reduce(0, +) == kept.reduce(0, +), "layer \(layer): \(rows)")
            }
        }
        // The reallocated budget equals the static one in every step (slots summed over ranks).
        let first = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        let last = try #require(try JSONSerialization.jsonObject(with: Data(lines[3].utf8)) as? [String: Any])
        let firstLayers = try #require(first["layers"] as? [[String: Any]])
        let lastLayers = try #require(last["layers"] as? [[String: Any]])
        for (a, b) in zip(firstLayers, lastLayers) {
            let before: [Int] = a["capacity"] as? [Int] ?? []
            let after: [Int] = b["capacity"] as? [Int] ?? []
            #expect(before.reduce(0, +) == after.reduce(0, +))
            #expect(!before.isEmpty)
        }
        // moe stats renders it.
        let rendered = try runMoe(["stats", scratch.file("s.jsonl"), "--svg", scratch.file("plot")])
        #expect(rendered.status == 0, "\(rendered.stderr)")
        #expect(rendered.stdout.contains("4 steps, 4 layers, policy reallocate"), "\(rendered.stdout)")
        #expect(rendered.stdout.contains("ranks: max/mean rows"), "\(rendered.stdout)")
        #expect(FileManager.default.fileExists(atPath: scratch.file("plot-ranks.svg")) && FileManager.default.fileExists(atPath: scratch.file("plot-rank-time.svg")))
        // moe placement plans from it: every layer is balanced at least as well as the static blocks.
        let planned = try runMoe(["placement", scratch.file("s.jsonl"), "--ranks", "4", "--redundant-experts", "1", "--json", scratch.file("p.json")])
        #expect(planned.status == 0, "\(planned.stderr)")
        let placements = try #require(try readJSONObject(scratch.file("p.json"))["layers"] as? [[String: Any]])
        #expect(placements.count == 4)
        for layer in placements {
            let before = try #require(layer["static_imbalance"] as? Double), after = try #require(layer["balanced_imbalance"] as? Double)
            #expect(after <= before + 1e-9, "\(layer)")
            let slots = try #require(layer["slots"] as? [[Int]])
            #expect(slots.allSatisfy { Set($0).count == $0.count }, "no rank holds an expert twice: \(slots)")
        }
        for name in ["plot-drop.svg", "plot-load-layer0.svg", "plot-load-layer3.svg"] {
            #expect(try String(contentsOfFile: scratch.file(name), encoding: .utf8).contains("<polyline"), "\(name)")
        }
    }

    @Test("a rank that sends malformed statistics ends the job with one line naming it")
    func malformedStatistics() throws {
        let job = try runMPI(ranks: 4, ["run", "--model", "Models/test-gelu.json", "--tokens-per-rank", "16", "--steps", "3", "--corrupt-stats", "2"],
                             timeoutSeconds: 60, extraMPIArguments: waitForEveryRank)
        #expect(job.ranks.allSatisfy { $0.exitStatus == 1 }, "\(job)")
        let lines = job.allStderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("moe: error: rank 2 sent malformed statistics at step 1: layer 0 expert"), "\(job)")
    }

    @Test("the coordinator killed mid-run: the job ends within the timeout, naming the rank, nothing left behind")
    func coordinatorDies() throws {
        let job = try runMPI(ranks: 4, ["run", "--model", "Models/test-gelu.json", "--tokens-per-rank", "16", "--steps", "50", "--kill-rank", "0@3"],
                             timeoutSeconds: 60)
        #expect(job.mpirunStatus != 0, "\(job)")
        // The wrapper shell around rank 0 records 128 + SIGKILL; mpirun names the process
        // ([job,0]) and its status, and ends the other ranks (runMPI checks none is left).
        #expect(job.ranks[0].exitStatus == 137, "\(job)")
        #expect(job.mpirunOutput.contains(",1],0]") && job.mpirunOutput.contains("Exit code:    137"), "\(job)")
    }

    @Test("moe-bench capacity: four policies, reallocate at the static budget")
    func capacityBenchmark() throws {
        let scratch = try ScratchDirectory()
        let job = try runMPI(ranks: 2, ["capacity", "--layers", "1", "--d-model", "16", "--d-ff", "16", "--tokens", "64", "--steps", "6", "--skip", "2",
                                        "--json", scratch.file("c.json")], executable: benchExecutable)
        try #require(job.mpirunStatus == 0, "\(job)")
        let rows = try #require(try readJSONObject(scratch.file("c.json"))["rows"] as? [[String: Any]])
        #expect(rows.map { $0["policy"] as? String } == ["static", "adaptive-factor", "reallocate", "dynamoe"])
        #expect(rows[2]["slots_per_step"] as? Double == rows[0]["slots_per_step"] as? Double)
    }
}
}
