import ClusterTopology
import Exchange
import MessagePassing
import MoE

/// The pipelined layer's cost as a function of its degree N, and the choice of N
/// (`--overlap-degree auto`).
///
/// Per chunk, the dispatch and the combine each move 1/N of the step's rows. The cost model
/// (`CostModel`, α per message included: the chunk's fixed communication cost) splits their
/// time into the inter-node part — the network is busy, the CPU is free to compute — and the
/// rest: shared-memory copies and posting (plus `postSeconds` of software per posted exchange),
/// which run on the same cores as the GEMMs and cannot overlap them. The experts take a fixed
/// cost per FFN call (max(S, N) calls per step on a rank with S slots, `ChunkPlan`) plus a cost
/// per row, both measured. With l the link time and u the CPU time of one chunk (u = experts +
/// the exchanges' CPU part), the pipeline takes
///
///     T(N) = u + l + (N − 1) · max(l, u)
///
/// (the first chunk's dispatch and the last chunk's combine cannot overlap anything; in between
/// the slower of link and CPU sets the pace). N = 1 is the sequential layer; without inter-node
/// links l = 0 and T(N) = N·u, which more chunks only make larger. The candidate with the
/// smallest T wins if it beats N = 1 by 2%.
package struct OverlapCostModel {
    /// Seconds one chunk's dispatch and combine keep the inter-node links busy, at degree N.
    package var linkSeconds: (Int) -> Double
    /// Seconds one chunk's dispatch and combine cost the CPU (copies, posting), at degree N.
    package var exchangeCPUSeconds: (Int) -> Double
    /// Seconds one chunk's expert work takes at degree N.
    package var computeSeconds: (Int) -> Double

    /// The predicted layer time (exchanges and experts) at degree `degree`.
    package func predictedSeconds(degree: Int) -> Double {
        let link = linkSeconds(degree), cpu = computeSeconds(degree) + exchangeCPUSeconds(degree)
        return cpu + link + Double(degree - 1) * max(link, cpu)
    }

    /// The best of `candidates` and its predicted time.
    package func best(of candidates: [Int]) -> (degree: Int, seconds: Double) {
        var best = (degree: 1, seconds: predictedSeconds(degree: 1))
        let sequential = best.seconds
        for degree in candidates where degree > 1 {
            let seconds = predictedSeconds(degree: degree)
            if seconds < best.seconds, seconds < sequential * 0.98 { best = (degree, seconds) }
        }
        return best
    }
}

/// Chooses every layer's overlap degree for `auto`, from the cost model and this job's GEMM rate.
@MainActor
package enum OverlapPlanner {
    /// Software cost of posting, testing and completing one nonblocking exchange, seconds
    /// (measured here: 10–30 µs per chunk exchange between 2–8 ranks on one host).
    package static let postSeconds = 20e-6
    /// The degrees `auto` considers.
    package static let candidates = [1, 2, 4, 8, 16]

    /// One layer's choice, with what it was based on (printed by `moe run`).
    package struct Choice: Sendable {
        package var layer: Int
        package var degree: Int
        package var linkSecondsPerChunk: Double
        package var exchangeCPUSecondsPerChunk: Double
        package var computeSecondsPerChunk: Double
        package var predictedSeconds: Double
        package var sequentialSeconds: Double

        package var reason: String {
            func ms(_ seconds: Double) -> String { String(format: "%.2f ms", seconds * 1e3) }
            let cpu = computeSecondsPerChunk + exchangeCPUSecondsPerChunk
            let pace = degree == 1
                ? (linkSecondsPerChunk == 0 ? "no inter-node links to overlap (shared-memory exchanges use the same cores)" : "no degree beats the sequential layer by 2%")
                : (linkSecondsPerChunk > cpu ? "the link sets the pace" : "the CPU sets the pace")
            return "layer \(layer): overlap degree \(degree) (auto): per chunk dispatch + combine \(ms(linkSecondsPerChunk)) on the links and \(ms(exchangeCPUSecondsPerChunk)) of CPU, experts \(ms(computeSecondsPerChunk)); predicted \(ms(predictedSeconds)) against \(ms(sequentialSeconds)) sequential; \(pace)"
        }
    }

    /// Measures this rank's FFN rate on `layer`'s expert shape and returns the choice for every
    /// MoE layer. Collective over `world` (one allreduce: the slowest rank's GEMMs count, and
    /// every rank chooses the same degrees). `tokensPerRank` is the step's tokens on each rank.
    /// What the planner needs of one layer: its shape, an FFN of its expert form (nil: a dense
    /// layer, or no slot here), its most slots on one group rank, its group size and the cost
    /// model's schedule of its exchange.
    package struct LayerInput {
        package var index: Int
        package var configuration: LayerConfiguration
        package var sampleExpert: (any PreparedFFN)?
        package var maxSlotsPerRank: Int
        package var groupSize: Int
        package var schedule: ModeledSchedule
        /// Bytes of one row as it travels (`RowCodec.rowBytes`).
        package var rowBytes: Int
    }

    package static func choose(
        model: ModelConfiguration, layers: [LayerInput], world: Communicator, topology: Topology, tokensPerRank: Int
    ) throws(MPIError) -> [Choice] {
        // GEMM rate: one expert of each distinct shape, timed at two row counts (fixed + per-row cost).
        let perRowAndFixed = layers.map { layer in
            guard !layer.configuration.dense, let ffn = layer.sampleExpert else { return (perRow: 0.0, fixed: 0.0) }
            return timeFFN(ffn, dModel: model.dModel)
        }
        let slowest = try world.allReduce(perRowAndFixed.flatMap { [$0.perRow, $0.fixed] }, .maximum)
        let costModel = CostModel(topology: topology)
        var choices: [Choice] = []
        for layer in layers where !layer.configuration.dense {
            let perRow = slowest[2 * layer.index], fixed = slowest[2 * layer.index + 1]
            let slotsHere = max(1, layer.maxSlotsPerRank)  // the same on every rank
            let rowsPerRank = Double(tokensPerRank * layer.configuration.topK)
            let groupSize = layer.groupSize
            let rowBytes = layer.rowBytes
            let schedule = layer.schedule
            let worldSize = topology.worldSize
            func exchange(_ degree: Int) -> (link: Double, cpu: Double) {
                // Every rank sends each group peer ≈ rows/G of its rows, 1/N per chunk; the
                // world-wide uniform traffic stands for the group's (exact when G = world).
                let bytesPerPeer = Int(rowsPerRank / Double(groupSize) / Double(degree)) * rowBytes
                let prediction = costModel.predict(schedule, traffic: .uniform(ranks: worldSize, bytesPerPeer: bytesPerPeer))
                let link = prediction.stages.filter { $0.resource == .interNode }.reduce(0) { $0 + $1.seconds }
                return (2 * min(link, prediction.seconds), 2 * (max(0, prediction.seconds - link) + postSeconds))
            }
            let cost = OverlapCostModel(
                linkSeconds: { exchange($0).link },
                exchangeCPUSeconds: { exchange($0).cpu },
                computeSeconds: { degree in
                    // `ChunkPlan`: max(S, N) FFN calls per step, the rows spread evenly over N chunks.
                    (Double(max(slotsHere, degree)) * fixed + perRow * rowsPerRank) / Double(degree)
                })
            let usable = candidates.filter { $0 <= max(1, tokensPerRank) && $0 <= OverlapDegree.limit }
            let best = cost.best(of: usable)
            choices.append(Choice(layer: layer.index, degree: best.degree, linkSecondsPerChunk: cost.linkSeconds(best.degree),
                                  exchangeCPUSecondsPerChunk: cost.exchangeCPUSeconds(best.degree),
                                  computeSecondsPerChunk: cost.computeSeconds(best.degree), predictedSeconds: best.seconds,
                                  sequentialSeconds: cost.predictedSeconds(degree: 1)))
        }
        return choices
    }

    /// Seconds per row and fixed seconds per call of one FFN of `form` (the fastest of 5, at 32
    /// and 256 rows of synthetic input: the minimum, since ranks sharing cores are preempted).
    static func timeFFN(_ ffn: any PreparedFFN, dModel: Int) -> (perRow: Double, fixed: Double) {
        let workspace = ExpertWorkspace()
        func seconds(rows: Int) -> Double {
            let input = (0..<(rows * dModel)).map { Float(($0 * 7919) % 997) / 997 - 0.5 }
            var output = [Float](repeating: 0, count: rows * dModel)
            var samples: [Double] = []
            for _ in 0..<5 {
                let start = MPIRuntime.wallTime()
                input.withUnsafeBufferPointer { x in
                    output.withUnsafeMutableBufferPointer { y in
                        ffn.forward(input: x.baseAddress!, rows: rows, output: y.baseAddress!, workspace: workspace)
                    }
                }
                samples.append(MPIRuntime.wallTime() - start)
            }
            return samples.min()!
        }
        let small = seconds(rows: 32), large = seconds(rows: 256)
        let perRow = max(0, (large - small) / 224)
        return (perRow, max(0, small - 32 * perRow))
    }
}
