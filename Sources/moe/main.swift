import Foundation
import JobControl
import MessagePassing

// The moe executable: its commands, run through the job control shared with moe-bench.
let status = MainActor.assumeIsolated {
    JobMain(
        tool: "moe", commands: allSubcommands,
        headline: "moe — SwiftMoE, an expert-parallel Mixture-of-Experts runtime on OpenMPI and OpenBLAS",
        footer: "Run 'moe <command> --help' for a command's options. Launch/run starts a job on simulated nodes.",
        version: "moe (SwiftMoE) 0.1, built against \(MPIRuntime.libraryVersion())"
    ).run(Array(CommandLine.arguments.dropFirst()))
}
fflush(nil)  // every output stream, before exit(3) skips Swift-side buffers
exit(status)
