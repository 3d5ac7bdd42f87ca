import ArgumentParsing
import Foundation
import MessagePassing

// moe-bench: communication and compute benchmarks for SwiftMoE (results: Benchmarks/README.md).
let launcherRank = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_RANK"].flatMap(Int.init) ?? 0

@MainActor
func benchMain(_ arguments: [String]) -> Int32 {
    let commands = [LayerBenchmark.spec]
    guard let name = arguments.first, !["--help", "-h", "help"].contains(name) else {
        if launcherRank == 0 {
            print("moe-bench — SwiftMoE benchmarks\n\nusage: mpirun -np N moe-bench <benchmark> [options]\n\nbenchmarks:")
            for command in commands { print("  \(command.name.padding(toLength: 10, withPad: " ", startingAt: 0))\(command.summary)") }
            print("\nRun 'moe-bench <benchmark> --help' for its options.")
        }
        return arguments.isEmpty ? 2 : 0
    }
    guard let spec = commands.first(where: { $0.name == name }) else {
        if launcherRank == 0 { writeStandardError("moe-bench: error: \(UsageError.unknownCommand(name, known: commands.map(\.name)))\n") }
        return 2
    }
    let benchmark: LayerBenchmark
    do {
        let options = try ParsedOptions(arguments: Array(arguments.dropFirst()), spec: spec)
        if options.helpRequested {
            if launcherRank == 0 { print(spec.helpText.replacingOccurrences(of: "usage: moe ", with: "usage: moe-bench ")) }
            return 0
        }
        benchmark = try LayerBenchmark(options: options)
    } catch {
        if launcherRank == 0 { writeStandardError("moe-bench \(name): error: \(error)\n") }
        return 2
    }
    do {
        let runtime = try MPIRuntime.initialize()
        do { try benchmark.run(world: runtime.world) } catch {
            runtime.abortAll("moe-bench: error on rank \(runtime.world.rank): \(error)")
        }
        runtime.finalize()
        return 0
    } catch {
        writeStandardError("moe-bench: error: \(error)\n")
        return 1
    }
}

let status = MainActor.assumeIsolated { benchMain(Array(CommandLine.arguments.dropFirst())) }
fflush(nil)
exit(status)
