import ExpertParallel
import FileFormats
import Foundation
import MessagePassing
import MoE

/// A failure every rank learned from the coordinator; `reportingRank` prints it.
package struct CoordinatorError: AgreedFailure {
    package let message: String
    package let reportingRank: Int
    package var description: String { message }
    package var agreedReportingRank: Int? { reportingRank }
}

/// Capacity plans on the wire: Doubles, bit-exact, so every rank applies exactly the plan the
/// coordinator computed. Layout: [layers, then per layer kind (0 configured, 1 factor,
/// 2 shares), value count, values].
package enum CapacityPlanCodec {
    package static func encode(_ plan: CapacityPlan) -> [Double] {
        var values = [Double(plan.layers.count)]
        for layer in plan.layers {
            switch layer {
            case .configured: values += [0, 0]
            case let .factor(factor): values += [1, 1, factor]
            case let .shares(shares): values += [2, Double(shares.count)] + shares
            }
        }
        return values
    }

    package static func decode(_ values: [Double]) -> CapacityPlan? {
        guard let count = values.first, count >= 0, count == count.rounded() else { return nil }
        var cursor = 1
        var layers: [LayerCapacity] = []
        for _ in 0..<Int(count) {
            guard cursor + 1 < values.count else { return nil }
            let kind = values[cursor], n = Int(values[cursor + 1])
            cursor += 2
            guard n >= 0, cursor + n <= values.count else { return nil }
            let payload = Array(values[cursor..<cursor + n])
            cursor += n
            switch (kind, n) {
            case (0, 0): layers.append(.configured)
            case (1, 1): layers.append(.factor(payload[0]))
            case (2, _): layers.append(.shares(payload))
            default: return nil
            }
        }
        return cursor == values.count ? CapacityPlan(layers: layers) : nil
    }
}

/// The coordinator (DynaMoE-style): after every step it gathers each rank's routing statistics
/// (`MPI_Gatherv` to the coordinator rank), checks them, keeps running aggregates, writes one
/// JSON line per step to the stats log, prints a live table every few steps, asks the capacity
/// policy for the next step's plan and the placement policy for placement changes, and
/// broadcasts both (`MPI_Bcast`), so every rank routes the next step under the same plan and
/// migrates the same experts. All collective: every rank calls `finishStep` once per step.
@MainActor
package final class Coordinator {
    package let root: Int
    package let policy: CapacityPolicy
    private let world: Communicator
    private let experts: [Int]
    /// Bytes of one dispatched row (d_model floats).
    private let rowBytes: Int
    /// Bytes of one expert's parameters, per layer (what a migration moves per expert).
    private let parameterBytes: [Int]
    /// Per layer, what the statistics do not count (a dense layer, a shared expert); "" otherwise.
    private let layerNotes: [String]
    /// The capacity and placement decisions between steps (every rank keeps one; only the
    /// coordinator's decides, the others apply what it broadcasts).
    private var decider: StepDecider
    /// Every layer's placement per group. The coordinator rank plans with it; the others apply
    /// the changes it broadcasts, so all hold the same placements.
    package var placementPlanner: PlacementPlanner { decider.placement }
    /// The placement changes decided at the end of the last step (to migrate before the next).
    package private(set) var placementChanges: [PlacementChange] = []
    package private(set) var accumulator = StatisticsAccumulator()
    private let statsPath: String?
    /// The stats log's descriptor (coordinator rank, when logging), and the bytes of complete
    /// lines in it: a failed write is cut back to that length, so the log never ends torn.
    private var log: Int32?
    private var logBytes = 0
    private let liveEvery: Int
    private let corruptStatistics: Bool
    /// The plan for the next step (configured before the first).
    package private(set) var plan: CapacityPlan
    /// The last step's report (coordinator rank only).
    package private(set) var lastReport: StepReport?

    /// `statsPath`: the stats log (JSON lines), written as `statsPath.partial` and renamed when
    /// the run ends. `liveEvery`: print the live table every that many steps (0: never).
    /// `corruptStatistics`: testing aid — this rank sends a malformed report.
    /// `exchangeRowBytes`: bytes of one row as it travels (`--exchange-precision`; default fp32),
    /// which turns the bytes received into the log's rows. `expertWireBytes[l]`: bytes a
    /// migration ships per expert of layer l in its backend's form (default fp32's).
    package init(
        world: Communicator, root: Int, model: ModelConfiguration, policy: CapacityPolicy, placement: PlacementPolicy = .contiguous,
        nodeOfRank: [Int]? = nil, statsPath: String?, liveEvery: Int, corruptStatistics: Bool = false,
        exchangeRowBytes: Int? = nil, expertWireBytes: [Int]? = nil
    ) throws {
        precondition((0..<world.size).contains(root))
        self.world = world
        self.root = root
        self.policy = policy
        experts = model.layers.map(\.experts)
        rowBytes = exchangeRowBytes ?? model.dModel * MemoryLayout<Float>.stride
        layerNotes = model.layers.map { layer in
            if layer.dense { return " — dense layer, nothing routed" }
            if layer.sharedDFF > 0 { return " — plus a shared expert on every token (not in the routes)" }
            return ""
        }
        decider = StepDecider(capacity: CapacityPlanner(policy: policy, layers: model.layers),
                              placement: PlacementPlanner(policy: placement, layers: model.layers, worldSize: world.size, nodeOfRank: nodeOfRank))
        parameterBytes = expertWireBytes
            ?? model.layers.indices.map { model.form(.expert, layer: $0).parameterCount(dModel: model.dModel) * MemoryLayout<Float>.stride }
        plan = .configured(layers: model.layers.count)
        self.statsPath = statsPath
        self.liveEvery = liveEvery
        self.corruptStatistics = corruptStatistics
        var problem = ""
        if world.rank == root, let statsPath {
            let partial = statsPath + ".partial"
            let descriptor = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o666)
            if descriptor >= 0 {
                log = descriptor
            } else {
                problem = "cannot write the stats log \(partial): \(String(cString: strerror(errno)))"
            }
        }
        if case let .failure(failure) = try world.broadcastOutcome(problem.isEmpty ? .success("") : .failure(RootFailure(message: problem)), root: root) {
            throw CoordinatorError(message: failure.message, reportingRank: root)
        }
    }

    /// Gathers this step's statistics, and returns (and keeps) the plan for the next step.
    /// `lastStep`: no step follows, so no placement change is planned (nothing would use it).
    package func finishStep(_ step: Int, result: DistributedModel.StepResult, tokens: Int, lastStep: Bool = false) throws -> CapacityPlan {
        var local = RankStatistics(step: result, tokens: tokens, worldSize: world.size)
        if corruptStatistics, !local.layers.isEmpty, !local.layers[0].kept.isEmpty { local.layers[0].kept[0] += 1 }
        let bytes = local.encoded().withUnsafeBytes { Array($0) }
        let placementsBefore = placementPlanner.slots  // the coordinator's planner moves on in `coordinate`
        let gathered = try world.gatherBytes(bytes, root: root)
        var payload: [UInt8] = []
        if let gathered {
            payload = coordinate(step: step, reports: gathered, lastStep: lastStep)
        }
        let answer = try world.broadcastBytes(payload, root: root)
        guard answer.first == 0 else {
            throw CoordinatorError(message: String(decoding: answer.dropFirst(), as: UTF8.self), reportingRank: root)
        }
        let values = Self.doubles(answer.dropFirst())
        let planLength = values.first.map { Int(exactly: $0) ?? -1 } ?? -1
        guard planLength >= 0, planLength < values.count, let next = CapacityPlanCodec.decode(Array(values[1...planLength])),
              let changes = PlacementChangeCodec.decode(values[(planLength + 1)...], current: placementsBefore) else {
            throw CoordinatorError(message: "the coordinator's capacity plan could not be decoded", reportingRank: root)
        }
        if world.rank != root { decider.apply(changes) }
        placementChanges = changes
        plan = next
        return next
    }

    /// On the coordinator: decode and check every report, aggregate, log, plan. Returns the
    /// broadcast payload: [0] + plan, or [1] + an error message.
    private func coordinate(step: Int, reports: [[UInt8]], lastStep: Bool) -> [UInt8] {
        var ranks: [RankStatistics] = []
        for (rank, bytes) in reports.enumerated() {
            guard bytes.count % MemoryLayout<Double>.stride == 0 else {
                return [1] + Array("rank \(rank) sent malformed statistics: \(bytes.count) bytes is not a whole number of values".utf8)
            }
            let values = Self.doubles(bytes[...])
            do { ranks.append(try RankStatistics.decode(values, experts: experts, worldSize: world.size)) } catch {
                return [1] + Array("rank \(rank) sent malformed statistics at step \(step + 1): \(error.problem)".utf8)
            }
        }
        let report = StepReport(step: step, ranks: ranks)
        lastReport = report
        accumulator.add(report)
        let (next, changes) = decider.decide(step: step, report.layers.map(\.counts), lastStep: lastStep)
        if let log, let statsPath {
            let placementLog = changes.map { change in
                StatsLog.PlacementChange(layer: change.layer, group: change.group, predictedImbalanceBefore: change.before,
                                         predictedImbalanceAfter: change.after, movedExperts: change.movedSlots.count,
                                         migrationBytes: change.movedSlots.count * parameterBytes[change.layer])
            }
            let line = Array((report.jsonLine(policy: policy.name, plan: next, rowBytes: rowBytes, placementChanges: placementLog) + "\n").utf8)
            do { try AtomicFileWriter.writeAll(line, to: log, path: statsPath + ".partial") } catch {
                // Keep only complete lines, then stop every rank with one line.
                _ = ftruncate(log, off_t(logBytes))
                return [1] + Array("cannot write the stats log at step \(step + 1): \(error) (the \(step) complete lines before are kept)".utf8)
            }
            logBytes += line.count
        }
        if liveEvery > 0, (step + 1) % liveEvery == 0 {
            print(accumulator.liveTable(step: step, latest: report))
        }
        let plan = CapacityPlanCodec.encode(next)
        return [0] + ([Double(plan.count)] + plan + PlacementChangeCodec.encode(changes)).withUnsafeBytes { Array($0) }
    }

    /// Doubles from bytes at any alignment.
    static func doubles(_ bytes: ArraySlice<UInt8>) -> [Double] {
        bytes.withUnsafeBytes { raw in
            (0..<raw.count / MemoryLayout<Double>.stride).map { raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<Double>.stride, as: Double.self) }
        }
    }

    /// Ends the run: closes the stats log and renames it into place (coordinator rank). Returns
    /// the summary lines there, empty elsewhere.
    package func finish() throws -> [String] {
        guard world.rank == root else { return [] }
        if let log, let statsPath {
            self.log = nil
            guard fsync(log) == 0 || errno == EINVAL, close(log) == 0 else {
                throw CoordinatorError(message: "cannot write the stats log \(statsPath).partial: \(String(cString: strerror(errno)))", reportingRank: root)
            }
            guard rename(statsPath + ".partial", statsPath) == 0 else {
                throw CoordinatorError(message: "cannot rename the stats log into \(statsPath): \(String(cString: strerror(errno)))", reportingRank: root)
            }
        }
        var lines = accumulator.summary(policy: policy.name, notes: layerNotes)
        if case .dynamoe = policy {
            lines.append("  dynamoe: capacity factor per layer now " + decider.capacity.dynamicFactors.map { String(format: "%.2f", $0) }.joined(separator: ", ")
                         + "; buffer resizes (DynaMoE's recompilations) per layer " + decider.capacity.resizes.map(String.init).joined(separator: ", ")
                         + ", \(decider.capacity.resizes.reduce(0, +)) in all")
        }
        return lines
    }
}
