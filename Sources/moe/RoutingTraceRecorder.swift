import FileFormats
import MessagePassing
import MoE
import Session

/// `moe run --routing-trace-output`: every step's chosen experts (before drops) and their
/// weights before normalisation, gathered on rank 0 in global token order, written as a trace
/// that `--routing-trace` replays (`RoutingTrace`; dense layers and unused k slots hold −1).
@MainActor
final class RoutingTraceRecorder: StepObserver {
    let layers: Int
    let topK: Int
    /// Per step: `[layers][tokens][k]` flattened, rank 0 only.
    private var steps: [(experts: [Int32], weights: [Float], tokens: Int)] = []

    init(layers: Int, topK: Int) {
        self.layers = layers
        self.topK = topK
    }

    /// Records the first algorithm's steps (the others route alike).
    func stepDidFinish(_ outcome: StepOutcome, batch: TokenBatch, session: InferenceSession) throws {
        guard session.algorithm == session.configuration.algorithms[0] else { return }
        try record(outcome.result.plans, world: session.world)
    }

    /// Gathers one step's plans (`plans[layer]`) from every rank. Collective over `world`.
    func record(_ plans: [RoutingPlan], world: Communicator) throws {
        var experts: [Int32] = [], weights: [Float] = []
        var tokens = 0
        for plan in plans {
            var localExperts = [Int32](repeating: -1, count: plan.tokenCount * topK)
            var localWeights = [Float](repeating: 0, count: plan.tokenCount * topK)
            for token in 0..<plan.tokenCount {
                for r in 0..<plan.topK {
                    localExperts[token * topK + r] = Int32(plan.choice[r * plan.tokenCount + token])
                    localWeights[token * topK + r] = plan.probability[r * plan.tokenCount + token]
                }
            }
            let gatheredExperts = try world.gatherBytes(localExperts.withUnsafeBytes { Array($0) }, root: 0)
            let gatheredWeights = try world.gatherBytes(localWeights.withUnsafeBytes { Array($0) }, root: 0)
            guard let gatheredExperts, let gatheredWeights else { continue }
            let expertBytes = gatheredExperts.flatMap { $0 }, weightBytes = gatheredWeights.flatMap { $0 }
            experts += expertBytes.withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
            weights += weightBytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            tokens = expertBytes.count / 4 / topK
        }
        if world.rank == 0 { steps.append((experts, weights, tokens)) }
    }

    /// Writes the trace (rank 0): ids to `experts`, and the weights to `weights` when given.
    func write(experts path: String, weights weightsPath: String?) throws {
        let tokens = steps.first?.tokens ?? 0
        let shape = [steps.count, layers, tokens, topK]
        let ids = steps.flatMap(\.experts)
        try NpyArray(shape: shape, elementType: .int32, data: ids.withUnsafeBytes { Array($0) }).write(to: path)
        if let weightsPath {
            try NpyArray(float32: steps.flatMap(\.weights), shape: shape).write(to: weightsPath)
        }
    }
}
