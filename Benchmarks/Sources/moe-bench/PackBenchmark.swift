import ArgumentParsing
import FileFormats
import Foundation
import MessagePassing
import RandomStreams

/// `moe-bench pack`: packing token rows into per-peer send buffers (the MoE layer's pack step)
/// against one `memcpy` of the same bytes, on the same working set.
struct PackBenchmark: Benchmark {
    static let spec = CommandSpec(
        name: "pack",
        summary: "Packing token rows by destination vs one memcpy of the same bytes (GB/s).",
        discussion: """
            Each token of a [tokens, d_model] float32 buffer gets a random destination among --peers
            (seeded); packing copies the rows into one send buffer grouped by destination, in token
            order within a destination — exactly the dispatch pack of the MoE layer (one row copy per
            kept route). The baseline copies the same number of bytes between the same two buffers
            with a single memcpy. Both are timed --repetitions times after --warmup runs on every
            rank independently; the table shows rank 0's medians. Run with 1 rank for single-core
            figures.
            """,
        options: [
            .value("tokens", "LIST", default: "1024,8192", "tokens per buffer"),
            .value("d-model", "LIST", default: "256,1024,4096", "floats per row"),
            .value("peers", "N", default: "8", "destinations"),
            .value("warmup", "N", default: "3", "untimed runs"),
            .value("repetitions", "N", default: "21", "timed runs"),
            .value("csv", "FILE", "write the table as CSV"),
            .value("json", "FILE", "write the table as JSON"),
        ])

    let tokens: [Int], widths: [Int]
    let peers: Int, warmup: Int, repetitions: Int
    let csvPath: String?, jsonPath: String?

    init(options: ParsedOptions) throws(UsageError) {
        tokens = try options.integers("tokens", in: 1...(1 << 20)) ?? [1024, 8192]
        widths = try options.integers("d-model", in: 1...(1 << 20)) ?? [256, 1024, 4096]
        peers = try options.integer("peers", in: 1...65536) ?? 8
        warmup = try options.integer("warmup", in: 0...1000) ?? 3
        repetitions = try options.integer("repetitions", in: 1...100_000) ?? 21
        csvPath = options.string("csv")
        jsonPath = options.string("json")
    }

    func run(world: Communicator) throws {
        var table = ResultTable(columns: ["tokens", "d_model", "working_set_mib", "pack_gb_per_s", "memcpy_gb_per_s", "pack_over_memcpy"])
        for tokenCount in tokens {
            for width in widths {
                var random = SeededGenerator(seed: 7, stream: UInt64(tokenCount), UInt64(width))
                let destination = (0..<tokenCount).map { _ in Int(random.next() % UInt64(peers)) }
                // Pack order: by destination, token order within it (a stable counting sort).
                var order: [Int] = []
                order.reserveCapacity(tokenCount)
                var byPeer = [[Int]](repeating: [], count: peers)
                for (token, peer) in destination.enumerated() { byPeer[peer].append(token) }
                for tokensOfPeer in byPeer { order += tokensOfPeer }
                let source = (0..<tokenCount * width).map { Float($0 % 251) }
                var packed = [Float](repeating: 0, count: tokenCount * width)
                let bytes = Double(tokenCount * width * MemoryLayout<Float>.stride)
                func time(_ body: () -> Void) -> Double {
                    var samples: [Double] = []
                    for run in 0..<(warmup + repetitions) {
                        let start = MPIRuntime.wallTime()
                        body()
                        if run >= warmup { samples.append(MPIRuntime.wallTime() - start) }
                    }
                    return Statistics(samples).median
                }
                let packTime = source.withUnsafeBufferPointer { input in
                    packed.withUnsafeMutableBufferPointer { output in
                        time {
                            var row = 0
                            for token in order {
                                (output.baseAddress! + row * width).update(from: input.baseAddress! + token * width, count: width)
                                row += 1
                            }
                        }
                    }
                }
                let copyTime = source.withUnsafeBytes { input in
                    packed.withUnsafeMutableBytes { output in
                        time { _ = memcpy(output.baseAddress!, input.baseAddress!, input.count) }
                    }
                }
                // Keep the result observable so the copies cannot be optimised away.
                if packed[(tokenCount - 1) * width] < 0 { print("unexpected") }
                table.append([String(tokenCount), String(width), format(2 * bytes / 1_048_576, 1),
                              format(bytes / packTime / 1e9, 2), format(bytes / copyTime / 1e9, 2), format(copyTime / packTime)])
            }
        }
        guard world.rank == 0 else { return }
        print("# moe-bench pack: \(peers) destinations; medians of \(repetitions) runs on rank 0 (of \(world.size)); working set = source + packed buffer")
        print(table.aligned)
        let metadata: [(String, JSONValue)] = [("benchmark", .string("pack")), ("peers", .number(Double(peers))), ("ranks", .number(Double(world.size)))]
        if let csvPath { try AtomicFileWriter.write(table.csv, to: csvPath) }
        if let jsonPath { try AtomicFileWriter.write(table.json(metadata: metadata), to: jsonPath) }
    }
}
