import JobControl
import ArgumentParsing
import ClusterTopology
import Exchange
import FileFormats
import Foundation
import MessagePassing
import MoE

/// Shared by every moe-bench subcommand (one timing method, one output format, as in the OSU
/// micro-benchmarks): repeated measurements reduced to the slowest rank per repetition, then the
/// median over repetitions; tables on stdout, CSV and JSON files, progress on stderr.
@MainActor
struct BenchmarkHarness {
    let world: Communicator

    /// Times `body` `repetitions` times after `warmup` untimed runs. Each repetition starts
    /// after a barrier; its time is the slowest rank's. Returns the per-repetition times.
    func measure(warmup: Int, repetitions: Int, _ body: () throws -> Void) throws -> [Double] {
        var samples: [Double] = []
        for repetition in 0..<(warmup + repetitions) {
            try world.barrier()
            let start = MPIRuntime.wallTime()
            try body()
            let elapsed = try world.allReduce(MPIRuntime.wallTime() - start, .maximum)
            if repetition >= warmup { samples.append(elapsed) }
        }
        return samples
    }

    /// Progress on stderr from rank 0, overwritten in place on a terminal.
    func progress(_ text: String) {
        guard world.rank == 0 else { return }
        writeStandardError("\r\u{1B}[K" + text + (isatty(2) != 0 ? "" : "\n"))
    }

    func endProgress() {
        if world.rank == 0, isatty(2) != 0 { writeStandardError("\r\u{1B}[K") }
    }

    /// One line describing where the numbers come from.
    func environmentLine(blasThreads: Int, localRanks: Int) -> String {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let load = localRanks * blasThreads > cores ? " — oversubscribed: \(localRanks) ranks × \(blasThreads) BLAS thread(s) > \(cores) cores" : ""
        return "# \(MPIRuntime.libraryVersion()); OpenBLAS \(BLAS.coreName), \(blasThreads) thread(s) per rank; \(world.size) ranks, \(localRanks) on this host of \(cores) cores\(load)"
    }
}

/// Summary statistics of repeated measurements.
struct Statistics {
    let median: Double
    let minimum: Double
    let maximum: Double

    init(_ samples: [Double]) {
        let sorted = samples.sorted()
        let middle = sorted.count / 2
        median = sorted.isEmpty ? 0 : (sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2)
        minimum = sorted.first ?? 0
        maximum = sorted.last ?? 0
    }
}

/// A results table: printed aligned on stdout, written as CSV and JSON (rank 0 only).
struct ResultTable {
    let columns: [String]
    var rows: [[String]] = []

    init(columns: [String]) { self.columns = columns }

    mutating func append(_ row: [String]) {
        precondition(row.count == columns.count)
        rows.append(row)
    }

    var aligned: String {
        let widths = columns.indices.map { column in ([columns[column]] + rows.map { $0[column] }).map(\.count).max()! }
        func line(_ cells: [String]) -> String {
            zip(cells, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
        }
        return ([line(columns)] + rows.map(line)).joined(separator: "\n")
    }

    var csv: String { ([columns] + rows).map { $0.joined(separator: ",") }.joined(separator: "\n") + "\n" }

    func json(metadata: [(String, JSONValue)]) -> String {
        let entries: [JSONValue] = rows.map { row in
            .object(zip(columns, row).map { column, cell in (column, Double(cell).map { JSONValue.number($0) } ?? .string(cell)) })
        }
        return JSONValue.object(metadata + [("rows", .array(entries))]).serialized() + "\n"
    }
}

func format(_ value: Double, _ digits: Int = 3) -> String { String(format: "%.\(digits)f", value) }

/// `--csv FILE` and `--json FILE`, shared by every benchmark's results table.
enum TableOutputOptions {
    static let csv = TypedOption<String?>.string("csv", "FILE", "write the table as CSV")
    static let json = TypedOption<String?>.string("json", "FILE", "write the table as JSON")
    static let specs = [csv.spec, json.spec]

    struct Values {
        let csvPath: String?
        let jsonPath: String?
    }

    static func read(_ options: ParsedOptions) throws(UsageError) -> Values {
        Values(csvPath: try options.value(csv), jsonPath: try options.value(json))
    }
}

/// `--warmup N` and `--repetitions N` with a benchmark's own defaults (its cost per run differs).
func warmupOption(default value: Int, _ help: String = "untimed runs per configuration") -> TypedOption<Int> {
    .integer("warmup", default: value, in: 0...1_000_000, help)
}

func repetitionsOption(default value: Int, _ help: String = "timed runs per configuration") -> TypedOption<Int> {
    .integer("repetitions", default: value, in: 1...1_000_000, help)
}

extension BenchmarkHarness {
    /// Starts a benchmark: the world (MPI starts here), and the result files checked before any
    /// measurement (`JobContext.checkPaths`), so a bad path never costs a whole run.
    static func start(_ context: JobContext, outputs: [(option: String, path: String?)]) throws -> BenchmarkHarness {
        let world = try context.world()
        try context.checkPaths(outputs: outputs, inputs: [])
        return BenchmarkHarness(world: world)
    }
}
