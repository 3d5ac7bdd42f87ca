import ExpertParallel
import Foundation
import Glibc
import MessagePassing
import Synchronization

/// `moe run --timeout-s S`: ends a job whose step makes no progress for S seconds, naming the
/// step, layer and phase, which ranks were waiting there and which had not arrived.
///
/// A background thread watches this rank's `ProgressBeacon`. When it fires it writes the rank's
/// state into a job-wide folder (made by rank 0 at start), waits 2 s for the other ranks' watchdogs
/// to do the same, and the lowest rank that reported prints one line comparing them (exactly one
/// line: a claim directory makes the print happen once, and a rank that fires after the reporter
/// removed the folder stays silent); every rank then exits with status 3, so mpirun ends the job. (A rank that died or is busy elsewhere
/// leaves no file or another phase: it is named as not arrived.) The folder is on this host's
/// temporary directory, so on a multi-host job each host's ranks compare among themselves.
@MainActor
final class Watchdog {
    let beacon = ProgressBeacon()
    private let folder: String
    private let rank: Int
    private let ranks: Int
    private let timeout: Double
    private final class StopFlag: Sendable {
        let value = Atomic<Bool>(false)
    }
    private let stopped = StopFlag()

    /// Collective: rank 0 makes the folder and tells everyone.
    init(world: Communicator, timeoutSeconds: Double) throws {
        rank = world.rank
        ranks = world.size
        timeout = timeoutSeconds
        var path = ""
        if world.rank == 0 {
            var template = Array((NSTemporaryDirectory() + "/swiftmoe-watchdog-XXXXXX").utf8CString)
            if template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil {
                path = String(cString: template.withUnsafeBufferPointer { $0.baseAddress! })
            }
        }
        folder = String(decoding: try world.broadcastBytes(Array(path.utf8), root: 0), as: UTF8.self)
        let beacon = self.beacon, folder = self.folder, rank = self.rank, ranks = self.ranks, timeout = self.timeout
        let stopped = self.stopped
        Thread.detachNewThread {
            while !stopped.value.load(ordering: .relaxed) {
                usleep(200_000)
                let state = beacon.current
                guard ProgressBeacon.now() - state.since > timeout, !stopped.value.load(ordering: .relaxed) else { continue }
                Self.fire(state: state, folder: folder, rank: rank, ranks: ranks, timeout: timeout)
            }
        }
    }

    private nonisolated static func describe(_ state: ProgressBeacon.State) -> String {
        "\(state.phase) of layer \(state.layer), step \(state.step + 1)"
    }

    private nonisolated static func fire(state: ProgressBeacon.State, folder: String, rank: Int, ranks: Int, timeout: Double) -> Never {
        let mine = describe(state)
        if !folder.isEmpty {
            try? mine.write(toFile: "\(folder)/rank-\(rank)", atomically: true, encoding: .utf8)
        }
        sleep(2)
        var states: [Int: String] = [:]
        for other in 0..<ranks {
            if let text = try? String(contentsOfFile: "\(folder)/rank-\(other)", encoding: .utf8) { states[other] = text }
        }
        // A rank whose own report is gone fired after the reporter had printed and removed the
        // folder: it stays silent (before, it printed a second, contradictory line). Among the
        // rest the lowest reporting rank prints, and `mkdir` of a claim makes that exactly once.
        let reporter = states.keys.min() ?? rank
        if folder.isEmpty ? rank == 0 : (states[rank] != nil && reporter == rank && mkdir("\(folder)/reported", 0o700) == 0) {
            let waiting = states.filter { $0.value == mine }.keys.sorted()
            let others = (0..<ranks).filter { states[$0] != mine }.map { other in
                "rank \(other) (" + (states[other].map { "in \($0)" } ?? "no report: dead, or on another host") + ")"
            }
            var line = "moe: error: watchdog: no progress for \(Int(timeout)) s in \(mine): "
            line += "rank\(waiting.count == 1 ? "" : "s") \(waiting.map(String.init).joined(separator: ", ")) waiting there"
            line += others.isEmpty ? "" : "; not arrived: " + others.joined(separator: ", ")
            writeStandardError(line + "\n")
            try? FileManager.default.removeItem(atPath: folder)
        } else {
            sleep(3)
        }
        _exit(3)
    }

    /// Stops watching and removes the folder (rank 0).
    func stop() {
        stopped.value.store(true, ordering: .relaxed)
        if rank == 0, !folder.isEmpty { try? FileManager.default.removeItem(atPath: folder) }
    }
}
