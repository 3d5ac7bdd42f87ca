import ArgumentParsing
import MessagePassing

/// A `moe` subcommand: its options are declared once in `spec`; `init(options:)` validates them
/// without MPI (so a bad flag never starts a collective); `run` does the work.
@MainActor
protocol Subcommand {
    static var spec: CommandSpec { get }
    init(options: ParsedOptions) throws(UsageError)
    func run(_ context: RunContext) throws
}

/// A subcommand as the dispatcher sees it: its declaration and how to build it from parsed
/// options. (A table of closures rather than `any Subcommand.Type`: calling a typed-throws
/// `init` through an existential metatype crashes the Swift 6.3 compiler.)
struct SubcommandEntry {
    let spec: CommandSpec
    let make: @MainActor (ParsedOptions) throws(UsageError) -> any Subcommand

    @MainActor static func of<Command: Subcommand>(_ type: Command.Type) -> SubcommandEntry {
        SubcommandEntry(spec: Command.spec, make: { (options: ParsedOptions) throws(UsageError) -> any Subcommand in
            try Command(options: options)
        })
    }
}

/// Every subcommand, in the order `moe --help` lists them.
@MainActor
let allSubcommands: [SubcommandEntry] = [
    .of(RunCommand.self), .of(TopologyCommand.self), .of(ExchangeCheckCommand.self), .of(RouteCommand.self),
    .of(InitWeightsCommand.self), .of(ReferenceCommand.self), .of(StatsCommand.self),
]

/// The general help text.
@MainActor
func generalHelp() -> String {
    var lines = [
        "moe — SwiftMoE, an expert-parallel Mixture-of-Experts runtime on OpenMPI and OpenBLAS",
        "",
        "usage: mpirun -np N moe <command> [options]     (or without mpirun: one rank)",
        "",
        "commands:",
    ]
    let width = (allSubcommands.map(\.spec.name.count).max() ?? 0) + 2
    for command in allSubcommands {
        lines.append("  " + command.spec.name.padding(toLength: width, withPad: " ", startingAt: 0) + command.spec.summary)
    }
    lines += ["", "Run 'moe <command> --help' for a command's options. Launch/run starts a job on simulated nodes."]
    return lines.joined(separator: "\n")
}

/// "1 rank", "4 ranks".
func plural(_ count: Int, _ noun: String) -> String { "\(count) \(noun)\(count == 1 ? "" : "s")" }
