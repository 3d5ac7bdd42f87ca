import Glibc
import Synchronization

/// SIGTERM as a request to stop cleanly, the way a workload manager asks: Slurm sends SIGTERM to
/// every task when a job reaches its time limit or is cancelled (`scancel`), and SIGKILL only
/// `KillWait` seconds later; `mpirun` forwards SIGTERM to its ranks.
///
/// `install()` replaces the default action (immediate death, files half-finished) with a handler
/// that only records the signal (an atomic store, async-signal-safe). Long-running commands poll
/// `pending` between steps, agree on it collectively, finish the step, write their outputs and
/// exit with 128 + the signal number, as a shell reports a signal death.
package enum TerminationSignal {
    private static let received = Atomic<Int32>(0)

    /// Installs the handler for SIGTERM (once; later calls do nothing new).
    package static func install() {
        signal(SIGTERM) { number in TerminationSignal.received.store(number, ordering: .relaxed) }
    }

    /// The signal received since `install`, or 0.
    package static var pending: Int32 { received.load(ordering: .relaxed) }

    /// "SIGTERM" for 15, else "signal N".
    package static func name(_ number: Int32) -> String { number == SIGTERM ? "SIGTERM" : "signal \(number)" }
}
