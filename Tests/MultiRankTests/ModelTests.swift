import FileFormats
import Exchange
import Foundation
import Testing

/// A scratch folder for one test's files, removed afterwards.
final class ScratchDirectory {
    let path: String
    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("moe-test-\(UUID())").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { "\(path)/\(name)" }
}

/// Runs `executable ARGUMENTS` from the repository root, output to files (never a pipe that can
/// fill), and returns status, stdout and stderr.
func runProcess(_ executable: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let scratch = try ScratchDirectory()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
    _ = FileManager.default.createFile(atPath: scratch.file("out"), contents: nil)
    _ = FileManager.default.createFile(atPath: scratch.file("err"), contents: nil)
    let out = FileHandle(forWritingAtPath: scratch.file("out"))
    let err = FileHandle(forWritingAtPath: scratch.file("err"))
    process.standardOutput = out
    process.standardError = err
    try process.run()
    process.waitUntilExit()
    try? out?.close()
    try? err?.close()
    return (process.terminationStatus, (try? String(contentsOfFile: scratch.file("out"), encoding: .utf8)) ?? "",
            (try? String(contentsOfFile: scratch.file("err"), encoding: .utf8)) ?? "")
}

/// Runs `moe` once without mpirun (the single-process commands).
func runMoe(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    try runProcess(moeExecutable, arguments)
}

/// Expects the distributed and reference outputs to agree within 1e-5 relative.
func expectClose(_ distributed: [Float], _ reference: [Float], _ context: String) {
    #expect(distributed.count == reference.count, "\(context): \(distributed.count) vs \(reference.count) values")
    var worst = (index: -1, error: Float(0))
    for (index, (a, b)) in zip(distributed, reference).enumerated() {
        let error = abs(a - b) / max(1, abs(b))
        if error > worst.error { worst = (index, error) }
    }
    #expect(worst.error <= 1e-5, "\(context): largest relative difference \(worst.error) at value \(worst.index)")
}

/// Routing arrays the two runs must agree on exactly, per layer and rank.
func routingDecisions(_ path: String) throws -> [[[String: [Int]]]] {
    let document = try readJSONObject(path)
    let layers = try #require(document["layers"] as? [[String: Any]])
    return try layers.map { layer in
        try #require(layer["ranks"] as? [[String: Any]]).map { rank in
            var decisions: [String: [Int]] = [:]
            for key in ["expert", "slot", "kept_per_expert", "dropped_per_expert"] { decisions[key] = rank[key] as? [Int] ?? [] }
            return decisions
        }
    }
}

extension MultiRankTests {
@Suite("MoE model equals the reference", .serialized)
struct ModelTests {
    /// Runs `moe run` on `ranks` ranks with every exchange algorithm, and `moe reference` for
    /// the same job; expects identical routing and outputs within 1e-5 relative.
    /// `droppingLayers`: layers in which some route must have been dropped (so the test covers
    /// the dropped-route path there).
    func compareWithReference(ranks: Int, model: String, topology: String?, extra: [String] = [], referenceExtra: [String]? = nil,
                              droppingLayers: [Int] = [], steps: Int = 1, expectInOutput: [String] = [], runExtra: [String] = []) throws {
        let scratch = try ScratchDirectory()
        let common = ["--model", model, "--seed", "\(ranks + 11)"] + extra
        var runArguments = ["run"] + common + runExtra + ["--steps", "\(steps)", "--exchange", "all", "--quiet",
                                               "--output", scratch.file("out.npy"), "--routing-output", scratch.file("routing.json")]
        if let topology { runArguments += ["--topology", topology] }
        let job = try runMPI(ranks: ranks, runArguments)
        try #require(job.mpirunStatus == 0, "\(job)")
        #expect(job.ranks[0].stdout.contains("outputs identical across exchanges: " + AllToAllAlgorithm.allCases.map(\.rawValue).joined(separator: ", ")), "\(job)")
        for text in expectInOutput { #expect(job.ranks[0].stdout.contains(text), "expected '\(text)'\n\(job)") }
        let reference = try runMoe(["reference"] + common + (referenceExtra ?? []) + ["--ranks", "\(ranks)", "--steps", "\(steps)",
                                    "--output", scratch.file("ref.npy"), "--routing-output", scratch.file("ref-routing.json"),
                                    "--input-output", scratch.file("in.npy")])
        try #require(reference.status == 0, "\(reference.stderr)")
        let distributedRouting = try routingDecisions(scratch.file("routing.json"))
        let referenceRouting = try routingDecisions(scratch.file("ref-routing.json"))
        #expect(distributedRouting.count == referenceRouting.count)
        for (layer, (a, b)) in zip(distributedRouting, referenceRouting).enumerated() {
            #expect(a == b, "\(model) on \(ranks) ranks: routing of layer \(layer) differs")
        }
        for layer in droppingLayers {
            let dropped = distributedRouting[layer].reduce(0) { $0 + ($1["dropped_per_expert"] ?? []).reduce(0, +) }
            #expect(dropped > 0, "\(model) on \(ranks) ranks: layer \(layer) dropped no route; the test would not cover drops")
        }
        let distributed = try #require(try NpyArray.load(path: scratch.file("out.npy")).float32Values)
        let expected = try #require(try NpyArray.load(path: scratch.file("ref.npy")).float32Values)
        expectClose(distributed, expected, "\(model) on \(ranks) ranks")
        // The model really did something: its outputs differ from its inputs (a model whose layers
        // were skipped on both sides would otherwise pass), and some routes dropped where capacity binds.
        let inputs = try #require(try NpyArray.load(path: scratch.file("in.npy")).float32Values)
        try #require(inputs.count == distributed.count)
        let change = zip(distributed, inputs).map { abs($0 - $1) }.max() ?? 0
        #expect(change > 1e-3 * (inputs.map(abs).max() ?? 1), "\(model): the outputs are the inputs (largest change \(change))")
    }

    @Test("distributed equals the reference for every activation, k = 1, 2, 4 and every drop policy", arguments: [
        (1, "Models/test-relu.json", nil), (2, "Models/test-gelu.json", "Topologies/1x2.json"),
        (3, "Models/test-swiglu.json", "Topologies/3x1.json"), (4, "Models/test-relu.json", "Topologies/2x2.json"),
        (4, "Models/test-gelu.json", "Topologies/1x4.json"), (4, "Models/test-swiglu.json", "Topologies/2x2.json"),
        (8, "Models/test-relu.json", "Topologies/2x4.json"), (8, "Models/test-gelu.json", "Topologies/4x2.json"),
        (8, "Models/test-swiglu.json", "Topologies/2x4.json"),
    ] as [(Int, String, String?)])
    func matchesReference(ranks: Int, model: String, topology: String?) throws {
        try compareWithReference(ranks: ranks, model: model, topology: topology, extra: ["--tokens-per-rank", "37"])
    }

    @Test("PR-MoE residual layers (dense MLP + top-1 expert, with dropped routes) equal the reference", arguments: [
        (1, nil), (2, "Topologies/1x2.json"), (4, "Topologies/2x2.json"), (8, "Topologies/2x4.json"),
    ] as [(Int, String?)])
    func residual(ranks: Int, topology: String?) throws {
        try compareWithReference(ranks: ranks, model: "Models/test-residual.json", topology: topology,
                                 extra: ["--tokens-per-rank", "41"], droppingLayers: [0, 1, 2])
    }

    @Test("pyramid layers (2, 4, 8, 3, 8 experts) with expert-parallel groups, even and uneven, equal the reference", arguments: [
        (3, "Topologies/3x1.json"), (4, "Topologies/2x2.json"), (6, "Topologies/uneven-6.json"), (8, "Topologies/4x2.json"),
    ] as [(Int, String?)])
    func pyramidAndReplicaGroups(ranks: Int, topology: String?) throws {
        try compareWithReference(ranks: ranks, model: "Models/test-pyramid.json", topology: topology,
                                 extra: ["--tokens-per-rank", "33"], droppingLayers: [2])
    }

    @Test("task-level routing: distributed equals the reference")
    func taskRouting() throws {
        try compareWithReference(ranks: 4, model: "Models/translation-tasks.json", topology: "Topologies/2x2.json",
                                 extra: ["--tokens-per-rank", "29"])
    }

    @Test("inputs and weights from files; a rank with zero tokens")
    func filesAndEmptyRank() throws {
        let scratch = try ScratchDirectory()
        // 7 tokens over 8 ranks: rank 0 holds none (blocks are ⌊r·N/G⌋..<⌊(r+1)·N/G⌋).
        var values: [Float] = []
        for index in 0..<(7 * 32) { values.append(Float(sin(Double(index) * 0.37)) * 2) }
        try NpyArray(float32: values, shape: [7, 32]).write(to: scratch.file("in.npy"))
        let weights = try runMoe(["init-weights", "--model", "Models/test-gelu.json", "--seed", "5", "--output", scratch.file("w.safetensors")])
        try #require(weights.status == 0, "\(weights.stderr)")
        try compareWithReference(ranks: 8, model: "Models/test-gelu.json", topology: nil,
                                 extra: ["--input", scratch.file("in.npy"), "--weights", scratch.file("w.safetensors")])
    }

    @Test("weights from a file (moe init-weights) equal weights from the same seed, residual tensors included",
          arguments: ["Models/test-swiglu.json", "Models/test-residual.json"])
    func seededFileEqualsSeed(model: String) throws {
        let scratch = try ScratchDirectory()
        let written = try runMoe(["init-weights", "--model", model, "--seed", "15", "--output", scratch.file("w.safetensors")])
        try #require(written.status == 0, "\(written.stderr)")
        // The run reads its experts from the file, the reference generates them from seed 15.
        try compareWithReference(ranks: 4, model: model, topology: nil,
                                 extra: ["--tokens-per-rank", "20", "--weights", scratch.file("w.safetensors")],
                                 referenceExtra: [])
    }
}

@Suite("Reliability — bad input ends every rank cleanly", .serialized)
struct BadInputTests {
    /// Runs a job that must fail on every rank with exit status 1 and one line from one rank.
    func expectCleanFailure(ranks: Int, _ arguments: [String], message: String) throws {
        let job = try runMPI(ranks: ranks, arguments, timeoutSeconds: 60, extraMPIArguments: waitForEveryRank)
        #expect(job.ranks.allSatisfy { $0.exitStatus == 1 }, "\(job)")
        let lines = job.allStderr.split(separator: "\n")
        #expect(lines.count == 1, "\(job)")
        #expect(lines.first?.contains(message) == true, "expected '\(message)'\n\(job)")
    }

    @Test("a .npy of the wrong shape")
    func wrongShape() throws {
        let scratch = try ScratchDirectory()
        try NpyArray(float32: [Float](repeating: 1, count: 50), shape: [10, 5]).write(to: scratch.file("in.npy"))
        try expectCleanFailure(ranks: 2, ["run", "--model", "Models/test-gelu.json", "--input", scratch.file("in.npy")],
                               message: "in.npy: expected float32 [tokens, 32] (d_model of the model), got <f4 [10, 5]")
    }

    @Test("NaN in the inputs, every expert precision (int8's per-token scales keep it in its token)", arguments: ["fp32", "bf16", "int8"])
    func nanInput(precision: String) throws {
        let scratch = try ScratchDirectory()
        var values = [Float](repeating: 0.5, count: 8 * 16)
        values[5 * 16 + 3] = .nan
        try NpyArray(float32: values, shape: [8, 16]).write(to: scratch.file("in.npy"))
        try expectCleanFailure(ranks: 4, ["run", "--model", "Models/test-swiglu.json", "--input", scratch.file("in.npy"), "--expert-precision", precision],
                               message: "hidden state of rank-local token 1 (rank 2) feature 3 is nan (NaN or infinite) [rank 2]")
    }

    @Test("weights missing an expert: only the rank that holds it notices, and every rank stops")
    func missingExpert() throws {
        let scratch = try ScratchDirectory()
        let full = scratch.file("full.safetensors")
        try #require(try runMoe(["init-weights", "--model", "Models/test-gelu.json", "--output", full]).status == 0)
        // Copy every tensor except expert 5 of layer 1 (held by rank 2 of 4: experts 4 and 5).
        let reader = try SafetensorsReader(path: full)
        let kept = reader.entries.keys.sorted().filter { !$0.hasPrefix("layers.1.experts.5.") }
        let tensors = try kept.map { name in (name, reader.entries[name]!.shape, try reader.readFloat32(name, shape: reader.entries[name]!.shape)) }
        try SafetensorsWriter.write(tensors, to: scratch.file("w.safetensors"))
        try expectCleanFailure(ranks: 4, ["run", "--model", "Models/test-gelu.json", "--weights", scratch.file("w.safetensors")],
                               message: "w.safetensors: tensor 'layers.1.experts.5.w1': missing [rank 2]")
    }

    @Test("weights of another model's shape name the tensor")
    func wrongShapeWeights() throws {
        let scratch = try ScratchDirectory()
        try #require(try runMoe(["init-weights", "--model", "Models/test-gelu.json", "--output", scratch.file("w.safetensors")]).status == 0)
        try expectCleanFailure(ranks: 2, ["run", "--model", "Models/test-relu.json", "--weights", scratch.file("w.safetensors")],
                               message: "tensor 'layers.0.norm.scale': shape is [32], expected [24] [rank 0]")
    }

    @Test("a truncated weights file")
    func truncatedWeights() throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("w.safetensors")
        try #require(try runMoe(["init-weights", "--model", "Models/test-relu.json", "--output", path]).status == 0)
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.truncate(atOffset: try handle.seekToEnd() - 100)
        try handle.close()
        try expectCleanFailure(ranks: 3, ["run", "--model", "Models/test-relu.json", "--weights", path],
                               message: "is past the data section")
    }
}
}
