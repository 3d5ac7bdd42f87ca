import ArgumentParsing
import ClusterTopology
import Exchange
import FileFormats
import MessagePassing

/// A failure that every rank of the job has agreed on. Exactly one rank (`reportingRank`)
/// prints `message`; every rank then finalises MPI and exits with `exitCode`, so no rank is
/// left waiting in a collective and the output holds one clear line.
struct JobFailure: Error, CustomStringConvertible {
    let message: String
    let reportingRank: Int
    var exitCode: Int32 = 1
    var description: String { message }
}

/// What a running subcommand has: MPI (initialised on first use, so offline commands never
/// start it), this process's rank, and helpers for collective decisions.
@MainActor
final class RunContext {
    private var runtime: MPIRuntime?

    /// The MPI runtime, initialised on first call.
    func mpi() throws(MPIError) -> MPIRuntime {
        if let runtime { return runtime }
        let started = try MPIRuntime.initialize()
        runtime = started
        return started
    }

    var isMPIStarted: Bool { runtime != nil }

    /// All ranks of the job.
    func world() throws(MPIError) -> Communicator { try mpi().world }

    /// Finalises MPI if it was started.
    func finish() { runtime?.finalize() }

    /// Runs `body` on every rank and agrees on the outcome before anyone continues: if any rank
    /// threw, every rank throws a `JobFailure` carrying the lowest failing rank's message.
    /// Use it around every step whose failure may differ between ranks (reading a file, a
    /// local check) and that precedes a collective.
    func collectively<T>(_ body: () throws -> T) throws -> T {
        let world = try world()
        var outcome: Result<T, any Error>
        do { outcome = .success(try body()) } catch { outcome = .failure(error) }
        let failed: Bool
        if case .failure = outcome { failed = true } else { failed = false }
        guard let reporter = try world.lowestFailingRank(failed: failed) else {
            return try outcome.get()
        }
        if case let .failure(error) = outcome, reporter == world.rank {
            throw JobFailure(message: world.size > 1 ? "\(error) [rank \(world.rank)]" : "\(error)", reportingRank: reporter)
        }
        throw JobFailure(message: "", reportingRank: reporter)
    }

    /// The job's topology: from `path` when given (validated on every rank, and checked against
    /// the world size), otherwise the nodes MPI finds with its shared-memory split.
    func topology(path: String?) throws -> Topology {
        let world = try world()
        if let path {
            return try collectively { () throws -> Topology in
                let topology = try Topology.load(path: path)
                try topology.requireWorldSize(world.size)
                return topology
            }
        }
        return try Topology.discover(world: world)
    }

    /// Writes `text` to `path` on rank 0 only (atomically), and agrees on the outcome.
    func writeOnRankZero(_ text: String, to path: String) throws {
        let world = try world()
        try collectively {
            if world.rank == 0 { try AtomicFileWriter.write(text, to: path) }
        }
    }
}

/// `--simulate-links on|off`, shared by the commands that exchange.
let simulateLinksOption = OptionSpec.value(
    "simulate-links", "on|off",
    "hold inter-node messages back by the topology's link cost (one machine only); default: the topology's links.simulate")

extension RunContext {
    /// The simulated links for this job (`SimulatedLinks.start`); its errors, the same on every
    /// rank, become one line from rank 0.
    func simulatedLinks(topology: Topology, requested: Bool?) throws -> SimulatedLinks? {
        do { return try SimulatedLinks.start(world: try world(), topology: topology, requested: requested) } catch let error as LinkSimulationError {
            throw JobFailure(message: error.description, reportingRank: 0)
        }
    }
}
