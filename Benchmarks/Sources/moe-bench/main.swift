import Foundation
import JobControl

// moe-bench: communication and compute benchmarks for SwiftMoE (results: Benchmarks/README.md),
// run through the job control shared with moe.
let status = MainActor.assumeIsolated {
    JobMain(
        tool: "moe-bench",
        commands: [.of(LayerBenchmark.self), .of(AllToAllBenchmark.self), .of(PackBenchmark.self), .of(ProjectBenchmark.self),
                   .of(CapacityBenchmark.self)],
        headline: "moe-bench — SwiftMoE benchmarks",
        footer: "Run 'moe-bench <benchmark> --help' for its options."
    ).run(Array(CommandLine.arguments.dropFirst()))
}
fflush(nil)
exit(status)
