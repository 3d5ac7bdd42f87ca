import ArgumentParsing
import Foundation
import MessagePassing

// The edge of the program: arguments and environment are read here, once, and flow down as
// values. Usage errors are found before MPI starts, so every rank reaches the same verdict
// without a collective; only world rank 0 (known from mpirun's environment before MPI_Init)
// prints them, so N ranks do not print N copies.
let launcherRank = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_RANK"].flatMap(Int.init) ?? 0

@MainActor
func runMain(_ arguments: [String]) -> Int32 {
    guard let commandName = arguments.first, commandName != "--help", commandName != "-h", commandName != "help" else {
        if launcherRank == 0 { print(generalHelp()) }
        return arguments.isEmpty ? 2 : 0
    }
    if commandName == "--version" {
        if launcherRank == 0 { print("moe (SwiftMoE) 0.1, built against \(MPIRuntime.libraryVersion())") }
        return 0
    }
    guard let commandType = allSubcommands.first(where: { $0.spec.name == commandName }) else {
        if launcherRank == 0 {
            writeStandardError("moe: error: \(UsageError.unknownCommand(commandName, known: allSubcommands.map(\.spec.name)))\n")
        }
        return 2
    }
    let command: any Subcommand
    do {
        let options = try ParsedOptions(arguments: Array(arguments.dropFirst()), spec: commandType.spec)
        if options.helpRequested {
            if launcherRank == 0 { print(commandType.spec.helpText) }
            return 0
        }
        command = try commandType.make(options)
    } catch {
        if launcherRank == 0 { writeStandardError("moe \(commandName): error: \(error)\n(see 'moe \(commandName) --help')\n") }
        return 2
    }

    let context = RunContext()
    do {
        try command.run(context)
        context.finish()
        return 0
    } catch let failure as JobFailure {
        let rank = context.isMPIStarted ? ((try? context.world().rank) ?? launcherRank) : launcherRank
        if rank == failure.reportingRank, !failure.message.isEmpty { writeStandardError("moe: error: \(failure.message)\n") }
        context.finish()
        return failure.exitCode
    } catch {
        // A failure the ranks have not agreed on (an MPI error mid-exchange, say): others may
        // be blocked in a collective, so end the whole job rather than exit alone.
        if context.isMPIStarted, let world = try? context.world(), world.size > 1 {
            (try? context.mpi())?.abortAll("moe: error on rank \(world.rank): \(error)")
        }
        writeStandardError("moe: error: \(error)\n")
        context.finish()
        return 1
    }
}

let status = MainActor.assumeIsolated { runMain(Array(CommandLine.arguments.dropFirst())) }
fflush(nil)  // every output stream, before exit(3) skips Swift-side buffers
exit(status)
