import ExpertParallel
import MoE

/// One layer's routing statistics on one rank for one step.
package struct LayerStatistics: Equatable, Sendable {
    /// Tokens of this rank.
    package var tokens: Int
    /// Per expert (`[E]`): routes that chose it, kept and dropped routes, and the slots it offered
    /// this rank (−1 when unlimited).
    package var routed: [Int]
    package var kept: [Int]
    package var dropped: [Int]
    package var capacity: [Int]
    /// Dispatch bytes to / from every world rank (`[G]`); the combine moves the reverse.
    package var bytesSentTo: [Int]
    package var bytesReceivedFrom: [Int]

    package init(tokens: Int, routed: [Int], kept: [Int], dropped: [Int], capacity: [Int], bytesSentTo: [Int], bytesReceivedFrom: [Int]) {
        self.tokens = tokens
        self.routed = routed
        self.kept = kept
        self.dropped = dropped
        self.capacity = capacity
        self.bytesSentTo = bytesSentTo
        self.bytesReceivedFrom = bytesReceivedFrom
    }
}

/// What one rank reports to the coordinator after a step.
package struct RankStatistics: Equatable, Sendable {
    package var layers: [LayerStatistics]
    /// Seconds per phase on this rank (`PhaseTimes.names` order, summed over layers).
    package var phaseSeconds: [Double]

    package init(layers: [LayerStatistics], phaseSeconds: [Double]) {
        self.layers = layers
        self.phaseSeconds = phaseSeconds
    }

    /// From a step's result on a rank of a job of `worldSize` ranks.
    package init(step result: DistributedModel.StepResult, tokens: Int, worldSize: Int) {
        layers = zip(result.plans, result.volumes).map { plan, volume in
            LayerStatistics(tokens: tokens, routed: plan.routedPerExpert, kept: plan.keptPerExpert, dropped: plan.droppedPerExpert,
                            capacity: plan.capacities ?? [Int](repeating: -1, count: plan.expertCount),
                            bytesSentTo: volume.dispatchBytesSentTo.isEmpty ? [Int](repeating: 0, count: worldSize) : volume.dispatchBytesSentTo,
                            bytesReceivedFrom: volume.dispatchBytesReceivedFrom.isEmpty ? [Int](repeating: 0, count: worldSize) : volume.dispatchBytesReceivedFrom)
        }
        phaseSeconds = result.times.reduce(PhaseTimes(), +).values
    }

    /// The wire form: Doubles (integers below 2^53 are exact). Layout: [layers, then per layer
    /// tokens, E, routed E, kept E, dropped E, capacity E, G, sent G, received G], then the phases.
    package func encoded() -> [Double] {
        var values: [Double] = [Double(layers.count)]
        for layer in layers {
            values.append(Double(layer.tokens))
            values.append(Double(layer.routed.count))
            for array in [layer.routed, layer.kept, layer.dropped, layer.capacity] { values += array.map(Double.init) }
            values.append(Double(layer.bytesSentTo.count))
            values += layer.bytesSentTo.map(Double.init) + layer.bytesReceivedFrom.map(Double.init)
        }
        return values + phaseSeconds
    }

    /// Decodes and checks a rank's report against the model (`experts[l]` per layer) and the
    /// world size: counts whole and non-negative, routed = kept + dropped, kept ≤ capacity,
    /// phase times finite. Throws a message naming what is wrong.
    package static func decode(_ values: [Double], experts: [Int], worldSize: Int) throws(StatisticsError) -> RankStatistics {
        var cursor = 0
        func next(_ what: String) throws(StatisticsError) -> Double {
            guard cursor < values.count else { throw StatisticsError(problem: "report ends early (reading \(what))") }
            defer { cursor += 1 }
            return values[cursor]
        }
        func count(_ what: String) throws(StatisticsError) -> Int {
            let value = try next(what)
            guard value.isFinite, value >= 0, value == value.rounded(), value < 9e15 else {
                throw StatisticsError(problem: "\(what) is \(value), not a count")
            }
            return Int(value)
        }
        func counts(_ n: Int, _ what: String, allowUnlimited: Bool = false) throws(StatisticsError) -> [Int] {
            var result: [Int] = []
            for index in 0..<n {
                if allowUnlimited, cursor < values.count, values[cursor] == -1 { cursor += 1; result.append(-1); continue }
                result.append(try count("\(what)[\(index)]"))
            }
            return result
        }
        let layerCount = try count("layer count")
        guard layerCount == experts.count else { throw StatisticsError(problem: "reports \(layerCount) layers, the model has \(experts.count)") }
        var layers: [LayerStatistics] = []
        for (index, expertCount) in experts.enumerated() {
            let tokens = try count("layer \(index) tokens")
            let reportedExperts = try count("layer \(index) expert count")
            guard reportedExperts == expertCount else {
                throw StatisticsError(problem: "layer \(index) reports \(reportedExperts) experts, the model has \(expertCount)")
            }
            let routed = try counts(expertCount, "layer \(index) routed")
            let kept = try counts(expertCount, "layer \(index) kept")
            let dropped = try counts(expertCount, "layer \(index) dropped")
            let capacity = try counts(expertCount, "layer \(index) capacity", allowUnlimited: true)
            for expert in 0..<expertCount {
                guard routed[expert] == kept[expert] + dropped[expert] else {
                    throw StatisticsError(problem: "layer \(index) expert \(expert): routed \(routed[expert]) ≠ kept \(kept[expert]) + dropped \(dropped[expert])")
                }
                guard capacity[expert] < 0 || kept[expert] <= capacity[expert] else {
                    throw StatisticsError(problem: "layer \(index) expert \(expert): kept \(kept[expert]) exceeds its capacity \(capacity[expert])")
                }
            }
            let peers = try count("layer \(index) peer count")
            guard peers == worldSize else { throw StatisticsError(problem: "layer \(index) reports \(peers) peers in a job of \(worldSize)") }
            let sent = try counts(peers, "layer \(index) bytes sent")
            let received = try counts(peers, "layer \(index) bytes received")
            layers.append(LayerStatistics(tokens: tokens, routed: routed, kept: kept, dropped: dropped, capacity: capacity,
                                          bytesSentTo: sent, bytesReceivedFrom: received))
        }
        let phases = Array(values[min(cursor, values.count)...])
        guard phases.count == PhaseTimes.names.count, phases.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw StatisticsError(problem: "phase times \(phases) are not \(PhaseTimes.names.count) finite non-negative seconds")
        }
        return RankStatistics(layers: layers, phaseSeconds: phases)
    }
}

/// A malformed statistics report.
package struct StatisticsError: Error, Equatable, CustomStringConvertible {
    package let problem: String
    package var description: String { problem }
}
