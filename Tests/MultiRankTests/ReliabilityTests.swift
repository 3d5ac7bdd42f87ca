import FileFormats
import Foundation
import Testing

extension MultiRankTests {
/// Issue 8's points through real mpirun jobs: every failure ends every rank with one clear line
/// (or mpirun's own report for a dead rank), no hang, nothing left behind (runMPI checks that no
/// `moe` process survives a job), nothing half-written. Bad input files, mismatched rank counts
/// and NaN inputs are in `BadInputTests` and the topology suite.
@Suite("Reliability — hangs, dead ranks, outputs, numerical hazards", .serialized)
struct ReliabilityTests {
    @Test("watchdog: a rank that stops making progress ends the job, naming the phase, who waits and who has not arrived")
    func watchdog() throws {
        let job = try runMPI(ranks: 4, ["run", "--model", "Models/test-gelu.json", "--tokens-per-rank", "16", "--steps", "5", "--quiet",
                                        "--timeout-s", "2", "--hang-rank", "2@2"], timeoutSeconds: 60)
        #expect(job.mpirunStatus != 0, "\(job)")
        let lines = job.allStderr.split(separator: "\n").filter { $0.hasPrefix("moe:") }
        #expect(lines == ["moe: error: watchdog: no progress for 2 s in dispatch of layer 0, step 2: ranks 0, 1, 3 waiting there; not arrived: rank 2 (in experts (hung by --hang-rank) of layer 0, step 2)"], "\(job)")
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory()))?.filter { $0.hasPrefix("swiftmoe-watchdog-") } ?? []
        #expect(leftovers.isEmpty, "watchdog folders left: \(leftovers)")
    }

    @Test("a rank count that does not match the topology: one line, every rank exits 1, before any exchange")
    func mismatchedRanks() throws {
        let job = try runMPI(ranks: 4, ["run", "--topology", "Topologies/2x4.json", "--model", "Models/test-gelu.json"], timeoutSeconds: 60,
                             extraMPIArguments: waitForEveryRank)
        #expect(job.ranks.allSatisfy { $0.exitStatus == 1 }, "\(job)")
        #expect(job.allStderr == "moe: error: Topologies/2x4.json declares 8 ranks but mpirun started 4 [rank 0]\n", "\(job)")
    }

    @Test("a rank killed by a signal mid-run ends the whole job within seconds")
    func killedRank() throws {
        let started = Date()
        let job = try runMPI(ranks: 4, ["run", "--model", "Models/test-gelu.json", "--tokens-per-rank", "16", "--steps", "200", "--quiet",
                                        "--kill-rank", "2@3"], timeoutSeconds: 60)
        #expect(job.mpirunStatus != 0, "\(job)")
        #expect(job.ranks[2].exitStatus == 137, "\(job)")
        #expect(job.mpirunOutput.contains(",1],2]"), "mpirun names the process\n\(job)")
        #expect(Date().timeIntervalSince(started) < 55, "ended by mpirun, not by its timeout")
    }

    @Test("a failing run never truncates an existing output, report or stats log")
    func outputsSurviveFailure() throws {
        let scratch = try ScratchDirectory()
        let precious = "results of an earlier run\n"
        for name in ["out.npy", "report.json", "stats.jsonl"] { try precious.write(toFile: scratch.file(name), atomically: true, encoding: .utf8) }
        var values = [Float](repeating: 0.5, count: 8 * 32)
        values[3 * 32 + 1] = .infinity
        try NpyArray(float32: values, shape: [8, 32]).write(to: scratch.file("in.npy"))
        let job = try runMPI(ranks: 2, ["run", "--model", "Models/test-gelu.json", "--input", scratch.file("in.npy"),
                                        "--output", scratch.file("out.npy"), "--report", scratch.file("report.json"), "--stats", scratch.file("stats.jsonl")],
                             timeoutSeconds: 60, extraMPIArguments: waitForEveryRank)
        #expect(job.ranks.allSatisfy { $0.exitStatus == 1 }, "\(job)")
        for name in ["out.npy", "report.json", "stats.jsonl"] {
            #expect(try String(contentsOfFile: scratch.file(name), encoding: .utf8) == precious, "\(name) was touched")
        }
    }

    @Test("router logits that overflow end every rank with the layer, rank, token and expert")
    func nonFiniteLogits() throws {
        let scratch = try ScratchDirectory()
        let full = scratch.file("full.safetensors")
        try #require(try runMoe(["init-weights", "--model", "Models/test-gelu.json", "--output", full]).status == 0)
        let reader = try SafetensorsReader(path: full)
        let tensors = try reader.entries.keys.sorted().map { name -> (String, [Int], [Float]) in
            let shape = reader.entries[name]!.shape
            // Layer 1: every normed value 1e38 (the norm's shift) and a gate of ones, all finite,
            // so each logit x · W_g (32 terms) overflows to infinity.
            let count = shape.reduce(1, *)
            let values: [Float]
            switch name {
            case "layers.1.gate.weight": values = [Float](repeating: 1, count: count)
            case "layers.1.norm.shift": values = [Float](repeating: 1e38, count: count)
            default: values = try reader.readFloat32(name, shape: shape)
            }
            return (name, shape, values)
        }
        try SafetensorsWriter.write(tensors, to: scratch.file("w.safetensors"))
        let job = try runMPI(ranks: 4, ["run", "--model", "Models/test-gelu.json", "--weights", scratch.file("w.safetensors"), "--tokens-per-rank", "8"],
                             timeoutSeconds: 60, extraMPIArguments: waitForEveryRank)
        #expect(job.ranks.allSatisfy { $0.exitStatus == 1 }, "\(job)")
        let lines = job.allStderr.split(separator: "\n")
        #expect(lines == ["moe: error: layer 1: routing failed on rank 0: router logit of token 0 for expert 0 is inf"], "\(job)")
    }

    @Test("every token routed to one expert pair (one task), experts with zero tokens, one rank: distributed equals the reference")
    func skewedRouting() throws {
        let scratch = try ScratchDirectory()
        var values: [Float] = []
        for index in 0..<(24 * 32) { values.append(Float(cos(Double(index) * 0.11))) }
        try NpyArray(float32: values, shape: [24, 32]).write(to: scratch.file("in.npy"))
        let taskBytes = [Int32](repeating: 2, count: 24).withUnsafeBytes { Array($0) }
        try NpyArray(shape: [24], elementType: .int32, data: taskBytes).write(to: scratch.file("tasks.npy"))
        for ranks in [1, 4] {
            try ModelTests().compareWithReference(ranks: ranks, model: "Models/translation-tasks.json", topology: nil,
                                                  extra: ["--input", scratch.file("in.npy"), "--task-ids", scratch.file("tasks.npy")],
                                                  droppingLayers: ranks == 1 ? [0] : [])
        }
    }
}
}
