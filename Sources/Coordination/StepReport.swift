import ExpertParallel
import FileFormats
import Foundation
import MoE

/// The coordinator's view of one step: every rank's statistics added up per layer.
package struct StepReport: Equatable, Sendable {
    package struct Layer: Equatable, Sendable {
        package var tokens: Int
        package var routed: [Int]
        package var kept: [Int]
        package var dropped: [Int]
        /// Slots per expert summed over source ranks; nil when unlimited.
        package var capacity: [Int]?
        /// Dispatch bytes each world rank sent and received (the combine moves them back).
        package var bytesSentByRank: [Int]
        package var bytesReceivedByRank: [Int]
        /// What the capacity policies need.
        package var counts: LayerRoutingCounts

        package var routes: Int { routed.reduce(0, +) }
        package var dropRate: Double { routes == 0 ? 0 : Double(dropped.reduce(0, +)) / Double(routes) }
        /// max / mean routes per expert (1 = perfectly even).
        package var imbalance: Double {
            let mean = Double(routes) / Double(max(1, routed.count))
            return mean == 0 ? 1 : Double(routed.max() ?? 0) / mean
        }
        package var dispatchBytes: Int { bytesSentByRank.reduce(0, +) }
        /// Total slots (the buffer budget) this step; nil when unlimited.
        package var slots: Int? { capacity?.reduce(0, +) }
    }

    package var step: Int
    package var layers: [Layer]
    /// Slowest rank per phase (`PhaseTimes.names`).
    package var phaseSeconds: [Double]
    /// Each world rank's seconds in the experts phase (summed over layers): where imbalance shows.
    package var expertSecondsByRank: [Double]

    package init(step: Int, ranks: [RankStatistics]) {
        precondition(!ranks.isEmpty)
        self.step = step
        phaseSeconds = ranks.dropFirst().reduce(ranks[0].phaseSeconds) { zip($0, $1.phaseSeconds).map(max) }
        expertSecondsByRank = ranks.map { $0.phaseSeconds[Phase.experts.index] }
        layers = ranks[0].layers.indices.map { index in
            let perRank = ranks.map { $0.layers[index] }
            func sum(_ arrays: [[Int]]) -> [Int] { arrays.dropFirst().reduce(arrays[0]) { zip($0, $1).map(+) } }
            let unlimited = perRank.contains { $0.capacity.contains(-1) }
            return Layer(tokens: perRank.reduce(0) { $0 + $1.tokens }, routed: sum(perRank.map(\.routed)), kept: sum(perRank.map(\.kept)),
                         dropped: sum(perRank.map(\.dropped)), capacity: unlimited ? nil : sum(perRank.map(\.capacity)),
                         bytesSentByRank: perRank.map { $0.bytesSentTo.reduce(0, +) },
                         bytesReceivedByRank: perRank.map { $0.bytesReceivedFrom.reduce(0, +) },
                         counts: LayerRoutingCounts(tokens: perRank.map(\.tokens), routed: perRank.map(\.routed), kept: perRank.map(\.kept)))
        }
    }

    /// One line of the stats log (the writer is `StatsLog.Step.jsonLine`, beside its reader).
    /// `rowBytes`: bytes of one dispatched row (`rows_by_rank` = bytes received / rowBytes).
    /// `placementChanges`: the placement changes decided at this step (applied before the next),
    /// written as `placement_changes` when there are any.
    package func jsonLine(policy: String, plan: CapacityPlan, rowBytes: Int, placementChanges: [StatsLog.PlacementChange] = []) -> String {
        logStep(plan: plan, rowBytes: rowBytes, placementChanges: placementChanges).jsonLine(policy: policy)
    }

    /// This step as the stats log holds it.
    package func logStep(plan: CapacityPlan, rowBytes: Int, placementChanges: [StatsLog.PlacementChange] = []) -> StatsLog.Step {
        var line = StatsLog.Step(step: step, routed: layers.map(\.routed), dropRate: layers.map(\.dropRate), imbalance: layers.map(\.imbalance),
                                 bytes: layers.map(\.dispatchBytes))
        line.tokens = layers.map(\.tokens)
        line.kept = layers.map(\.kept)
        line.droppedPerExpert = layers.map(\.dropped)
        line.capacity = layers.map(\.capacity)
        line.bytesSentByRank = layers.map(\.bytesSentByRank)
        line.bytesReceivedByRank = layers.map(\.bytesReceivedByRank)
        line.rowsByRank = layers.map { $0.bytesReceivedByRank.map { $0 / max(1, rowBytes) } }
        line.nextCapacity = plan.layers.map(Self.describe)
        line.phaseNames = PhaseTimes.names
        line.phaseSeconds = phaseSeconds
        line.expertSecondsByRank = expertSecondsByRank
        line.placementChanges = placementChanges
        return line
    }

    static func describe(_ capacity: LayerCapacity) -> JSONValue {
        switch capacity {
        case .configured: return .string("configured")
        case let .factor(factor): return .object([("capacity_factor", .number(factor))])
        case let .shares(shares): return .object([("shares", .array(shares.map { .number($0) }))])
        }
    }
}

/// Running aggregates over steps: totals, and exponential moving averages (weight 0.2 on the
/// newest step) of each layer's drop rate and imbalance.
package struct StatisticsAccumulator: Sendable {
    package static let smoothing = 0.2
    package private(set) var steps = 0
    package private(set) var routes: [Int] = []
    package private(set) var dropped: [Int] = []
    package private(set) var bytes: [Int] = []
    package private(set) var slots: [Int] = []
    package private(set) var dropRateAverage: [Double] = []
    package private(set) var imbalanceAverage: [Double] = []
    package private(set) var imbalanceSum: [Double] = []

    package init() {}

    package mutating func add(_ report: StepReport) {
        if steps == 0 {
            let count = report.layers.count
            (routes, dropped, bytes, slots) = ([Int](repeating: 0, count: count), [Int](repeating: 0, count: count), [Int](repeating: 0, count: count), [Int](repeating: 0, count: count))
            dropRateAverage = report.layers.map(\.dropRate)
            imbalanceAverage = report.layers.map(\.imbalance)
            imbalanceSum = [Double](repeating: 0, count: count)
        } else {
            for (index, layer) in report.layers.enumerated() {
                dropRateAverage[index] += Self.smoothing * (layer.dropRate - dropRateAverage[index])
                imbalanceAverage[index] += Self.smoothing * (layer.imbalance - imbalanceAverage[index])
            }
        }
        for (index, layer) in report.layers.enumerated() {
            routes[index] += layer.routes
            dropped[index] += layer.dropped.reduce(0, +)
            bytes[index] += layer.dispatchBytes
            slots[index] += layer.slots ?? 0
            imbalanceSum[index] += layer.imbalance
        }
        steps += 1
    }

    /// Drop rate over all steps so far, per layer.
    package var dropRate: [Double] { zip(dropped, routes).map { $1 == 0 ? 0 : Double($0) / Double($1) } }

    /// Compact live table: one line per layer.
    package func liveTable(step: Int, latest: StepReport) -> String {
        var lines = ["step \(step + 1): layer  drop now  drop avg  imbalance now  imbalance avg  dispatch MiB"]
        for (index, layer) in latest.layers.enumerated() {
            lines.append(String(format: "  %12d  %7.2f%%  %7.2f%%  %13.2f  %13.2f  %12.2f", index, 100 * layer.dropRate, 100 * dropRateAverage[index],
                                layer.imbalance, imbalanceAverage[index], Double(layer.dispatchBytes) / 1_048_576))
        }
        return lines.joined(separator: "\n")
    }

    /// Final summary lines; `notes[l]` is appended to layer l's line.
    package func summary(policy: String, notes: [String] = []) -> [String] {
        var lines = ["statistics over \(steps) step\(steps == 1 ? "" : "s"), policy \(policy): layer, routes, dropped, drop rate, mean imbalance, mean slots per step, dispatch MiB"]
        for index in routes.indices {
            lines.append(String(format: "  layer %d: %d routes, %d dropped (%.2f%%), imbalance %.2f, slots %.0f, %.2f MiB",
                                index, routes[index], dropped[index], 100 * dropRate[index], imbalanceSum[index] / Double(max(1, steps)),
                                Double(slots[index]) / Double(max(1, steps)), Double(bytes[index]) / 1_048_576)
                         + (index < notes.count ? notes[index] : ""))
        }
        let allRoutes = routes.reduce(0, +), allDropped = dropped.reduce(0, +)
        lines.append(String(format: "  all layers: %.2f%% of %d routes dropped", allRoutes == 0 ? 0.0 : 100 * Double(allDropped) / Double(allRoutes), allRoutes))
        return lines
    }
}
