import ArgumentParsing
import ClusterTopology
import Exchange
import FileFormats
import JobControl
import Foundation
import MessagePassing

/// `moe exchange-check`: every exchange algorithm on reproducible random traffic, compared byte
/// for byte with `MPI_Alltoallv`; the library's own result is checked against the regenerated
/// send contents too, so the oracle is not trusted blindly.
struct ExchangeCheckCommand: JobCommand {
    static let spec = CommandSpec(
        name: "exchange-check",
        summary: "Run every all-to-all algorithm on random sizes and compare with MPI_Alltoallv.",
        discussion: """
            Each trial draws per-peer row counts in one of several shapes (uniform, empty,
            one-receiver, uneven, self-only, sparse) and a row size (1, 3, 64 or 2052 bytes), fills
            the send buffer with bytes that depend only on (seed, trial, source, destination), and
            runs every algorithm. A trial passes when each algorithm's receive buffer equals
            MPI_Alltoallv's byte for byte and MPI_Alltoallv's equals the regenerated contents.
            Exits 1 on any mismatch.
            """,
        options: TopologyOptions.specs + Options.specs)

    enum Options {
        static let algorithms = TypedOption<[AllToAllAlgorithm]>.choices(
            "algorithms", "LIST", default: AllToAllAlgorithm.allCases,
            "comma-separated: " + AllToAllAlgorithm.allCases.map(\.rawValue).joined(separator: ","))
        static let trials = TypedOption<Int>.integer("trials", default: 24, in: 1...100_000, "number of random trials")
        static let maxRows = TypedOption<Int>.integer("max-rows", default: 64, in: 0...1_000_000,
                                                      "largest typical row count per peer (uneven trials send 8x)")
        static let seed = TypedOption<UInt64>.seed(default: 1, "seed of the random traffic")
        static let json = TypedOption<String?>.string("json", "FILE", "write the results as JSON (rank 0)")
        static let corrupt = TypedOption<AllToAllAlgorithm?>.choice(
            "corrupt", "ALGORITHM", "testing aid: flip one received byte of ALGORITHM on the last rank, to show a mismatch is caught")
        static let inFlight = TypedOption<Int>.integer(
            "in-flight", default: 1, in: 1...SimulatedLinks.maxInFlightPerPair,
            "nonblocking exchanges of each trial in flight at once (1: the blocking exchange)")
        static let specs = [algorithms.spec, trials.spec, maxRows.spec, seed.spec, inFlight.spec, json.spec, corrupt.spec]
    }

    let topologyOptions: TopologyOptions.Values
    let algorithms: [AllToAllAlgorithm]
    let trials: Int
    let maxRows: Int
    let seed: UInt64
    let jsonPath: String?
    let corrupted: AllToAllAlgorithm?
    let inFlight: Int

    init(options: ParsedOptions) throws(UsageError) {
        topologyOptions = try TopologyOptions.read(options)
        algorithms = try options.value(Options.algorithms)
        trials = try options.value(Options.trials)
        maxRows = try options.value(Options.maxRows)
        seed = try options.value(Options.seed)
        jsonPath = try options.value(Options.json)
        corrupted = try options.value(Options.corrupt)
        inFlight = try options.value(Options.inFlight)
    }

    /// One algorithm's tally on this rank.
    struct Tally {
        var mismatchedTrials = 0
        var bytesReceived = 0
        var seconds = 0.0
        var firstMismatch: String?
    }

    func run(_ context: JobContext) throws {
        let world = try context.world()
        try context.checkPaths(outputs: [Options.json.naming(jsonPath)], inputs: [TopologyOptions.topology.naming(topologyOptions.topologyPath)])
        let (topology, links) = try context.topologyAndLinks(topologyOptions)
        let oracle = LibraryAllToAll(transport: ExchangeTransport(communicator: world))
        let exchanges = try algorithms.map { try makeAllToAll($0, communicator: world, worldRank: world.rank, topology: topology, links: links) }
        var tallies = [Tally](repeating: Tally(), count: algorithms.count)
        var oracleProblems = 0
        var oracleFirstProblem: String?
        let here = world.rank

        for trial in 0..<trials {
            let traffic = SyntheticTraffic(seed: seed, trial: trial, maxRows: maxRows)
            let layout = try oracle.exchangeCounts(sendCounts: traffic.sendCounts(source: here, size: world.size))
            let rowBytes = traffic.rowBytes
            var send = [UInt8](repeating: 0, count: layout.sendRows * rowBytes)
            send.withUnsafeMutableBytes { buffer in
                for destination in 0..<world.size {
                    let start = layout.sendDisplacements[destination] * rowBytes
                    traffic.fill(UnsafeMutableRawBufferPointer(rebasing: buffer[start..<start + layout.sendCounts[destination] * rowBytes]),
                                 source: here, destination: destination)
                }
            }
            // The oracle: MPI_Alltoallv, itself checked against the regenerated contents and counts.
            var expected = [UInt8](repeating: 0, count: layout.receiveRows * rowBytes)
            try send.withUnsafeBytes { sendBuffer in
                try expected.withUnsafeMutableBytes { receiveBuffer in
                    try oracle.exchange(send: sendBuffer, receive: receiveBuffer, layout: layout, rowBytes: rowBytes)
                }
            }
            if let problem = Self.verifyAgainstGenerated(expected, layout: layout, traffic: traffic, here: here, size: world.size) {
                oracleProblems += 1
                if oracleFirstProblem == nil { oracleFirstProblem = "trial \(trial) (\(traffic.shape.rawValue)): \(problem)" }
            }
            for (index, exchange) in exchanges.enumerated() {
              for var received in try Self.run(exchange, send: send, layout: layout, rowBytes: rowBytes, inFlight: inFlight,
                                               seconds: &tallies[index].seconds) {
                tallies[index].bytesReceived += received.count
                if exchange.algorithm == corrupted, here == world.size - 1, !received.isEmpty {
                    received[received.count / 2] ^= 0xFF
                }
                if let offset = received.indices.first(where: { received[$0] != expected[$0] }) {
                    tallies[index].mismatchedTrials += 1
                    if tallies[index].firstMismatch == nil {
                        let row = offset / rowBytes
                        let source = (0..<world.size).last { layout.receiveDisplacements[$0] <= row && layout.receiveCounts[$0] > 0 } ?? 0
                        tallies[index].firstMismatch = "trial \(trial) (\(traffic.shape.rawValue), \(rowBytes)-byte rows): rank \(here) byte \(offset) (row \(row), from rank \(source)) differs from MPI_Alltoallv"
                    }
                }
              }
            }
        }
        let simulated = try world.allReduce(links?.simulatedMessages ?? 0, .sum)
        try report(context: context, world: world, topology: topology, tallies: tallies,
                   oracleProblems: oracleProblems, oracleFirstProblem: oracleFirstProblem,
                   simulatedMessages: links == nil ? nil : simulated)
    }

    /// Runs one trial's exchange: blocking when `inFlight` is 1, else `inFlight` nonblocking
    /// exchanges on channels 1…K, tested in turn (with a little work between tests, as a pipeline
    /// computes) until all complete. Returns each receive buffer, and adds the time to `seconds`.
    static func run(_ exchange: any AllToAll, send: [UInt8], layout: ExchangeLayout, rowBytes: Int, inFlight: Int,
                    seconds: inout Double) throws -> [[UInt8]] {
        let bytes = layout.receiveRows * rowBytes
        let buffers = (0..<inFlight).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes, 1), alignment: 64) }
        defer { buffers.forEach { $0.deallocate() } }
        for buffer in buffers { buffer.initializeMemory(as: UInt8.self, repeating: 0xA5) }
        let start = MPIRuntime.wallTime()
        try send.withUnsafeBytes { sendBuffer in
            if inFlight == 1 {
                try exchange.exchange(send: sendBuffer, receive: buffers[0], layout: layout, rowBytes: rowBytes)
                return
            }
            let pending = try buffers.enumerated().map { channel, buffer in
                try exchange.post(send: sendBuffer, receive: buffer, layout: layout, rowBytes: rowBytes, channel: channel + 1)
            }
            var work = 0.0
            while try !pending.reduce(true, { try $1.test() && $0 }) {
                for value in 0..<2000 { work += Double(value).squareRoot() }  // stands in for a GEMM tile
            }
            if work < 0 { print(work) }
        }
        seconds += MPIRuntime.wallTime() - start
        return buffers.map { Array($0[0..<bytes]) }
    }

    /// Compares the oracle's receive buffer with what each source must have sent; nil if equal.
    static func verifyAgainstGenerated(_ received: [UInt8], layout: ExchangeLayout, traffic: SyntheticTraffic, here: Int, size: Int) -> String? {
        let rowBytes = traffic.rowBytes
        for source in 0..<size {
            let expectedCount = traffic.sendCounts(source: source, size: size)[here]
            guard expectedCount == layout.receiveCounts[source] else {
                return "rank \(here) was told \(layout.receiveCounts[source]) rows come from rank \(source), expected \(expectedCount)"
            }
            var block = [UInt8](repeating: 0, count: expectedCount * rowBytes)
            block.withUnsafeMutableBytes { traffic.fill($0, source: source, destination: here) }
            let start = layout.receiveDisplacements[source] * rowBytes
            if !block.elementsEqual(received[start..<start + block.count]) {
                return "rank \(here): MPI_Alltoallv delivered other bytes than rank \(source) sent"
            }
        }
        return nil
    }

    private func report(
        context: JobContext, world: Communicator, topology: Topology, tallies: [Tally], oracleProblems: Int, oracleFirstProblem: String?,
        simulatedMessages: Int?
    ) throws {
        let mismatches = try world.allReduce(tallies.map(\.mismatchedTrials) + [oracleProblems], .sum)
        let bytes = try world.allReduce(tallies.map(\.bytesReceived), .sum)
        let slowest = try world.allReduce(tallies.map(\.seconds), .maximum)
        // Each rank's first problem per algorithm, gathered so rank 0 can name one.
        let localFirsts = (tallies.map { $0.firstMismatch ?? "" } + [oracleFirstProblem ?? ""]).joined(separator: "\u{1}")
        let gathered = try world.gatherBytes(Array(localFirsts.utf8), root: 0)
        let passed = mismatches.allSatisfy { $0 == 0 }
        var firstProblems = [String](repeating: "", count: tallies.count + 1)
        if let gathered {
            for rankText in gathered.reversed() {
                let parts = String(decoding: rankText, as: UTF8.self).split(separator: "\u{1}", omittingEmptySubsequences: false)
                for (index, part) in parts.enumerated() where !part.isEmpty && index < firstProblems.count {
                    firstProblems[index] = String(part)
                }
            }
            print("exchange check: \(plural(world.size, "rank")), topology \(topology.name) (\(plural(topology.nodes.count, "node"))), \(plural(trials, "trial")), seed \(seed)")
            print("  " + "algorithm".padding(toLength: 14, withPad: " ", startingAt: 0) + "result    mismatched  bytes received   time (s)")
            print("  " + "mpi (oracle)".padding(toLength: 14, withPad: " ", startingAt: 0)
                  + (mismatches.last! == 0 ? "verified  " : "WRONG     ") + "\(mismatches.last!)".padding(toLength: 14, withPad: " ", startingAt: 0)
                  + "(checked against generated contents)")
            for (index, algorithm) in algorithms.enumerated() {
                print("  " + algorithm.rawValue.padding(toLength: 14, withPad: " ", startingAt: 0)
                      + (mismatches[index] == 0 ? "pass      " : "FAIL      ")
                      + "\(mismatches[index])".padding(toLength: 14, withPad: " ", startingAt: 0)
                      + "\(bytes[index])".padding(toLength: 17, withPad: " ", startingAt: 0)
                      + String(format: "%.4f", slowest[index]))
            }
            for (index, problem) in firstProblems.enumerated() where !problem.isEmpty {
                print("  first mismatch of \(index < algorithms.count ? algorithms[index].rawValue : "mpi (oracle)"): \(problem)")
            }
            if let simulatedMessages {
                print("  simulated inter-node links: \(simulatedMessages) messages held back by the link model (\(topology.interNode.latencyMicroseconds) µs, \(topology.interNode.bandwidthGigabytesPerSecond) GB/s)")
            }
            print(passed ? "exchange check passed" : "exchange check FAILED")
        }
        if let jsonPath {
            var entries: [JSONValue] = algorithms.enumerated().map { index, algorithm in
                .object([("name", .string(algorithm.rawValue)), ("mismatched_trials", .number(Double(mismatches[index]))),
                         ("bytes_received", .number(Double(bytes[index]))), ("seconds_slowest_rank", .number(slowest[index])),
                         ("first_mismatch", firstProblems[index].isEmpty ? .null : .string(firstProblems[index]))])
            }
            entries.insert(.object([("name", .string("mpi-oracle-vs-generated")), ("mismatched_trials", .number(Double(mismatches.last!))),
                                    ("first_mismatch", firstProblems.last!.isEmpty ? .null : .string(firstProblems.last!))]), at: 0)
            let document = JSONValue.object([
                ("world_size", .number(Double(world.size))), ("topology", .string(topology.name)),
                ("nodes", .number(Double(topology.nodes.count))), ("trials", .number(Double(trials))),
                ("seed", .number(Double(seed))), ("passed", .bool(passed)), ("algorithms", .array(entries)),
                ("simulated_links", .bool(simulatedMessages != nil)), ("simulated_messages", .number(Double(simulatedMessages ?? 0))),
            ])
            try context.writeOnRankZero(document.serialized() + "\n", to: jsonPath)
        }
        if !passed {
            throw JobFailure(message: "exchange check failed: \(mismatches.reduce(0, +)) mismatched trial results (see the table above)", reportingRank: 0)
        }
    }
}
