/// How many chunks a layer's dispatch is split into, so that the exchange of one chunk overlaps
/// the expert GEMMs of another (`--overlap-degree`, `"overlap_degree"`; docs/ARCHITECTURE.md,
/// "Pipelined layer"). 1 is the sequential layer: dispatch, experts, combine.
package enum OverlapDegree: Equatable, Sendable, CustomStringConvertible {
    /// Exactly N chunks (1...`limit`).
    case fixed(Int)
    /// N chosen per layer from the cost model at start-up (`OverlapPlanner`).
    case auto

    /// The largest degree: a degree-N layer has 2N exchanges in flight, each on its own channel,
    /// and the simulated links hold at most `SimulatedLinks.maxInFlightPerPair` per pair.
    package static let limit = 32

    /// Parses "auto" or an integer in 1...limit; nil (with the reason) otherwise.
    package static func parse(_ text: String) -> Result<OverlapDegree, OverlapDegreeError> {
        if text == "auto" { return .success(.auto) }
        guard let value = Int(text) else { return .failure(OverlapDegreeError(detail: "'\(text)' is neither an integer nor 'auto'")) }
        return validated(value)
    }

    package static func validated(_ value: Int) -> Result<OverlapDegree, OverlapDegreeError> {
        guard (1...limit).contains(value) else {
            return .failure(OverlapDegreeError(detail: "\(value) is outside 1...\(limit) (1: no overlap)"))
        }
        return .success(.fixed(value))
    }

    package var description: String {
        switch self {
        case let .fixed(value): return String(value)
        case .auto: return "auto"
        }
    }
}

/// Why an overlap degree was refused.
package struct OverlapDegreeError: Error, Equatable, CustomStringConvertible {
    package let detail: String
    package var description: String { detail }
}
