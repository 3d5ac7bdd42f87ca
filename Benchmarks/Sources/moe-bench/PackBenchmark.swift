import ArgumentParsing
import ExpertParallel
import FileFormats
import Foundation
import JobControl
import MessagePassing
import RandomStreams

/// `moe-bench pack`: the token dispatcher's own pack (`TokenDispatcher.pack`, the function the
/// MoE layer runs) against one `memcpy` of the same bytes, on the same working set.
struct PackBenchmark: JobCommand {
    static let spec = CommandSpec(
        name: "pack",
        summary: "Packing token rows by destination vs one memcpy of the same bytes (GB/s).",
        discussion: """
            Each token of a [tokens, d_model] float32 buffer gets a random destination among --peers
            (seeded), as if each destination held one expert and every route were kept; the
            dispatcher's pack function (TokenDispatcher.pack, the one the MoE layer calls) copies
            the rows into one send buffer grouped by destination, in token order within a
            destination. The baseline copies the same number of bytes between the same two buffers
            with a single memcpy. Both are timed with the harness's one method (--warmup untimed
            runs, then --repetitions runs each after a barrier, the slowest rank's time, median).
            Run with 1 rank for single-core figures.
            """,
        options: [Options.tokens, Options.dModel].map(\.spec) + [Options.peers, Options.warmup, Options.repetitions].map(\.spec)
            + TableOutputOptions.specs)

    enum Options {
        static let tokens = TypedOption<[Int]>.integers("tokens", default: [1024, 8192], in: 1...(1 << 20), "tokens per buffer")
        static let dModel = TypedOption<[Int]>.integers("d-model", default: [256, 1024, 4096], in: 1...(1 << 20), "floats per row")
        static let peers = TypedOption<Int>.integer("peers", default: 8, in: 1...65536, "destinations")
        static let warmup = warmupOption(default: 3, "untimed runs")
        static let repetitions = repetitionsOption(default: 21, "timed runs")
    }

    let tokens: [Int], widths: [Int]
    let peers: Int, warmup: Int, repetitions: Int
    let csvPath: String?, jsonPath: String?

    init(options: ParsedOptions) throws(UsageError) {
        tokens = try options.value(Options.tokens)
        widths = try options.value(Options.dModel)
        peers = try options.value(Options.peers)
        warmup = try options.value(Options.warmup)
        repetitions = try options.value(Options.repetitions)
        let output = try TableOutputOptions.read(options)
        (csvPath, jsonPath) = (output.csvPath, output.jsonPath)
    }

    func run(_ context: JobContext) throws {
        let harness = try BenchmarkHarness.start(context, outputs: [TableOutputOptions.csv.naming(csvPath), TableOutputOptions.json.naming(jsonPath)])
        let world = harness.world
        var table = ResultTable(columns: ["tokens", "d_model", "working_set_mib", "pack_gb_per_s", "memcpy_gb_per_s", "pack_over_memcpy"])
        for tokenCount in tokens {
            for width in widths {
                var random = SeededGenerator(seed: 7, stream: UInt64(tokenCount), UInt64(width))
                let destination = (0..<tokenCount).map { _ in Int(random.next() % UInt64(peers)) }
                // Each destination as one expert whose slots are its tokens in token order
                // (top-1 routes: route index = token).
                var slotRoutes = [[Int]](repeating: [], count: peers)
                for (token, peer) in destination.enumerated() { slotRoutes[peer].append(token) }
                let routes = slotRoutes.flatMap { $0 }  // the pack order: destination by destination
                let source = (0..<tokenCount * width).map { Float($0 % 251) }
                var packed = [Float](repeating: 0, count: tokenCount * width)
                let bytes = Double(tokenCount * width * MemoryLayout<Float>.stride)
                let packTime = try source.withUnsafeBufferPointer { input in
                    try packed.withUnsafeMutableBufferPointer { output in
                        Statistics(try harness.measure(warmup: warmup, repetitions: repetitions) {
                            TokenDispatcher.pack(tokenRows: input.baseAddress!, width: width, tokenCount: tokenCount, routes: routes,
                                                 into: output.baseAddress!)
                        }).median
                    }
                }
                let copyTime = try source.withUnsafeBytes { input in
                    try packed.withUnsafeMutableBytes { output in
                        Statistics(try harness.measure(warmup: warmup, repetitions: repetitions) {
                            _ = memcpy(output.baseAddress!, input.baseAddress!, input.count)
                        }).median
                    }
                }
                // Keep the result observable so the copies cannot be optimised away.
                if packed[(tokenCount - 1) * width] < 0 { print("unexpected") }
                table.append([String(tokenCount), String(width), format(2 * bytes / 1_048_576, 1),
                              format(bytes / packTime / 1e9, 2), format(bytes / copyTime / 1e9, 2), format(copyTime / packTime)])
            }
        }
        guard world.rank == 0 else { return }
        print("# moe-bench pack: \(peers) destinations; medians of \(repetitions) runs, slowest of \(world.size) rank(s); working set = source + packed buffer")
        print(table.aligned)
        let metadata: [(String, JSONValue)] = [("benchmark", .string("pack")), ("peers", .number(Double(peers))), ("ranks", .number(Double(world.size)))]
        if let csvPath { try AtomicFileWriter.write(table.csv, to: csvPath) }
        if let jsonPath { try AtomicFileWriter.write(table.json(metadata: metadata), to: jsonPath) }
    }
}
