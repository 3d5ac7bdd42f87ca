import JobControl

/// Every subcommand, in the order `moe --help` lists them.
@MainActor
let allSubcommands: [CommandEntry] = [
    .of(RunCommand.self), .of(GenerateCommand.self), .of(TopologyCommand.self), .of(ExchangeCheckCommand.self), .of(RouteCommand.self),
    .of(InitWeightsCommand.self), .of(ImportCommand.self), .of(ReferenceCommand.self), .of(StatsCommand.self), .of(PlacementCommand.self),
]

/// "1 rank", "4 ranks".
func plural(_ count: Int, _ noun: String) -> String { "\(count) \(noun)\(count == 1 ? "" : "s")" }
