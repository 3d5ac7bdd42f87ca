import ArgumentParsing
import Foundation
import MessagePassing

/// A command of `moe` or `moe-bench`: its options are declared once in `spec`; `init(options:)`
/// validates them without MPI (so a bad flag never starts a collective); `run` does the work.
@MainActor
package protocol JobCommand {
    static var spec: CommandSpec { get }
    init(options: ParsedOptions) throws(UsageError)
    func run(_ context: JobContext) throws
}

/// A command as the dispatcher sees it: its declaration and how to build it from parsed
/// options. (A table of closures rather than `any JobCommand.Type`: calling a typed-throws
/// `init` through an existential metatype crashes the Swift 6.3 compiler.)
package struct CommandEntry: Sendable {
    package let spec: CommandSpec
    let make: @MainActor @Sendable (ParsedOptions) throws(UsageError) -> any JobCommand

    @MainActor package static func of<Command: JobCommand>(_ type: Command.Type) -> CommandEntry {
        CommandEntry(spec: Command.spec, make: { (options: ParsedOptions) throws(UsageError) -> any JobCommand in
            try Command(options: options)
        })
    }
}

/// The edge of both executables: arguments and environment are read here, once, and flow down
/// as values. Usage errors are found before MPI starts, so every rank reaches the same verdict
/// without a collective; only world rank 0 (known from mpirun's environment before MPI_Init)
/// prints them, so N ranks do not print N copies. A `JobFailure` is printed by its reporting
/// rank and every rank exits with its code; any other error ends the whole job (`MPI_Abort`),
/// since other ranks may be blocked in a collective.
@MainActor
package struct JobMain {
    /// `moe` or `moe-bench`.
    package let tool: String
    package let commands: [CommandEntry]
    /// The general help's first lines and last line.
    package let headline: String
    package let footer: String
    package let version: String?

    package init(tool: String, commands: [CommandEntry], headline: String, footer: String, version: String? = nil) {
        self.tool = tool
        self.commands = commands
        self.headline = headline
        self.footer = footer
        self.version = version
    }

    /// World rank from mpirun's environment (0 without mpirun), before MPI starts.
    package static let launcherRank = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_RANK"].flatMap(Int.init) ?? 0

    package var generalHelp: String {
        var lines = [headline, "", "usage: mpirun -np N \(tool) <command> [options]     (or without mpirun: one rank)", "", "commands:"]
        let width = (commands.map(\.spec.name.count).max() ?? 0) + 2
        for command in commands {
            lines.append("  " + command.spec.name.padding(toLength: width, withPad: " ", startingAt: 0) + command.spec.summary)
        }
        lines += ["", footer]
        return lines.joined(separator: "\n")
    }

    /// Runs the command line (without the program name); returns the exit status.
    package func run(_ arguments: [String]) -> Int32 {
        let rank = Self.launcherRank
        guard let commandName = arguments.first, !["--help", "-h", "help"].contains(commandName) else {
            if rank == 0 { print(generalHelp) }
            return arguments.isEmpty ? 2 : 0
        }
        if commandName == "--version", let version {
            if rank == 0 { print(version) }
            return 0
        }
        guard let entry = commands.first(where: { $0.spec.name == commandName }) else {
            if rank == 0 {
                writeStandardError("\(tool): error: \(UsageError.unknownCommand(commandName, known: commands.map(\.spec.name)))\n")
            }
            return 2
        }
        let command: any JobCommand
        var commandLine: [(key: String, value: String)] = [("command", commandName)]
        do {
            let options = try ParsedOptions(arguments: Array(arguments.dropFirst()), spec: entry.spec)
            if options.helpRequested {
                if rank == 0 { print(entry.spec.helpText.replacingOccurrences(of: "usage: moe ", with: "usage: \(tool) ")) }
                return 0
            }
            command = try entry.make(options)
            for option in entry.spec.options {
                let value = option.valueName == nil ? (options.flag(option.name) ? "given" : "not given") : (options.string(option.name) ?? "not given")
                commandLine.append(("--" + option.name, value))
            }
            commandLine.append(("arguments", options.positional.joined(separator: " ")))
        } catch {
            if rank == 0 { writeStandardError("\(tool) \(commandName): error: \(error)\n(see '\(tool) \(commandName) --help')\n") }
            return 2
        }

        let context = JobContext()
        context.commandLine = commandLine
        do {
            try command.run(context)
            context.finish()
            return 0
        } catch let failure as any AgreedFailure where failure.agreedReportingRank != nil {
            let here = context.isMPIStarted ? ((try? context.world().rank) ?? rank) : rank
            let message = failure.description
            if here == failure.agreedReportingRank, !message.isEmpty { writeStandardError("\(tool): error: \(message)\n") }
            context.finish()
            return failure.exitCode
        } catch {
            if context.isMPIStarted, let world = try? context.world(), world.size > 1 {
                (try? context.mpi())?.abortAll("\(tool): error on rank \(world.rank): \(error)")
            }
            writeStandardError("\(tool): error: \(error)\n")
            context.finish()
            return 1
        }
    }
}
