import FileFormats
import Foundation
import Testing

extension MultiRankTests {
@Suite("Routing traces: record, replay, refuse", .serialized)
struct RoutingTraceTests {
    let model = "Models/test-gelu.json"  // top_k 2, 1, 4, 2: the trace's k is 4

    @Test("a recorded trace replays bitwise on the same job, and on another rank count equals the reference with every exchange")
    func recordAndReplay() throws {
        let scratch = try ScratchDirectory()
        let trace = scratch.file("trace.npy"), weights = scratch.file("weights.npy")
        let common = ["run", "--model", model, "--steps", "3", "--drift", "2", "--drift-period", "3", "--quiet"]
        let recorded = try runMPI(ranks: 2, common + ["--tokens-per-rank", "16", "--output", scratch.file("original.npy"),
                                                     "--routing-trace-output", trace, "--routing-trace-weights-output", weights])
        try #require(recorded.mpirunStatus == 0, "\(recorded)")
        #expect(try NpyArray.load(path: trace).shape == [3, 4, 32, 4])
        // Replayed without the drift: the choices come from the trace, not the gate.
        let replayed = try runMPI(ranks: 2, ["run", "--model", model, "--steps", "3", "--quiet", "--tokens-per-rank", "16",
                                             "--output", scratch.file("replayed.npy"), "--routing-trace", trace, "--routing-trace-weights", weights])
        try #require(replayed.mpirunStatus == 0, "\(replayed)")
        let original = try Data(contentsOf: URL(fileURLWithPath: scratch.file("original.npy")))
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("replayed.npy"))) == original, "replay changed the output")
        // Another partition of the same 32 tokens: distributed equals the reference replaying the same trace.
        try ModelTests().compareWithReference(ranks: 4, model: model, topology: "Topologies/2x2.json",
                                              extra: ["--tokens-per-rank", "8", "--routing-trace", trace], steps: 3)
    }

    /// Writes an int32 trace of `shape` filled by `value(step, layer, token, r)`.
    func writeTrace(_ path: String, shape: [Int], _ value: (Int, Int, Int, Int) -> Int32) throws {
        var ids: [Int32] = []
        for step in 0..<shape[0] { for layer in 0..<shape[1] { for token in 0..<shape[2] { for r in 0..<shape[3] {
            ids.append(value(step, layer, token, r))
        } } } }
        try NpyArray(shape: shape, elementType: .int32, data: ids.withUnsafeBytes { Array($0) }).write(to: path)
    }

    @Test("a trace that does not fit the model or the run: one line naming the file and what is wrong, every rank exits 1", arguments: [
        ([2, 4, 32, 4], "the trace holds 2 steps, the run asks for 3"),
        ([3, 4, 30, 4], "tokens dimension 30, but the job has 32 tokens per step"),
        ([3, 3, 32, 4], "layers dimension 3, but the model 'test-gelu' has 4 layers"),
        ([3, 4, 32, 2], "k dimension 2, but the model's largest top_k is 4"),
    ] as [([Int], String)])
    func misfit(shape: [Int], message: String) throws {
        let scratch = try ScratchDirectory()
        let trace = scratch.file("trace.npy")
        try writeTrace(trace, shape: shape) { _, _, token, r in Int32((token + r) % 8) }
        let job = try runMPI(ranks: 2, ["run", "--model", model, "--steps", "3", "--tokens-per-rank", "16", "--routing-trace", trace])
        #expect(job.mpirunStatus != 0)
        #expect(job.ranks.allSatisfy { $0.exitStatus == 1 }, "\(job)")
        let errors = job.ranks.map(\.stderr).joined()
        #expect(errors.contains("\(trace): shape \(shape): \(message)"), "\(job)")
        #expect(errors.split(separator: "\n").count == 1, "one line: \(errors)")
    }

    @Test("expert ids outside the layer, repeated experts and mismatched weights are refused, naming step, layer and token")
    func badValues() throws {
        let scratch = try ScratchDirectory()
        let trace = scratch.file("trace.npy")
        // Layer 2 has 10 experts, the others 8: expert 9 in layer 0 is out of range.
        try writeTrace(trace, shape: [3, 4, 32, 4]) { step, layer, token, r in
            step == 1 && layer == 0 && token == 5 && r == 1 ? 9 : Int32((token + 2 * r) % 8)
        }
        let reference = try runMoe(["reference", "--model", model, "--steps", "3", "--tokens-per-rank", "16", "--ranks", "2", "--routing-trace", trace])
        #expect(reference.status == 1 && reference.stderr.contains("step 1 layer 0 token 5: expert 9 is outside the layer's 0...7"), "\(reference.stderr)")
        try writeTrace(trace, shape: [3, 4, 32, 4]) { step, layer, token, r in layer == 2 && token == 3 && r == 3 ? Int32(3) : Int32((token + 2 * r) % 8) }
        let repeated = try runMoe(["reference", "--model", model, "--steps", "3", "--tokens-per-rank", "16", "--ranks", "2", "--routing-trace", trace])
        #expect(repeated.status == 1 && repeated.stderr.contains("step 0 layer 2 token 3: experts [3, 5, 7, 3] repeat one"), "\(repeated.stderr)")
        try writeTrace(trace, shape: [3, 4, 32, 4]) { _, _, token, r in Int32((token + 2 * r) % 8) }
        let weights = scratch.file("weights.npy")
        try NpyArray(float32: [Float](repeating: 0.5, count: 3 * 4 * 32 * 2), shape: [3, 4, 32, 2]).write(to: weights)
        let mismatched = try runMoe(["reference", "--model", model, "--steps", "3", "--tokens-per-rank", "16", "--ranks", "2",
                                     "--routing-trace", trace, "--routing-trace-weights", weights])
        #expect(mismatched.status == 1 && mismatched.stderr.contains("\(weights): expected float32 [3, 4, 32, 4]"), "\(mismatched.stderr)")
        let orphan = try runMoe(["reference", "--model", model, "--routing-trace-weights", weights])
        #expect(orphan.status == 2, "\(orphan.stderr)")
    }
}
}
