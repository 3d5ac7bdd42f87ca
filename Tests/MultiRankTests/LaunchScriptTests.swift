import Foundation
import Testing

/// Runs a script from Launch/ and returns (status, stdout + stderr).
func runScript(_ script: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/bash")
    process.arguments = ["\(repositoryRoot)/Launch/\(script)"] + arguments
    let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("moe-script-\(UUID())").path
    _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    let output = FileHandle(forWritingAtPath: outputPath)
    process.standardOutput = output
    process.standardError = output
    try process.run()
    process.waitUntilExit()
    try? output?.close()
    return (process.terminationStatus, (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")
}

extension MultiRankTests {
@Suite("Launch scripts")
struct LaunchScriptTests {
    @Test("Launch/cluster --dry-run prints mpirun over the hostfile with N ranks per node")
    func clusterDryRun() throws {
        let hostfile = FileManager.default.temporaryDirectory.appendingPathComponent("moe-hosts-\(UUID())").path
        try "# cluster\nnodeA slots=8\nnodeB slots=8\n\nnodeC\n".write(toFile: hostfile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: hostfile) }
        let (status, output) = try runScript("cluster", ["--hostfile", hostfile, "--ranks-per-node", "4", "--moe", "/shared/moe",
                                                         "--dry-run", "--", "exchange-check", "--trials", "3"])
        #expect(status == 0, "\(output)")
        #expect(output == "mpirun --hostfile \(hostfile) -np 12 --map-by ppr:4:node --bind-to core -x OPENBLAS_NUM_THREADS=1 /shared/moe exchange-check --trials 3 \n")
    }

    @Test("Launch/cluster refuses a missing hostfile and a bad rank count with one clear line")
    func clusterErrors() throws {
        let missing = try runScript("cluster", ["--hostfile", "/no/hosts", "--ranks-per-node", "2", "--dry-run", "--", "topology"])
        #expect(missing.status != 0 && missing.output == "error: hostfile '/no/hosts' not found\n")
        let badCount = try runScript("cluster", ["--hostfile", "/etc/hostname", "--ranks-per-node", "0", "--dry-run", "--", "topology"])
        #expect(badCount.status != 0 && badCount.output == "error: --ranks-per-node must be a positive integer, got '0'\n")
    }
}
}
