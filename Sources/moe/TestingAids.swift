import ArgumentParsing
import ExpertParallel
import Foundation
import Session

/// `moe run`'s testing aids: faults on purpose, so the tests can show that a dead rank, a hung
/// rank or malformed statistics end the job cleanly. Declared once here, applied by `run` at two
/// fixed points of a step; none is on by default.
struct TestingAids {
    /// A rank at a step (steps 1-based, as the progress lines print them).
    struct RankAtStep: Equatable, Sendable {
        let rank: Int
        let step: Int
    }

    static func rankAtStep(_ name: String, _ help: String) -> TypedOption<RankAtStep?> {
        TypedOption(spec: .value(name, "RANK@STEP", help)) { (options) throws(UsageError) in
            guard let text = options.string(name) else { return nil }
            let parts = text.split(separator: "@").compactMap { Int($0) }
            guard parts.count == 2, parts[0] >= 0, parts[1] >= 1 else {
                throw .invalidValue(command: options.command, option: name, value: text, expected: "RANK@STEP, e.g. 0@2")
            }
            return RankAtStep(rank: parts[0], step: parts[1])
        }
    }

    static let killRank = rankAtStep("kill-rank", "testing aid: that rank kills itself with SIGKILL at the start of that step (1-based)")
    static let hangRank = rankAtStep("hang-rank", "testing aid: that rank stops making progress (sleeps forever) at the start of that step")
    static let corruptStats = TypedOption<Int?>.integer(
        "corrupt-stats", "RANK", in: 0...1_000_000, "testing aid: this rank sends malformed statistics, to show the job ends cleanly")
    static let failMigration = rankAtStep(
        "fail-migration", "testing aid: that rank reports a failed expert migration after that step (1-based; needs a placement change then)")
    static let specs = [corruptStats.spec, hangRank.spec, killRank.spec, failMigration.spec]

    let killAt: RankAtStep?
    let hangAt: RankAtStep?
    let corruptStatsRank: Int?
    let failMigrationAt: RankAtStep?

    init(options: ParsedOptions) throws(UsageError) {
        killAt = try options.value(Self.killRank)
        hangAt = try options.value(Self.hangRank)
        corruptStatsRank = try options.value(Self.corruptStats)
        failMigrationAt = try options.value(Self.failMigration)
    }

    /// Why an aid cannot apply to a job of `ranks` ranks and `steps` steps, if it cannot.
    func problem(ranks: Int, steps: Int) -> String? {
        for (name, aid) in [("kill-rank", killAt), ("hang-rank", hangAt), ("fail-migration", failMigrationAt)] {
            guard let aid else { continue }
            if aid.rank >= ranks { return "--\(name) \(aid.rank)@\(aid.step): the job has ranks 0...\(ranks - 1)" }
            if aid.step > steps { return "--\(name) \(aid.rank)@\(aid.step): the job runs \(steps) step\(steps == 1 ? "" : "s")" }
        }
        if let rank = corruptStatsRank, rank >= ranks { return "--corrupt-stats \(rank): the job has ranks 0...\(ranks - 1)" }
        return nil
    }

    /// Whether `rank` fails the migration after step `step` (0-based).
    func failMigrationIsDue(step: Int, rank: Int) -> Bool { failMigrationAt == RankAtStep(rank: rank, step: step + 1) }

    /// At the start of step `step` (0-based) on `rank`, before its inputs are read.
    func killIfDue(step: Int, rank: Int) {
        guard killAt == RankAtStep(rank: rank, step: step + 1) else { return }
        fflush(nil)
        kill(getpid(), SIGKILL)
    }

    /// After the barrier that starts step `step` (0-based) on `rank`: sleeps forever, telling the
    /// watchdog it is in the experts phase.
    func hangIfDue(step: Int, rank: Int, beacon: ProgressBeacon?) {
        guard hangAt == RankAtStep(rank: rank, step: step + 1) else { return }
        beacon?.enter(phase: "experts (hung by --hang-rank)")
        while true { sleep(1) }
    }
}

/// The testing aids as a step observer: kills at the start of a step, hangs after its barrier.
@MainActor
final class TestingAidsObserver: StepObserver {
    let aids: TestingAids
    let rank: Int
    let beacon: ProgressBeacon?

    init(_ aids: TestingAids, rank: Int, beacon: ProgressBeacon?) {
        self.aids = aids
        self.rank = rank
        self.beacon = beacon
    }

    func stepWillStart(_ step: Int, session: InferenceSession) throws {
        beacon?.enter(step: step, layer: 0, phase: "reading inputs")
        aids.killIfDue(step: step, rank: rank)
    }

    func stepWillForward(_ step: Int, session: InferenceSession) throws {
        aids.hangIfDue(step: step, rank: rank, beacon: beacon)
    }
}
