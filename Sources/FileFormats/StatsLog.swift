import Foundation

/// Why a stats log could not be read; one line naming the file and the line.
public struct StatsLogError: Error, Equatable, CustomStringConvertible {
    public let description: String
}

/// The coordinator's stats log (`moe run --stats FILE`): one JSON object per line and step, with
/// the capacity policy and per layer the routes each expert got, the dropped routes, drop rate,
/// imbalance and dispatch bytes (docs/CAPACITY.md). Read by `moe stats`; pure, and fuzzed
/// (`Fuzz/run statslog`). Counts must be ≥ 0, drop rates in 0...1, every line the same layers.
public struct StatsLog: Equatable, Sendable {
    public let policy: String
    public let steps: [Step]
    /// Largest count a log may hold (routes, drops, step): 2^32, so that sums over a whole log
    /// (at most 1 GiB of text, so at most 2^29 values) stay below 2^61.
    public static let countLimit = 1 << 32
    /// Largest dispatch bytes of one layer and step: 2^50 (readers sum them as Double).
    public static let byteLimit = 1 << 50

    /// The 1-based number of a last line left out because it was cut while being written.
    public let incompleteLine: Int?

    /// One step of the log.
    public struct Step: Equatable, Sendable {
        public var step: Int
        public var routed: [[Int]]      // [layer][expert]
        /// Tokens every layer routed over all ranks, `[layer]`; empty in logs without the field.
        public var tokens: [Int] = []
        /// Rows each expert kept, `[layer][expert]` (routed less dropped; `routed` in a log
        /// without the field).
        public var kept: [[Int]] = []
        public var dropRate: [Double]
        public var imbalance: [Double]
        public var bytes: [Int]
        public var dropped: [Int]
        /// Rows each world rank's experts received, per layer (`[layer][rank]`); empty in logs
        /// written before the field existed.
        public var rowsByRank: [[Int]] = []
        /// Each world rank's seconds in the experts phase; empty in older logs.
        public var expertSecondsByRank: [Double] = []
        /// Layers whose placement changed after this step (experts migrated before the next).
        public var placementChangedLayers: [Int] = []
        /// Bytes of expert weights the changes after this step moved.
        public var migrationBytes = 0
    }

    /// Parses a log's bytes; errors name `path`, the line and (for syntax) the column. A last
    /// line without its newline that does not parse is a log cut while being written: it is left
    /// out and reported in `incompleteLine`, not an error.
    public static func parse(_ bytes: [UInt8], path: String) throws(StatsLogError) -> StatsLog {
        func fail(_ text: String) -> StatsLogError { StatsLogError(description: text) }
        var steps: [Step] = []
        var policy = ""
        var incomplete: Int?
        let lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        let torn = bytes.last != UInt8(ascii: "\n") && !bytes.isEmpty
        for (index, line) in lines.enumerated() where !line.isEmpty {
            func count(_ value: JSONValue, _ path: String) throws -> Int {
                let number = try JSONObjectReader.integer(value, path: path)
                guard number >= 0 else { throw JSONFieldError(path: path, problem: "must be ≥ 0, got \(number)") }
                // Bounded so that sums over a whole log (≤ 1 GiB of text) cannot overflow.
                guard number <= StatsLog.countLimit else { throw JSONFieldError(path: path, problem: "must be at most \(StatsLog.countLimit), got \(number)") }
                return number
            }
            func count(_ reader: JSONObjectReader, _ key: String, _ path: String) throws -> Int {
                let number = try reader.integer(key)
                guard number >= 0 else { throw JSONFieldError(path: path, problem: "must be ≥ 0, got \(number)") }
                // Bounded so that sums over a whole log (≤ 1 GiB of text) cannot overflow.
                guard number <= StatsLog.countLimit else { throw JSONFieldError(path: path, problem: "must be at most \(StatsLog.countLimit), got \(number)") }
                return number
            }
            do {
                let root = try JSONObjectReader(try JSONParser.parse(Array(line)))
                policy = try root.string("policy")
                var step = Step(step: try count(root, "step", "step"), routed: [], dropRate: [], imbalance: [], bytes: [], dropped: [])
                for (layerPath, value) in try root.array("layers") {
                    let layer = try JSONObjectReader(value, path: layerPath)
                    step.routed.append(try layer.array("routed").map { try count($0.value, $0.path) })
                    if layer.value("tokens") != nil { step.tokens.append(try count(layer, "tokens", "\(layerPath).tokens")) }
                    let kept = layer.value("kept") == nil ? step.routed.last! : try layer.array("kept").map { try count($0.value, $0.path) }
                    guard kept.count == step.routed.last!.count, zip(kept, step.routed.last!).allSatisfy({ $0 <= $1 }) else {
                        throw JSONFieldError(path: "\(layerPath).kept", problem: "must have one count per expert, each at most its routes")
                    }
                    step.kept.append(kept)
                    var dropped = 0
                    for (path, value) in try layer.array("dropped") { dropped += try count(value, path) }
                    step.dropped.append(dropped)
                    let dropRate = try layer.number("drop_rate")
                    guard (0...1).contains(dropRate) else { throw JSONFieldError(path: "\(layerPath).drop_rate", problem: "must be in 0...1, got \(dropRate)") }
                    step.dropRate.append(dropRate)
                    let imbalance = try layer.number("imbalance")
                    guard imbalance >= 0 else { throw JSONFieldError(path: "\(layerPath).imbalance", problem: "must be ≥ 0, got \(imbalance)") }
                    step.imbalance.append(imbalance)
                    let bytes = try layer.integer("dispatch_bytes")
                    guard (0...StatsLog.byteLimit).contains(bytes) else {
                        throw JSONFieldError(path: "\(layerPath).dispatch_bytes", problem: "must be in 0...\(StatsLog.byteLimit), got \(bytes)")
                    }
                    step.bytes.append(bytes)
                    if layer.value("rows_by_rank") != nil {
                        step.rowsByRank.append(try layer.array("rows_by_rank").map { try count($0.value, $0.path) })
                    }
                }
                if root.value("expert_seconds_by_rank") != nil {
                    step.expertSecondsByRank = try root.array("expert_seconds_by_rank").map { (path, value) in
                        let seconds = try JSONObjectReader.number(value, path: path)
                        guard seconds.isFinite, seconds >= 0 else { throw JSONFieldError(path: path, problem: "must be a finite number ≥ 0, got \(seconds)") }
                        return seconds
                    }
                }
                if root.value("placement_changes") != nil {
                    for (changePath, value) in try root.array("placement_changes") {
                        let change = try JSONObjectReader(value, path: changePath)
                        let layer = try count(change, "layer", "\(changePath).layer")
                        guard layer < step.routed.count else {
                            throw JSONFieldError(path: "\(changePath).layer", problem: "names layer \(layer) of \(step.routed.count)")
                        }
                        if !step.placementChangedLayers.contains(layer) { step.placementChangedLayers.append(layer) }
                        step.migrationBytes += try count(change, "migration_bytes", "\(changePath).migration_bytes")
                    }
                }
                guard step.rowsByRank.isEmpty || step.rowsByRank.count == step.routed.count else {
                    throw JSONFieldError(path: "layers", problem: "rows_by_rank is given for some layers only")
                }
                if !step.tokens.isEmpty, step.tokens.count != step.routed.count {
                    throw JSONFieldError(path: "layers", problem: "tokens is given for some layers only")
                }
                if let first = steps.first, first.routed.count != step.routed.count {
                    throw JSONFieldError(path: "layers", problem: "has \(step.routed.count) layers, line 1 has \(first.routed.count)")
                }
                steps.append(step)
            } catch let error as JSONSyntaxError {
                // The last line of a log cut while being written (a killed run, a full disk) is
                // not an error in the lines before it.
                if torn && index == lines.count - 1 {
                    incomplete = index + 1
                    break
                }
                throw fail("\(path): line \(index + 1), column \(error.column): \(error.problem)")
            } catch {
                throw fail("\(path): line \(index + 1): \(error)")
            }
        }
        guard !steps.isEmpty else { throw fail("\(path): no steps (an empty stats log)") }
        return StatsLog(policy: policy, steps: steps, incompleteLine: incomplete)
    }
}
