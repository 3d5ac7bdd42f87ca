import Exchange
import MoE

/// How a layer's dispatcher sizes its dispatch blocks when it skips the count exchange (plan
/// caching, docs/CAPACITY.md).
/// (No plan cache — the count exchange every step — is `DispatchMode.counted`.)
package enum PlanCacheMode: Equatable, Sendable {
    /// Blocks as large as the senders' capacities allow (from last step's token counts and
    /// this step's capacity plan): never overflows while token counts stay the same, at the
    /// price of padding up to capacity.
    case capacity
    /// Blocks of last step's rows × (1 + headroom) + 1: less padding, but a step whose rows
    /// grow past that falls back to the count exchange.
    case observed(headroom: Double)
}

/// Plan-cache outcomes and the count exchanges' cost on one rank (for reports).
package struct PlanCacheTotals: Equatable, Sendable {
    package var hits = 0
    package var misses = 0
    package var countExchanges = 0
    /// Total seconds of the count exchanges run.
    package var countExchangeSeconds = 0.0
    /// Padding sent under cached plans, bytes.
    package var paddingBytes = 0

    package init() {}

    package static func + (lhs: PlanCacheTotals, rhs: PlanCacheTotals) -> PlanCacheTotals {
        var sum = lhs
        sum.hits += rhs.hits
        sum.misses += rhs.misses
        sum.countExchanges += rhs.countExchanges
        sum.countExchangeSeconds += rhs.countExchangeSeconds
        sum.paddingBytes += rhs.paddingBytes
        return sum
    }
}

/// The plan-cache strategy a `TokenDispatcher` is given, with what it remembers between steps.
/// Both sides of every pair compute the same block sizes from numbers both know (what one sent
/// is what the other received; every rank's token count travels in the headers), so a cached
/// dispatch needs no message of its own.
final class PlanCache {
    let mode: PlanCacheMode
    private(set) var totals = PlanCacheTotals()
    /// Observed mode: rows this rank may send each group peer / receive from it.
    private var rowsTo: [Int]?
    private var rowsFrom: [Int]?
    /// Every group rank's token count last step (capacity mode).
    private var tokensOf: [Int]?

    init(mode: PlanCacheMode) { self.mode = mode }

    /// Block sizes (rows, without the header row) to and from every group rank under the cached
    /// plan, or nil when there is none (mode off, or no step yet). Capacity mode: source s can
    /// send expert e at most its capacity for s's token count, so the block s → d is Σ over d's
    /// slots of that capacity's share bound (`ExpertSlots.shareBound`: the capacity itself with
    /// one replica) — computed alike on both sides and never exceeded unless s's token count
    /// changed; a dropless layer has no such bound, so capacity mode never caches it
    /// (it runs the count exchange every step).
    func blocks(layer: LayerConfiguration, capacity: LayerCapacity, sequenceLength: Int? = nil, slots: ExpertSlots, here: Int) -> (to: [Int], from: [Int])? {
        switch mode {
        case .capacity where !layer.isDropless:
            guard let tokensOf else { return nil }
            func block(source: Int, destination: Int) -> Int {
                let capacities = Router.capacities(tokenCount: tokensOf[source], layer: layer, plan: capacity, sequenceLength: sequenceLength) ?? []
                return slots.slots[destination].reduce(0) { $0 + ExpertSlots.shareBound(of: slots.replicas[$1].count, capacity: capacities[$1]) }
            }
            return ((0..<slots.ranks).map { block(source: here, destination: $0) },
                    (0..<slots.ranks).map { block(source: $0, destination: here) })
        case .capacity, .observed:
            guard let rowsTo, let rowsFrom else { return nil }
            return (rowsTo, rowsFrom)
        }
    }

    /// After a step's headers or count messages: every group rank's token count.
    func record(tokensOf: [Int]) { self.tokensOf = tokensOf }

    /// After a step's dispatch: its exact layout. Observed mode keeps it, with headroom, as the
    /// next step's block sizes.
    func record(layout: ExchangeLayout) {
        guard case let .observed(headroom) = mode else { return }
        func allowance(_ rows: Int) -> Int { Int((Double(rows) * (1 + headroom)).rounded(.up)) + 1 }
        rowsTo = layout.sendCounts.map(allowance)
        rowsFrom = layout.receiveCounts.map(allowance)
    }

    func recordHit(paddingBytes: Int) {
        totals.hits += 1
        totals.paddingBytes += paddingBytes
    }

    func recordMiss() { totals.misses += 1 }

    func recordCountExchange(seconds: Double) {
        totals.countExchanges += 1
        totals.countExchangeSeconds += seconds
    }
}
