import ArgumentParsing
import Foundation
import MoE
import ClusterTopology
import Exchange
import FileFormats
import MessagePassing

/// What a running command of `moe` or `moe-bench` has: MPI (initialised on first use, so
/// offline commands never start it), and the job-control helpers every command shares —
/// agree-before-failing, topology resolution, link simulation, BLAS threads, rank-0 writes.
@MainActor
package final class JobContext {
    private var runtime: MPIRuntime?

    package init() {}

    /// The command line as every rank must run it (`key`, `value` pairs: the command, every
    /// option's effective value, the positional arguments). Set by `JobMain`; checked by the first
    /// collective of the job (`agree(on:what:)`), so an MPMD launch with different options, or a
    /// mix of versions, stops with one line instead of hanging or mixing models.
    package var commandLine: [(key: String, value: String)] = []

    /// The MPI runtime, initialised on first call; the first call also checks that every rank
    /// runs the same command line.
    package func mpi() throws -> MPIRuntime {
        if let runtime { return runtime }
        let started = try MPIRuntime.initialize()
        runtime = started
        try agree(on: commandLine, what: "command line")
        return started
    }

    package var isMPIStarted: Bool { runtime != nil }

    /// All ranks of the job.
    package func world() throws -> Communicator { try mpi().world }

    /// Checks that every rank holds the same `entries` (collective over the world): one
    /// `MPI_Allgather` of a 64-bit digest, and only on a mismatch a gather of the entries to rank
    /// 0, which names each key that differs and the ranks of each value. Every rank then throws
    /// the same `JobFailure`, reported by rank 0.
    package func agree(on entries: [(key: String, value: String)], what: String) throws {
        let world = try world()
        guard world.size > 1 else { return }
        let text = entries.map { "\($0.key)\u{1F}\($0.value)" }.joined(separator: "\u{1E}")
        let digests = try world.allGather([Int(bitPattern: UInt(Self.digest(text)))])
        guard Set(digests).count > 1 else { return }
        let gathered = try world.gatherBytes(Array(text.utf8), root: 0)
        var message = ""
        if let gathered {
            let perRank: [[String: String]] = gathered.map { bytes in
                var map: [String: String] = [:]
                for pair in String(decoding: bytes, as: UTF8.self).split(separator: "\u{1E}", omittingEmptySubsequences: false) {
                    let parts = pair.split(separator: "\u{1F}", maxSplits: 1, omittingEmptySubsequences: false)
                    map[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
                }
                return map
            }
            let keys = Set(perRank.flatMap(\.keys)).sorted()
            var differences: [String] = []
            for key in keys {
                var ranksOf: [String: [Int]] = [:]
                for (rank, map) in perRank.enumerated() { ranksOf[map[key] ?? "(absent)", default: []].append(rank) }
                guard ranksOf.count > 1 else { continue }
                let values = ranksOf.sorted { $0.value[0] < $1.value[0] }
                    .map { "'\($0.key)' on rank\($0.value.count == 1 ? "" : "s") \(Self.ranges($0.value))" }
                differences.append("\(key): " + values.joined(separator: ", "))
            }
            // Different commands differ in every option; the command is the one thing to say.
            if let command = differences.first(where: { $0.hasPrefix("command: ") }) { differences = [command] }
            message = "the ranks do not run the same \(what): " + differences.joined(separator: "; ")
        }
        throw JobFailure(message: message, reportingRank: 0)
    }

    /// FNV-1a, 64 bits: equal texts give equal digests on every rank and host.
    static func digest(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }

    /// "0-3,6" for [0, 1, 2, 3, 6].
    static func ranges(_ ranks: [Int]) -> String {
        var parts: [String] = []
        var start = ranks.first ?? 0
        var previous = start
        for rank in ranks.dropFirst() + [Int.min] {
            if rank == previous + 1 { previous = rank; continue }
            parts.append(start == previous ? "\(start)" : "\(start)-\(previous)")
            start = rank
            previous = rank
        }
        return ranks.isEmpty ? "" : parts.joined(separator: ",")
    }

    /// Finalises MPI if it was started.
    package func finish() { runtime?.finalize() }

    /// Runs `body` on every rank and agrees on the outcome before anyone continues: if any rank
    /// threw, every rank throws a `JobFailure` carrying the lowest failing rank's message.
    /// Use it around every step whose failure may differ between ranks (reading a file, a
    /// local check) and that precedes a collective.
    package func collectively<T>(_ body: () throws -> T) throws -> T {
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
    package func topology(path: String?) throws -> Topology {
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
    package func writeOnRankZero(_ text: String, to path: String) throws {
        let world = try world()
        try collectively {
            if world.rank == 0 { try AtomicFileWriter.write(text, to: path) }
        }
    }
}

extension JobContext {
    /// The simulated links for this job (`SimulatedLinks.start`); its errors, the same on every
    /// rank, become one line from rank 0.
    package func simulatedLinks(topology: Topology, requested: Bool?) throws -> SimulatedLinks? {
        do { return try SimulatedLinks.start(world: try world(), topology: topology, requested: requested) } catch let error as LinkSimulationError {
            throw JobFailure(message: error.description, reportingRank: 0)
        }
    }
}

extension JobContext {
    /// The job's topology and simulated links from the shared topology options
    /// (`TopologyOptions`): `topology(path:)`, then `simulatedLinks(topology:requested:)`.
    package func topologyAndLinks(_ options: TopologyOptions.Values) throws -> (topology: Topology, links: SimulatedLinks?) {
        let topology = try topology(path: options.topologyPath)
        return (topology, try simulatedLinks(topology: topology, requested: options.simulateLinks))
    }

    /// Sets OpenBLAS's threads for this rank — `requested`, else cores / ranks on this host (at
    /// least 1) — and returns them with the ranks on this host. Collective over the world.
    /// Under Slurm, the CPUs the allocation gives each task (`--cpus-per-task`, exported by
    /// srun and sbatch as `SLURM_CPUS_PER_TASK`); nil outside Slurm or when unset.
    static var slurmCPUsPerTask: Int? {
        ProcessInfo.processInfo.environment["SLURM_CPUS_PER_TASK"].flatMap(Int.init).flatMap { $0 >= 1 ? $0 : nil }
    }

    package func configureBLASThreads(requested: Int?) throws -> (threads: Int, localRanks: Int) {
        let localRanks = try world().splitBySharedMemory().size
        let threads = requested ?? Self.slurmCPUsPerTask ?? max(1, ProcessInfo.processInfo.activeProcessorCount / localRanks)
        BLAS.setThreadCount(threads)
        OneDNN.setThreadCount(threads)
        return (threads, localRanks)
    }
}

extension JobContext {
    /// Checks the command's outputs against the rules of `OutputPaths` (not a device, FIFO,
    /// folder or link; not an input or another output; a writable folder) before anything is
    /// computed. With MPI started it is an agreed check (`collectively`); without, the one process
    /// fails alone. `nil` paths (options not given) are skipped. Options are named without dashes.
    public func checkPaths(outputs: [(option: String, path: String?)], inputs: [(option: String, path: String?)]) throws {
        let named = { (list: [(option: String, path: String?)]) in list.compactMap { entry in entry.path.map { NamedPath(option: entry.option, path: $0) } } }
        let check = { () throws in try OutputPaths.check(outputs: named(outputs), inputs: named(inputs)) }
        if isMPIStarted {
            try collectively(check)
        } else {
            do { try check() } catch { throw JobFailure(message: "\(error)", reportingRank: JobMain.launcherRank) }
        }
    }
}
