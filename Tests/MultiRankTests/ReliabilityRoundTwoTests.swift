import Foundation
import Testing

extension MultiRankTests {
/// Issue 18's points: no clobbered files, bounded reads of special files, one configuration on
/// every rank, no traps from input. Device nodes are private ones made with `mknod` in a scratch
/// folder (root only; skipped with a note otherwise), never the machine's own.
@Suite("Reliability, round two — outputs, special files, one configuration", .serialized)
struct ReliabilityRoundTwoTests {
    let isRoot = getuid() == 0

    /// A scratch folder under /tmp, removed afterwards.
    final class Folder {
        let path: String
        init() throws {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("moe-r2-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }
        func file(_ name: String) -> String { path + "/" + name }
    }

    /// glibc's `makedev` (a macro Swift does not import) for small major and minor numbers.
    func deviceNumber(_ major: UInt64, _ minor: UInt64) -> dev_t { dev_t((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) }

    func kind(_ path: String) -> mode_t {
        var status = stat()
        return lstat(path, &status) == 0 ? status.st_mode & S_IFMT : 0
    }

    /// The lines of stderr that are moe's own messages.
    func errorLines(_ stderr: String) -> [Substring] { stderr.split(separator: "\n").filter { $0.hasPrefix("moe") } }

    @Test("an output that is a FIFO, a symbolic link, an input or another output, or in a missing folder is refused before any work; files intact")
    func refusedOutputs() throws {
        let folder = try Folder()
        let weights = folder.file("w.safetensors")
        #expect(try runMoe(["init-weights", "--model", "Models/test-gelu.json", "--output", weights]).status == 0)
        let original = try Data(contentsOf: URL(fileURLWithPath: weights))
        #expect(mkfifo(folder.file("fifo"), 0o644) == 0)
        #expect(symlink(weights, folder.file("link")) == 0)
        let run = ["run", "--model", "Models/test-gelu.json", "--tokens-per-rank", "8", "--steps", "1", "--quiet"]
        let cases: [([String], String)] = [
            (["--output", folder.file("fifo")], "exists and is a FIFO (named pipe); refusing to replace it"),
            (["--output", folder.file("link")], "is a symbolic link; refusing to replace it"),
            (["--weights", weights, "--output", weights], "is the same file as --weights"),
            (["--output", folder.file("o.npy"), "--report", folder.file("o.npy")], "is the same file as --output"),
            (["--output", folder.file("missing/o.npy")], "the folder \(folder.file("missing")) does not exist"),
            (["--model", "Models/test-gelu.json", "--report", "Models/test-gelu.json"], "is the same file as --model"),
        ]
        for (arguments, expected) in cases {
            let result = try runMoe(run + arguments)
            #expect(result.status == 1, "\(arguments): \(result)")
            let lines = errorLines(result.stderr)
            #expect(lines.count == 1 && lines[0].contains(expected), "\(arguments): \(result.stderr)")
        }
        #expect(kind(folder.file("fifo")) == S_IFIFO && kind(folder.file("link")) == S_IFLNK)
        #expect(try Data(contentsOf: URL(fileURLWithPath: weights)) == original, "the weights were not touched")
    }

    @Test("a private character device as output is refused and stays a device; /dev/null is written through", .enabled(if: getuid() == 0, "needs root for mknod"))
    func deviceOutputs() throws {
        let folder = try Folder()
        let device = folder.file("null-copy")
        #expect(mknod(device, S_IFCHR | 0o666, deviceNumber(1, 3)) == 0)
        let result = try runMoe(["init-weights", "--model", "Models/test-gelu.json", "--output", device])
        #expect(result.status == 1 && result.stderr.contains("exists and is a character device"), "\(result)")
        #expect(kind(device) == S_IFCHR, "still a device")
        let null = try runMoe(["init-weights", "--model", "Models/test-gelu.json", "--output", "/dev/null"])
        #expect(null.status == 0, "\(null)")
        #expect(kind("/dev/null") == S_IFCHR)
    }

    @Test("an output named by one bare letter, in the current folder, is written (no trap)")
    func bareName() throws {
        let folder = try Folder()
        let result = try runProcess("/bin/sh", ["-c", "cd '\(folder.path)' && exec '\(moeExecutable)' init-weights --model '\(repositoryRoot)/Models/test-gelu.json' --output a"])
        #expect(result.status == 0, "\(result)")
        #expect(kind(folder.file("a")) == S_IFREG)
    }

    @Test("a temporary left by a killed writer is removed by the next write to that file")
    func staleTemporary() throws {
        let folder = try Folder()
        let stale = folder.file(".w.safetensors.partial-2147483000")
        #expect(FileManager.default.createFile(atPath: stale, contents: Data([1, 2, 3])))
        #expect(try runMoe(["init-weights", "--model", "Models/test-gelu.json", "--output", folder.file("w.safetensors")]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: stale))
    }

    @Test("special files as inputs are refused at once: a FIFO with no writer does not block, a device does not grow memory")
    func specialInputs() throws {
        let folder = try Folder()
        #expect(mkfifo(folder.file("fifo"), 0o644) == 0)
        var cases: [([String], String)] = [
            (["topology", "--validate", "--topology", folder.file("fifo")], "is a FIFO (named pipe), not a regular file"),
            (["run", "--model", folder.file("fifo"), "--steps", "1"], "is a FIFO (named pipe), not a regular file"),
            (["run", "--model", "Models/test-gelu.json", "--input", folder.file("fifo"), "--steps", "1"], "is a FIFO (named pipe), not a regular file"),
            (["run", "--model", "Models/test-gelu.json", "--weights", folder.file("fifo"), "--steps", "1"], "is a FIFO (named pipe), not a regular file"),
            (["stats", folder.file("fifo")], "is a FIFO (named pipe), not a regular file"),
        ]
        if isRoot {
            #expect(mknod(folder.file("zero"), S_IFCHR | 0o666, deviceNumber(1, 5)) == 0)
            cases.append((["topology", "--validate", "--topology", folder.file("zero")], "is a character device, not a regular file"))
        }
        for (arguments, expected) in cases {
            let started = Date()
            let result = try runMoe(arguments)
            #expect(result.status == 1, "\(arguments): \(result)")
            #expect(result.stderr.contains(expected), "\(arguments): \(result.stderr)")
            #expect(Date().timeIntervalSince(started) < 20, "\(arguments) returned at once")
        }
    }

    @Test("ranks launched with different options (MPMD) stop in the first collective with one line naming what differs")
    func differentConfigurations() throws {
        let wrapper = #""$0" "$@"; status=$?; echo "@@rank-exit-status $status"; exit $status"#
        let common = ["run", "--model", "Models/test-gelu.json", "--tokens-per-rank", "8", "--steps", "2", "--quiet"]
        let started = Date()
        let job = try runMPI(ranks: 2, common + ["--exchange", "pairwise", ":", "-np", "2", "sh", "-c", wrapper, moeExecutable] + common + ["--exchange", "linear"],
                             timeoutSeconds: 60, extraMPIArguments: waitForEveryRank)
        #expect(job.ranks.allSatisfy { $0.exitStatus == 1 }, "\(job)")
        #expect(job.allStderr == "moe: error: the ranks do not run the same command line: --exchange: 'pairwise' on ranks 0-1, 'linear' on ranks 2-3\n", "\(job)")
        #expect(Date().timeIntervalSince(started) < 50, "no hang")
        let seeds = try runMPI(ranks: 1, common + ["--seed", "3", ":", "-np", "2", "sh", "-c", wrapper, moeExecutable] + common + ["--seed", "4"],
                               timeoutSeconds: 60, extraMPIArguments: waitForEveryRank)
        #expect(seeds.allStderr.contains("--seed: '3' on rank 0, '4' on ranks 1-2"), "\(seeds)")
    }
}
}

extension MultiRankTests.ReliabilityRoundTwoTests {
    @Test("options that cannot apply are refused with exit 2, not ignored")
    func inapplicableOptions() throws {
        let run = ["run", "--model", "Models/test-gelu.json", "--tokens-per-rank", "8", "--steps", "2", "--quiet"]
        let job = try runMPI(ranks: 2, run + ["--hang-rank", "5@1"], timeoutSeconds: 60, extraMPIArguments: waitForEveryRank)
        #expect(job.ranks.allSatisfy { $0.exitStatus == 2 }, "\(job)")
        #expect(job.allStderr == "moe: error: run: --hang-rank 5@1: the job has ranks 0...1\n", "\(job)")
        let late = try runMoe(run + ["--kill-rank", "0@3"])
        #expect(late.status == 2 && late.stderr.contains("--kill-rank 0@3: the job runs 2 steps"), "\(late)")
        let withoutInput = try runMoe(run + ["--task-ids", "ids.npy"])
        #expect(withoutInput.status == 2 && withoutInput.stderr.contains("without --input the tasks are generated"), "\(withoutInput)")
        let folder = try Folder()
        let input = folder.file("h.npy")
        let ids = folder.file("ids.npy")
        try writeNpyFloat32(path: input, rows: 4, columns: 32)
        try writeNpyInt64(path: ids, values: [0, 1, 0, 1])
        let gateModel = try runMoe(run + ["--input", input, "--task-ids", ids])
        #expect(gateModel.status == 2 && gateModel.stderr.contains("routes by gate (it has no task_experts)"), "\(gateModel)")
    }

    func writeNpyFloat32(path: String, rows: Int, columns: Int) throws {
        try npy(descr: "<f4", shape: "(\(rows), \(columns))", data: (0..<rows * columns).flatMap { withUnsafeBytes(of: Float($0 % 7) * 0.1) { Array($0) } }, path: path)
    }

    func writeNpyInt64(path: String, values: [Int64]) throws {
        try npy(descr: "<i8", shape: "(\(values.count),)", data: values.flatMap { withUnsafeBytes(of: $0.littleEndian) { Array($0) } }, path: path)
    }

    private func npy(descr: String, shape: String, data: [UInt8], path: String) throws {
        let header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }"
        let padded = header + String(repeating: " ", count: 128 - 10 - header.count - 1) + "\n"
        let bytes: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(padded.count), 0] + Array(padded.utf8) + data
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }
}

extension MultiRankTests.ReliabilityRoundTwoTests {
    @Test("moe stats reads the complete lines of a torn log, names line and column of a bad one, and refuses negative counts")
    func statsLog() throws {
        let folder = try Folder()
        let log = folder.file("stats.jsonl")
        let run = try runMoe(["run", "--model", "Models/test-gelu.json", "--tokens-per-rank", "16", "--steps", "3", "--quiet", "--stats", log])
        #expect(run.status == 0, "\(run)")
        let text = try String(contentsOfFile: log, encoding: .utf8)
        let lines = text.split(separator: "\n")
        #expect(lines.count == 3)
        // Cut in the middle of the last line, as a killed writer could leave it.
        try (lines[0] + "\n" + lines[1] + "\n" + lines[2].prefix(40)).write(toFile: log, atomically: true, encoding: .utf8)
        let torn = try runMoe(["stats", log])
        #expect(torn.status == 0 && torn.stdout.contains("2 steps") && torn.stderr.contains("line 3 is incomplete"), "\(torn)")
        try (lines[0] + "\n" + lines[1].prefix(40) + "\n").write(toFile: log, atomically: true, encoding: .utf8)
        let bad = try runMoe(["stats", log])
        #expect(bad.status == 1 && bad.stderr.contains("stats.jsonl: line 2, column 41:"), "\(bad)")
        let negative = String(lines[0]).replacingOccurrences(of: "\"step\":0", with: "\"step\":-4")
        #expect(negative != String(lines[0]), "the log writes \"step\":0 on its first line")
        try (negative + "\n").write(toFile: log, atomically: true, encoding: .utf8)
        let refused = try runMoe(["stats", log])
        #expect(refused.status == 1 && refused.stderr.contains("line 1: field 'step': must be ≥ 0, got -4"), "\(refused)")
    }

    @Test("NaN weights name the file and the tensor; an out-of-range min_capacity names its real limit")
    func messages() throws {
        let folder = try Folder()
        let weights = folder.file("w.safetensors")
        #expect(try runMoe(["init-weights", "--model", "Models/test-gelu.json", "--output", weights]).status == 0)
        // Overwrite the first data value (right after the header) with a NaN.
        let handle = try #require(FileHandle(forUpdatingAtPath: weights))
        let headerSize = try #require(handle.readData(ofLength: 8)).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        try handle.seek(toOffset: UInt64(8 + headerSize))
        handle.write(withUnsafeBytes(of: Float.nan) { Data($0) })
        try handle.close()
        // Refused at load, before any backend converts them (int8's scales would carry the NaN).
        for precision in ["fp32", "int8"] {
            let nan = try runMoe(["run", "--model", "Models/test-gelu.json", "--weights", weights, "--steps", "1", "--quiet", "--expert-precision", precision])
            #expect(nan.status == 1 && nan.stderr.contains("\(weights): tensor '") && nan.stderr.contains("holds NaN or infinite values"), "\(precision): \(nan)")
        }
        let model = folder.file("m.json")
        try #"{"name": "m", "d_model": 8, "d_ff": 8, "activation": "relu", "layers": [{"experts": 2, "top_k": 1, "min_capacity": 2000000000}]}"#
            .write(toFile: model, atomically: true, encoding: .utf8)
        let capacity = try runMoe(["run", "--model", model, "--steps", "1", "--quiet"])
        #expect(capacity.status == 1 && capacity.stderr.contains("must be in 0...1073741824, got 2000000000"), "\(capacity)")
    }
}

extension MultiRankTests.ReliabilityRoundTwoTests {
    @Test("a model or token count inside the limits that does not fit the node is one line before any allocation, on every rank")
    func memoryEstimate() throws {
        let folder = try Folder()
        let model = folder.file("huge.json")
        try #"{"name": "huge", "d_model": 65536, "d_ff": 65536, "activation": "relu", "layers": [{"experts": 8, "top_k": 1}]}"#
            .write(toFile: model, atomically: true, encoding: .utf8)
        let started = Date()
        let job = try runMPI(ranks: 2, ["run", "--model", model, "--steps", "1"], timeoutSeconds: 60, extraMPIArguments: waitForEveryRank)
        #expect(job.ranks.allSatisfy { $0.exitStatus == 1 }, "\(job)")
        let lines = job.allStderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains("the model needs about 128.") && lines[0].contains("per process"), "\(job)")
        #expect(Date().timeIntervalSince(started) < 30)
        let tokens = try runMoe(["run", "--tokens-per-rank", "16777216", "--steps", "1"])
        #expect(tokens.status == 1 && tokens.stderr.contains("buffers"), "\(tokens)")
    }

    @Test("a full disk under the stats log: one line, every rank stops, the complete lines are kept", .enabled(if: getuid() == 0, "needs root to mount a small tmpfs"))
    func fullDisk() throws {
        let folder = try Folder()
        let mountPoint = folder.file("small")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mounted = try runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=12k", "tmpfs", mountPoint])
        try #require(mounted.status == 0, "mount failed: \(mounted)")
        defer { _ = try? runProcess("/bin/umount", [mountPoint]) }
        let log = mountPoint + "/stats.jsonl"
        let job = try runMPI(ranks: 2, ["run", "--model", "Models/test-gelu.json", "--tokens-per-rank", "8", "--steps", "200", "--quiet", "--stats", log],
                             timeoutSeconds: 90, extraMPIArguments: waitForEveryRank)
        #expect(job.ranks.allSatisfy { $0.exitStatus == 1 }, "\(job)")
        let lines = job.allStderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains("cannot write the stats log") && lines[0].contains("No space left on device"), "\(job)")
        let kept = try String(contentsOfFile: log + ".partial", encoding: .utf8)
        #expect(kept.hasSuffix("\n") && !kept.isEmpty, "only complete lines")
        #expect(try runMoe(["stats", log + ".partial"]).status == 0, "the kept lines read back")
    }
}

extension MultiRankTests.ReliabilityRoundTwoTests {
    /// The peak resident MiB of the largest rank, from `moe run`'s memory line.
    func peakMebibytes(_ stdout: String) -> Double? {
        guard let range = stdout.range(of: "peak ") else { return nil }
        return Double(stdout[range.upperBound...].prefix { $0.isNumber || $0 == "." })
    }

    @Test("each rank reads only its own rows of --input, once: peak memory grows by the slice, not by the file")
    func inputSlices() throws {
        let folder = try Folder()
        // One cheap layer, so the rows dominate: a 16 MiB file, 8 MiB per rank.
        let model = folder.file("wide.json")
        try #"{"name": "wide", "d_model": 64, "d_ff": 8, "activation": "relu", "layers": [{"experts": 2, "top_k": 1}]}"#
            .write(toFile: model, atomically: true, encoding: .utf8)
        let input = folder.file("big.npy")
        let ranks = 2, tokensPerRank = 32_768, dModel = 64
        try writeNpyFloat32(path: input, rows: ranks * tokensPerRank, columns: dModel)
        let common = ["run", "--model", model, "--steps", "2", "--quiet"]
        let seeded = try runMPI(ranks: ranks, common + ["--tokens-per-rank", String(tokensPerRank)], timeoutSeconds: 120)
        let fromFile = try runMPI(ranks: ranks, common + ["--input", input], timeoutSeconds: 120)
        let base = try #require(peakMebibytes(seeded.ranks[0].stdout), "\(seeded)")
        let withFile = try #require(peakMebibytes(fromFile.ranks[0].stdout), "\(fromFile)")
        // Reading the slice costs its bytes beside its floats (8 MiB); reading the whole file on
        // every rank would cost the file's bytes and floats (32 MiB) on top.
        #expect(withFile - base < 20, "peak \(withFile) MiB with --input against \(base) MiB with generated inputs")
    }
}
