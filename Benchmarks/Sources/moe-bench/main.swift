import ArgumentParsing
import Foundation
import MessagePassing

// moe-bench: communication and compute benchmarks for SwiftMoE (results: Benchmarks/README.md).
let launcherRank = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_RANK"].flatMap(Int.init) ?? 0

/// One benchmark subcommand, built from its parsed options and run on the world.
@MainActor
protocol Benchmark {
    func run(world: Communicator) throws
}

/// A failure every rank agreed on: `reportingRank` prints `message`, every rank exits 1.
struct BenchmarkFailure: Error, CustomStringConvertible {
    let message: String
    let reportingRank: Int
    var description: String { message }
}

@MainActor
func benchMain(_ arguments: [String]) -> Int32 {
    // The benchmarks: spec and factory (a table of closures, as in `moe`).
    let benchmarks: [(spec: CommandSpec, make: (ParsedOptions) throws -> any Benchmark)] = [
        (LayerBenchmark.spec, { try LayerBenchmark(options: $0) }),
        (AllToAllBenchmark.spec, { try AllToAllBenchmark(options: $0) }),
        (PackBenchmark.spec, { try PackBenchmark(options: $0) }),
        (ProjectBenchmark.spec, { try ProjectBenchmark(options: $0) }),
        (CapacityBenchmark.spec, { try CapacityBenchmark(options: $0) }),
    ]
    let commands = benchmarks.map(\.spec)
    guard let name = arguments.first, !["--help", "-h", "help"].contains(name) else {
        if launcherRank == 0 {
            print("moe-bench — SwiftMoE benchmarks\n\nusage: mpirun -np N moe-bench <benchmark> [options]\n\nbenchmarks:")
            for command in commands { print("  \(command.name.padding(toLength: 10, withPad: " ", startingAt: 0))\(command.summary)") }
            print("\nRun 'moe-bench <benchmark> --help' for its options.")
        }
        return arguments.isEmpty ? 2 : 0
    }
    guard let entry = benchmarks.first(where: { $0.spec.name == name }) else {
        if launcherRank == 0 { writeStandardError("moe-bench: error: \(UsageError.unknownCommand(name, known: commands.map(\.name)))\n") }
        return 2
    }
    let benchmark: any Benchmark
    do {
        let options = try ParsedOptions(arguments: Array(arguments.dropFirst()), spec: entry.spec)
        if options.helpRequested {
            if launcherRank == 0 { print(entry.spec.helpText.replacingOccurrences(of: "usage: moe ", with: "usage: moe-bench ")) }
            return 0
        }
        benchmark = try entry.make(options)
    } catch {
        if launcherRank == 0 { writeStandardError("moe-bench \(name): error: \(error)\n") }
        return 2
    }
    do {
        let runtime = try MPIRuntime.initialize()
        var status: Int32 = 0
        do { try benchmark.run(world: runtime.world) } catch let failure as BenchmarkFailure {
            if runtime.world.rank == failure.reportingRank { writeStandardError("moe-bench: error: \(failure.message)\n") }
            status = 1
        } catch {
            runtime.abortAll("moe-bench: error on rank \(runtime.world.rank): \(error)")
        }
        runtime.finalize()
        return status
    } catch {
        writeStandardError("moe-bench: error: \(error)\n")
        return 1
    }
}

let status = MainActor.assumeIsolated { benchMain(Array(CommandLine.arguments.dropFirst())) }
fflush(nil)
exit(status)
