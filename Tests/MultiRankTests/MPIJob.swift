import Foundation
import Testing

/// The repository root, found from this source file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().path

/// The `moe` executable that `swift test` built beside this test bundle.
let moeExecutable: String = {
    if let override = ProcessInfo.processInfo.environment["MOE_EXECUTABLE"] { return override }
    let testBinary = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: testBinary).deletingLastPathComponent().appendingPathComponent("moe").path
}()

/// The `moe-bench` executable beside `moe`.
let benchExecutable: String = URL(fileURLWithPath: moeExecutable).deletingLastPathComponent().appendingPathComponent("moe-bench").path

/// What one rank printed and how it ended.
struct RankOutput {
    let stdout: String
    let stderr: String
    /// The rank's own exit status, recorded by the wrapper shell around it (nil if it never got
    /// to record one: killed by a signal or by mpirun).
    let exitStatus: Int32?
}

/// One finished `mpirun` job.
struct MPIJobResult: CustomStringConvertible {
    let command: String
    let mpirunStatus: Int32
    let mpirunOutput: String
    let ranks: [RankOutput]

    var allStdout: String { ranks.map(\.stdout).joined() }
    var allStderr: String { ranks.map(\.stderr).joined() }

    /// Everything, for a failing expectation's comment.
    var description: String {
        var text = "$ \(command)\nmpirun exit status \(mpirunStatus)\n"
        for (rank, output) in ranks.enumerated() {
            text += "--- rank \(rank) (exit \(output.exitStatus.map(String.init) ?? "none")) stdout:\n\(output.stdout)--- rank \(rank) stderr:\n\(output.stderr)"
        }
        return text + "--- mpirun:\n\(mpirunOutput)"
    }
}

/// mpirun's own reaction to a rank that exits non-zero is to kill the others at once; with this
/// setting it waits for every rank instead, so a test can see that each rank decided to fail on
/// its own (and `--timeout` still ends a rank that would hang). mpirun then exits 0 whatever
/// the ranks did, so tests that use it assert the ranks' own statuses.
let waitForEveryRank = ["--mca", "orte_abort_on_non_zero_status", "0"]

/// Launches `mpirun -np ranks moe arguments...` as a child process and waits for it.
///
/// Each rank runs inside a tiny shell wrapper that appends its exit status to its stdout, so a
/// test can assert that *every* rank ended with a failure, not just the first one mpirun saw.
/// Output goes to files (`--output-filename`), never pipes: a full pipe would deadlock a chatty
/// job. `--timeout` makes mpirun kill a hung job, so a test cannot hang forever; afterwards the
/// helper waits for every process of this `moe` binary to be gone, and records any that is not.
func runMPI(ranks: Int, _ arguments: [String], timeoutSeconds: Int = 120, extraMPIArguments: [String] = [],
            executable: String = moeExecutable) throws -> MPIJobResult {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("moe-mpi-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let mpirunLog = directory + "/mpirun.log"
    _ = FileManager.default.createFile(atPath: mpirunLog, contents: nil)

    let wrapper = #""$0" "$@"; status=$?; echo "@@rank-exit-status $status"; exit $status"#
    let mpiArguments = ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "--timeout", String(timeoutSeconds),
                        "--output-filename", directory + "/ranks", "-np", String(ranks)]
        + extraMPIArguments + ["sh", "-c", wrapper, executable] + arguments
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["mpirun"] + mpiArguments
    process.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
    var environment = ProcessInfo.processInfo.environment
    environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    environment["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
    process.environment = environment
    let log = FileHandle(forWritingAtPath: mpirunLog)
    process.standardOutput = log
    process.standardError = log
    process.standardInput = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    try? log?.close()

    let ranksDirectory = directory + "/ranks/1"
    let outputs = (0..<ranks).map { rank -> RankOutput in
        // OpenMPI pads rank numbers to the width of the largest one (rank.00 … rank.11 for 12 ranks).
        let label = String(repeating: "0", count: max(0, String(ranks - 1).count - String(rank).count)) + String(rank)
        let read = { (name: String) in (try? String(contentsOfFile: "\(ranksDirectory)/rank.\(label)/\(name)", encoding: .utf8)) ?? "" }
        var stdout = read("stdout")
        var exitStatus: Int32?
        if let marker = stdout.range(of: "@@rank-exit-status ", options: .backwards) {
            exitStatus = Int32(stdout[marker.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines))
            stdout = String(stdout[..<marker.lowerBound])
        }
        return RankOutput(stdout: stdout, stderr: read("stderr"), exitStatus: exitStatus)
    }
    let result = MPIJobResult(
        command: "mpirun " + mpiArguments.joined(separator: " "), mpirunStatus: process.terminationStatus,
        mpirunOutput: (try? String(contentsOfFile: mpirunLog, encoding: .utf8)) ?? "", ranks: outputs)
    let leftovers = waitForNoProcesses(of: executable)
    #expect(leftovers.isEmpty, "processes left behind after the job: \(leftovers)\n\(result)")
    return result
}

/// Process ids whose command line runs `executable`, after waiting up to 10 s for them to end.
func waitForNoProcesses(of executable: String) -> [Int32] {
    var remaining: [Int32] = []
    for _ in 0..<100 {
        remaining = processes(running: executable)
        if remaining.isEmpty { return [] }
        usleep(100_000)
    }
    return remaining
}

private func processes(running executable: String) -> [Int32] {
    let own = getpid()
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap { entry -> Int32? in
        guard let pid = Int32(entry), pid != own,
              let commandLine = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return nil }
        let first = commandLine.split(separator: 0).first.map { String(decoding: $0, as: UTF8.self) }
        return first == executable ? pid : nil
    }
}

/// Reads a JSON file a job wrote, as a dictionary.
func readJSONObject(_ path: String) throws -> [String: Any] {
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
}
