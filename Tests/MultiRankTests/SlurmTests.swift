import FileFormats
import Foundation
import Testing

/// True when a Slurm cluster of namespace nodes can be made: network namespaces (root) and
/// Slurm's daemons and clients installed (`Launch/test` installs slurm-wlm as root).
let slurmAvailable: Bool = {
    let fm = FileManager.default
    return networkNamespacesAvailable && ["/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch", "/usr/bin/srun"].allSatisfy {
        fm.isExecutableFile(atPath: $0)
    }
}()

/// The Slurm cluster's job folder (removed by `down`).
private let slurmJobs = "/run/swiftmoe-sim-cluster/slurm/jobs"

/// `Launch/sim-cluster slurm ARGS` (a Slurm client in node 0).
private func slurm(_ arguments: [String]) throws -> (status: Int32, output: String) { try simCluster(["slurm"] + arguments) }

/// Submits `Launch/slurm/moe.sbatch MOE-ARGS` on 2 nodes × 2 tasks; returns the job id.
private func submit(_ moeArguments: [String], wait: Bool, name: String, sbatch extra: [String] = []) throws -> (id: String, output: String, status: Int32) {
    let result = try slurm(["sbatch", "--parsable", "--nodes", "2", "--ntasks-per-node", "2", "--chdir", slurmJobs] + extra + ["--output", "\(slurmJobs)/\(name).out",
                            "--error", "\(slurmJobs)/\(name).err", "--export", "ALL,MOE=\(moeExecutable)"] + (wait ? ["--wait"] : [])
                           + ["\(repositoryRoot)/Launch/slurm/moe.sbatch"] + moeArguments)
    let id = result.output.split(separator: "\n").first.map { String($0).trimmingCharacters(in: .whitespaces) } ?? ""
    return (id, result.output + ((try? String(contentsOfFile: "\(slurmJobs)/\(name).out", encoding: .utf8)) ?? "")
                + ((try? String(contentsOfFile: "\(slurmJobs)/\(name).err", encoding: .utf8)) ?? ""), result.status)
}

/// Waits up to `seconds` for `condition`; returns whether it held.
private func waitFor(_ seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        Thread.sleep(forTimeInterval: 0.2)
    }
    return condition()
}

private func jobIsQueued(_ id: String) -> Bool {
    ((try? slurm(["squeue", "-h", "-j", id]))?.output ?? "").contains(id)
}

extension MultiRankTests {
@Suite("Under Slurm: sbatch and srun on a Slurm cluster of namespace nodes", .serialized,
       .enabled(if: slurmAvailable, "needs root, network namespaces and slurm-wlm (Launch/test installs it as root)"))
struct SlurmTests {
    @Test("sbatch exchange-check and run (equal to the reference), srun directly, mpirun inside an allocation, scancel mid-run and the time limit: clean stop, outputs intact, the exit code is moe's")
    func slurmCluster() throws {
        _ = try simCluster(["down"])
        defer {
            _ = try? simCluster(["down"])
            let left = (try? simCluster(["status"]))?.output ?? ""
            #expect(left.contains("nothing is up"), "after down: \(left)")
            // Daemons end within moments of 'down' (a daemon's exiting parent may linger as a zombie briefly).
            var daemons = ""
            let gone = waitFor(10) {
                daemons = (try? runProcess("/usr/bin/env", ["pgrep", "-l", "slurm"]))?.stdout ?? ""
                return daemons.isEmpty
            }
            #expect(gone, "Slurm processes left after down: \(daemons)")
        }
        let up = try simCluster(["up", "2", "--slurm"])
        try #require(up.status == 0, "\(up.output)")
        #expect(up.output.contains("Slurm up"), "\(up.output)")

        // 1. A batch job of exchange-check across the two nodes.
        let check = try submit(["exchange-check", "--trials", "8", "--max-rows", "24", "--json", "\(slurmJobs)/check.json"], wait: true, name: "check")
        #expect(check.output.contains("moe exited with status 0"), "\(check.output)")
        let report = try readJSONObject("\(slurmJobs)/check.json")
        #expect(report["passed"] as? Bool == true && report["nodes"] as? Int == 2, "\(check.output)")

        // 2. A batch job of moe run, compared with the single-process reference of the same job;
        //    relative paths land in the job's working folder (--chdir).
        let model = "\(repositoryRoot)/Models/test-gelu.json"
        let run = try submit(["run", "--model", model, "--tokens-per-rank", "21", "--steps", "2", "--quiet", "--output", "run.npy",
                              "--routing-output", "run.json", "--stats", "run-stats.jsonl"], wait: true, name: "run")
        #expect(FileManager.default.fileExists(atPath: "\(slurmJobs)/run-stats.jsonl"), "the stats log is in the job's working folder")
        #expect(run.output.contains("moe exited with status 0"), "\(run.output)")
        let scratch = try ScratchDirectory()
        let reference = try runMoe(["reference", "--model", model, "--tokens-per-rank", "21", "--steps", "2", "--ranks", "4",
                                    "--output", scratch.file("ref.npy"), "--routing-output", scratch.file("ref.json")])
        try #require(reference.status == 0, "\(reference.stderr)")
        expectClose(try #require(try NpyArray.load(path: "\(slurmJobs)/run.npy").float32Values),
                    try #require(try NpyArray.load(path: scratch.file("ref.npy")).float32Values), "moe run under sbatch")
        #expect(try routingDecisions("\(slurmJobs)/run.json") == routingDecisions(scratch.file("ref.json")))

        // 3. srun directly, with an error: the exit code is moe's (2 for a usage error).
        let direct = try slurm(["srun", "--nodes", "2", "--ntasks-per-node", "2", moeExecutable, "exchange-check", "--trials", "4"])
        #expect(direct.status == 0 && direct.output.contains("exchange check passed"), "\(direct.output)")
        let usage = try slurm(["srun", "--nodes", "2", "--ntasks-per-node", "1", moeExecutable, "run", "--steps", "0"])
        #expect(usage.status == 2, "srun's exit code is moe's: \(usage.status)\n\(usage.output)")

        // mpirun inside an allocation: it starts its daemons through Slurm and places the ranks on the allocation's nodes.
        let inside = try slurm(["salloc", "--nodes", "2", "--ntasks-per-node", "2", "mpirun", "--bind-to", "none", moeExecutable, "topology"])
        #expect(inside.status == 0 && inside.output.contains("smoe-node0: ranks 0, 1") && inside.output.contains("smoe-node1: ranks 2, 3"), "\(inside.output)")

        // 4. scancel --signal=TERM mid-run (what --signal=TERM@T and mpirun forwarding deliver):
        //    every rank finishes its step, writes the outputs and exits 143; the job's exit code is 143.
        let long = ["run", "--model", model, "--tokens-per-rank", "16", "--steps", "1000000", "--quiet", "--stats-every", "1"]
        let stopped = try submit(long + ["--output", "\(slurmJobs)/stopped.npy", "--stats", "\(slurmJobs)/stopped.jsonl"], wait: false, name: "stopped")
        try #require(waitFor(60) { FileManager.default.fileExists(atPath: "\(slurmJobs)/stopped.jsonl.partial") }, "the job never started: \(stopped.output)")
        let signalled = Date()
        _ = try slurm(["scancel", "--signal=TERM", stopped.id])
        #expect(waitFor(20) { !jobIsQueued(stopped.id) }, "job \(stopped.id) still queued 20 s after SIGTERM")
        #expect(Date().timeIntervalSince(signalled) < 20)
        let stoppedOutput = (try? String(contentsOfFile: "\(slurmJobs)/stopped.out", encoding: .utf8)) ?? ""
        let stoppedErrors = (try? String(contentsOfFile: "\(slurmJobs)/stopped.err", encoding: .utf8)) ?? ""
        #expect(stoppedOutput.contains("moe exited with status 143"), "\(stoppedOutput)\n\(stoppedErrors)")
        #expect(stoppedErrors.contains("stopped by SIGTERM after step"), "\(stoppedErrors)")
        let shape = try NpyArray.load(path: "\(slurmJobs)/stopped.npy").shape
        #expect(shape == [64, 32], "the output holds every rank's tokens of the last step: \(shape)")
        let log = try String(contentsOfFile: "\(slurmJobs)/stopped.jsonl", encoding: .utf8)
        #expect(!log.isEmpty && !FileManager.default.fileExists(atPath: "\(slurmJobs)/stopped.jsonl.partial"), "the stats log was finished")

        // 5. Plain scancel (the job is cancelled, as at its time limit): it ends within seconds
        //    and leaves the files of the steps it finished, never a half-written one.
        let cancelled = try submit(long + ["--output", "\(slurmJobs)/cancelled.npy"], wait: false, name: "cancelled")
        try #require(waitFor(60) { ((try? slurm(["squeue", "-h", "-j", cancelled.id, "-o", "%T"]))?.output ?? "").contains("RUNNING") })
        Thread.sleep(forTimeInterval: 3)
        let cancelledAt = Date()
        _ = try slurm(["scancel", cancelled.id])
        #expect(waitFor(20) { !jobIsQueued(cancelled.id) }, "job \(cancelled.id) still queued 20 s after scancel")
        #expect(Date().timeIntervalSince(cancelledAt) < 20)
        if FileManager.default.fileExists(atPath: "\(slurmJobs)/cancelled.npy") {
            #expect(try NpyArray.load(path: "\(slurmJobs)/cancelled.npy").shape == [64, 32])
        }
        let partials = (try FileManager.default.contentsOfDirectory(atPath: slurmJobs)).filter { $0.contains(".partial-") }
        #expect(partials.isEmpty, "half-written files: \(partials)")

        // 6. The time limit: with the early SIGTERM the batch script asks for (--signal=TERM@T),
        //    a one-minute job stops itself cleanly before its limit; sbatch --wait returns 143.
        let started = Date()
        let limited = try submit(long + ["--output", "limited.npy"], wait: true, name: "limited", sbatch: ["--time", "1", "--signal", "TERM@50"])
        #expect(limited.status == 143, "sbatch --wait returned \(limited.status): \(limited.output)")
        #expect(Date().timeIntervalSince(started) < 70, "the job ran to its limit")
        #expect(limited.output.contains("stopped by SIGTERM after step") && limited.output.contains("moe exited with status 143"), "\(limited.output)")
        #expect(try NpyArray.load(path: "\(slurmJobs)/limited.npy").shape == [64, 32])
    }
}
}

extension MultiRankTests {
@Suite("SIGTERM ends a run cleanly")
struct TerminationTests {
    @Test("SIGTERM to every rank mid-run: the step in flight finishes, outputs and the stats log are written, exit 143")
    func sigtermStopsAfterTheStep() throws {
        let scratch = try ScratchDirectory()
        let output = scratch.file("out.npy"), stats = scratch.file("stats.jsonl")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2", moeExecutable, "run",
                             "--model", "\(repositoryRoot)/Models/test-relu.json", "--tokens-per-rank", "16", "--steps", "1000000", "--quiet",
                             "--stats-every", "1", "--output", output, "--stats", stats]
        var environment = ProcessInfo.processInfo.environment
        environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        process.environment = environment
        _ = FileManager.default.createFile(atPath: scratch.file("log"), contents: nil)
        let log = FileHandle(forWritingAtPath: scratch.file("log"))
        process.standardOutput = log
        process.standardError = log
        try process.run()
        let started = waitFor(60) { FileManager.default.fileExists(atPath: stats + ".partial") }
        Thread.sleep(forTimeInterval: 1)
        // Signal the ranks themselves (as Slurm does), not mpirun.
        _ = try runProcess("/usr/bin/env", ["pkill", "-TERM", "-f", "^\(moeExecutable) run .*\(output)"])
        let ended = waitFor(30) { !process.isRunning }
        if !ended { process.terminate() }
        process.waitUntilExit()
        try? log?.close()
        let text = (try? String(contentsOfFile: scratch.file("log"), encoding: .utf8)) ?? ""
        try #require(started && ended, "started \(started), ended \(ended): \(text)")
        #expect(process.terminationStatus == 143, "\(text)")
        #expect(text.contains("stopped by SIGTERM after step"), "\(text)")
        #expect(try NpyArray.load(path: output).shape == [32, 24], "\(text)")
        #expect(FileManager.default.fileExists(atPath: stats) && !FileManager.default.fileExists(atPath: stats + ".partial"), "\(text)")
    }
}
}
