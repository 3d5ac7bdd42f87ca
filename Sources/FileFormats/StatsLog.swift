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

    /// One step of the log: what the coordinator writes (`jsonLine`) and the reader reads back.
    /// Fields a log written before they existed lacks are empty (or zero).
    public struct Step: Equatable, Sendable {
        public var step: Int
        /// Tokens every layer routed over all ranks, `[layer]`; empty in logs without the field.
        public var tokens: [Int] = []
        public var routed: [[Int]]      // [layer][expert]
        /// Rows each expert kept, `[layer][expert]` (routed less dropped; `routed` in a log
        /// without the field).
        public var kept: [[Int]] = []
        /// Routes each expert dropped, `[layer][expert]`.
        public var droppedPerExpert: [[Int]] = []
        /// Slots per expert summed over source ranks, `[layer][expert]`; nil for a layer without
        /// a limit (and for every layer of a log without the field).
        public var capacity: [[Int]?] = []
        public var dropRate: [Double]
        public var imbalance: [Double]
        /// Dispatch bytes per layer, over all ranks.
        public var bytes: [Int]
        /// Dispatch bytes each world rank sent and received, `[layer][rank]`; empty in older logs.
        public var bytesSentByRank: [[Int]] = []
        public var bytesReceivedByRank: [[Int]] = []
        /// Rows each world rank's experts received, per layer (`[layer][rank]`); empty in logs
        /// written before the field existed.
        public var rowsByRank: [[Int]] = []
        /// The capacity the policy planned for the next step, per layer, as the log spells it
        /// ("configured", `{"capacity_factor": c}`, `{"shares": [...]}`); empty in older logs.
        public var nextCapacity: [JSONValue] = []
        /// The slowest rank's seconds per phase, in the order written; empty in older logs.
        public var phaseNames: [String] = []
        public var phaseSeconds: [Double] = []
        /// Each world rank's seconds in the experts phase; empty in older logs.
        public var expertSecondsByRank: [Double] = []
        /// The placement changes decided after this step (experts migrated before the next).
        public var placementChanges: [PlacementChange] = []

        public init(step: Int, routed: [[Int]], dropRate: [Double], imbalance: [Double], bytes: [Int]) {
            self.step = step
            self.routed = routed
            self.dropRate = dropRate
            self.imbalance = imbalance
            self.bytes = bytes
        }

        /// Routes dropped per layer.
        public var dropped: [Int] { droppedPerExpert.map { $0.reduce(0, +) } }
        /// Layers whose placement changed after this step, each once, in the order logged.
        public var placementChangedLayers: [Int] {
            placementChanges.map(\.layer).reduce(into: []) { layers, layer in if !layers.contains(layer) { layers.append(layer) } }
        }
        /// Bytes of expert weights the changes after this step moved.
        public var migrationBytes: Int { placementChanges.reduce(0) { $0 + $1.migrationBytes } }
    }

    /// A placement change decided at a step, as the log records it.
    public struct PlacementChange: Equatable, Sendable {
        public var layer: Int
        public var group: Int
        /// Predicted max/mean rank load before and after, under the load that decided it.
        public var predictedImbalanceBefore: Double
        public var predictedImbalanceAfter: Double
        public var movedExperts: Int
        public var migrationBytes: Int

        public init(layer: Int, group: Int, predictedImbalanceBefore: Double, predictedImbalanceAfter: Double, movedExperts: Int, migrationBytes: Int) {
            self.layer = layer
            self.group = group
            self.predictedImbalanceBefore = predictedImbalanceBefore
            self.predictedImbalanceAfter = predictedImbalanceAfter
            self.movedExperts = movedExperts
            self.migrationBytes = migrationBytes
        }
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
            do {
                let root = try JSONObjectReader(try JSONParser.parse(Array(line)))
                policy = try root.string("policy")
                let step = try Step(root)
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
