import Foundation
import ExpertParallel
import FileFormats
import MoE

/// `moe run`'s console output, rank 0: a line per step (unless `quiet`), the placement changes
/// and migrations, and per algorithm the coordinator's closing lines, the plan cache's and the
/// placement's totals and a summary; at the end the memory line.
@MainActor
package final class ConsoleReporter: StepObserver {
    let quiet: Bool
    let isRankZero: Bool
    /// Lines for a placement change (the caller's wording, shared with `moe placement`).
    let changeLines: ([PlacementChange], Int) -> [String]
    private var totals = RunTotals()
    package private(set) var memoryAfterFirstStep = 0.0

    package init(quiet: Bool, isRankZero: Bool, changeLines: @escaping ([PlacementChange], Int) -> [String]) {
        self.quiet = quiet
        self.isRankZero = isRankZero
        self.changeLines = changeLines
    }

    /// One algorithm's sums over its steps.
    struct RunTotals {
        var phases = PhaseTimes()
        var tokens = 0
        var seconds = 0.0
        var kept = 0
        var dropped = 0
        var migrations = MigrationOutcome()
        var migrationCount = 0
    }

    package func sessionDidStart(_ session: InferenceSession) throws {
        totals = RunTotals()
        let first = session.algorithm == session.configuration.algorithms[0]
        // The FFN weights each rank holds in its backends' forms (what low precision saves).
        let held = first ? try session.world.allReduce(Double(session.distributed.layers.reduce(0) { $0 + $1.expertBytesHeld }), .maximum) : 0
        guard isRankZero else { return }
        if first {
            let precisions = Set(session.kernels.map(\.precision.rawValue)).sorted().joined(separator: ", ")
            print(String(format: "FFN weights held: %.2f MiB on the largest rank (%@)", held / 1_048_576, precisions))
        }
        if case let .fixed(degree) = session.configuration.overlap, degree > 1, first {
            print("overlap degree \(degree): each layer step runs as \(degree) chunks, exchanges overlapping the experts")
        }
        for choice in session.distributed.overlapChoices { print("\(session.algorithm): " + choice.reason) }
    }

    package func stepDidFinish(_ outcome: StepOutcome, batch: TokenBatch, session: InferenceSession) throws {
        let name = session.algorithm.rawValue
        totals.phases = totals.phases + outcome.slowestPhases
        totals.tokens += outcome.tokens
        totals.seconds += outcome.wallSeconds
        totals.kept += outcome.keptRoutes
        totals.dropped += outcome.droppedRoutes
        if let migration = outcome.migration {
            totals.migrations.experts += migration.experts
            totals.migrations.bytes += migration.bytes
            totals.migrations.seconds += migration.seconds
            totals.migrationCount += 1
        }
        if outcome.step == 0, session.algorithm == session.configuration.algorithms[0] { memoryAfterFirstStep = Self.residentMebibytes() }
        guard isRankZero else { return }
        if !quiet {
            let routes = outcome.keptRoutes + outcome.droppedRoutes
            print("[\(name)] step \(outcome.step + 1)/\(session.configuration.steps): \(Self.milliseconds(outcome.wallSeconds)) ms  (\(phaseList(outcome.slowestPhases, session: session) { Self.milliseconds($0) }) ms)  \(Self.rate(Double(outcome.tokens) / outcome.wallSeconds)) tokens/s  dropped \(Self.percent(outcome.droppedRoutes, of: routes))")
        }
        if let migration = outcome.migration {
            for line in changeLines(outcome.placementChanges, outcome.step) { print("[\(name)] " + line) }
            print("[\(name)] migration after step \(outcome.step + 1): \(migration.experts) expert\(migration.experts == 1 ? "" : "s") copied, "
                  + String(format: "%.2f MiB in %.1f ms", Double(migration.bytes) / 1_048_576, migration.seconds * 1000)
                  + "; every rank switched to the new placement at step \(outcome.step + 2)")
        }
    }

    package func sessionDidFinish(_ session: InferenceSession, completedSteps: Int) throws {
        let name = session.algorithm.rawValue
        let cache = session.configuration.planCache != nil ? try session.planCacheSummary() : nil
        guard isRankZero else { return }
        for line in session.closingLines { print("[\(name)] " + line) }
        if session.configuration.placement.kind != .static {
            print("[\(name)] placement: \(totals.migrationCount) migration\(totals.migrationCount == 1 ? "" : "s"), \(totals.migrations.experts) expert\(totals.migrations.experts == 1 ? "" : "s") copied, "
                  + String(format: "%.2f MiB, %.1f ms in all", Double(totals.migrations.bytes) / 1_048_576, totals.migrations.seconds * 1000))
        }
        if let cache {
            print("[\(name)] plan cache: \(Int(cache.hitsPerRank)) hits, \(Int(cache.missesPerRank)) misses of \(session.model.layers.count * completedSteps) layer-steps; "
                  + "count exchange avoided \(Int(cache.hitsPerRank)) times, ≈ \(Self.milliseconds(cache.hitsPerRank * cache.meanCountExchangeSeconds)) ms saved "
                  + "(mean count exchange \(String(format: "%.1f", cache.meanCountExchangeSeconds * 1e6)) µs); padding sent \(String(format: "%.2f", cache.paddingBytes / 1_048_576)) MiB")
        }
        for (layer, error) in session.expertErrorAgainstFP32.enumerated() {
            guard let error else { continue }
            print("[\(name)] layer \(layer): expert outputs against fp32 copies: " + String(format: "max %.3e, mean %.3e (relative)", error.maxRelative, error.meanRelative)
                  + " over \(error.rows) rows (\(session.kernels[layer].precision.rawValue))")
        }
        let routes = totals.kept + totals.dropped
        print("[\(name)] summary: \(completedSteps) step\(completedSteps == 1 ? "" : "s"), \(Self.rate(Double(totals.tokens) / totals.seconds)) tokens/s, mean step \(Self.milliseconds(totals.seconds / Double(completedSteps))) ms; time share: "
              + phaseList(totals.phases, session: session) { Self.percent($0, of: self.totals.phases.total) }.replacingOccurrences(of: "  ", with: ", ")
              + "; dropped \(Self.percent(totals.dropped, of: routes)) of \(routes) routes")
    }

    /// "name value" per phase; the dense phase only for models with local FFNs.
    private func phaseList(_ phases: PhaseTimes, session: InferenceSession, format: (Double) -> String) -> String {
        let hasLocalFFNs = session.model.layers.contains { $0.residual || $0.dense || $0.sharedDFF > 0 }
        return zip(Phase.allCases, phases.values).filter { $0.0 != .dense || hasLocalFFNs }.map { "\($0.rawValue) \(format($1))" }.joined(separator: "  ")
    }

    /// This process's resident set size in MiB (`/proc/self/statm`), 0 where unavailable.
    package static func residentMebibytes() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = text.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) else { return 0 }
        return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
    }

    /// This process's peak resident set size in MiB (`VmHWM` in `/proc/self/status`), 0 where
    /// unavailable.
    package static func peakResidentMebibytes() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kibibytes = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) else { return 0 }
        return kibibytes / 1024
    }

    package static func milliseconds(_ seconds: Double) -> String { String(format: "%.2f", seconds * 1000) }
    package static func rate(_ value: Double) -> String { value >= 1e6 ? String(format: "%.2fM", value / 1e6) : String(format: "%.0f", value) }
    package static func percent(_ part: Int, of whole: Int) -> String { whole == 0 ? "0%" : String(format: "%.1f%%", 100 * Double(part) / Double(whole)) }
    package static func percent(_ part: Double, of whole: Double) -> String { whole == 0 ? "0%" : String(format: "%.1f%%", 100 * part / whole) }
}

/// `moe run --report`: every step of every algorithm as JSON (rank 0 keeps it).
@MainActor
package final class JSONRunReport: StepObserver {
    private var steps: [JSONValue] = []
    private var tokens = 0
    private var seconds = 0.0
    package private(set) var runs: [JSONValue] = []

    package init() {}

    package func sessionDidStart(_ session: InferenceSession) throws {
        steps = []
        tokens = 0
        seconds = 0
    }

    package func stepDidFinish(_ outcome: StepOutcome, batch: TokenBatch, session: InferenceSession) throws {
        tokens += outcome.tokens
        seconds += outcome.wallSeconds
        func numbers(_ values: [Int]) -> JSONValue { .array(values.map { .number(Double($0)) }) }
        steps.append(.object([
            ("step", .number(Double(outcome.step))), ("seconds", .number(outcome.wallSeconds)), ("tokens", .number(Double(outcome.tokens))),
            ("tokens_per_second", .number(Double(outcome.tokens) / outcome.wallSeconds)),
            ("phase_seconds_slowest_rank", .object(zip(PhaseTimes.names, outcome.slowestPhases.values).map { ($0, .number($1)) })),
            ("kept_routes_by_layer", numbers(outcome.keptByLayer)),
            ("dropped_routes_by_layer", numbers(outcome.droppedByLayer)),
            ("dispatch_bytes_by_layer", numbers(outcome.dispatchBytesByLayer)),
            ("migration", outcome.migration.map { .object([("experts", .number(Double($0.experts))), ("bytes", .number(Double($0.bytes))),
                                                           ("seconds", .number($0.seconds))]) } ?? .null),
        ]))
    }

    package func sessionDidFinish(_ session: InferenceSession, completedSteps: Int) throws {
        runs.append(.object([("exchange", .string(session.algorithm.rawValue)),
                             ("overlap_degree_by_layer", .array(session.distributed.layers.map { .number(Double($0.overlapDegree)) })),
                             ("expert_precision_by_layer", .array(session.model.precisions(override: session.configuration.expertPrecision).map { .string($0.rawValue) })),
                             ("cpu_isa", .string(session.isa.rawValue)),
                             ("expert_error_against_fp32_by_layer", .array(session.expertErrorAgainstFP32.map { error in
                                 error.map { .object([("max_relative", .number($0.maxRelative)), ("mean_relative", .number($0.meanRelative)),
                                                      ("rows", .number(Double($0.rows)))]) } ?? .null })),
                             ("steps", .array(steps)),
                             ("tokens_per_second", .number(Double(tokens) / seconds))]))
    }
}
