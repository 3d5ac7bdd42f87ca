import Exchange
import Testing
@testable import ExpertParallel
import MoE
import RandomStreams

/// A routing plan for `tokens` tokens over `experts` experts, from seeded logits, with drops.
func seededPlan(tokens: Int, experts: Int, topK: Int, capacityFactor: Double = 0.75, seed: UInt64 = 3) throws -> RoutingPlan {
    var random = SeededGenerator(seed: seed, stream: 1)
    let logits = (0..<tokens * experts).map { _ in random.nextSignedUnitFloat() * 3 }
    let layer = LayerConfiguration(experts: experts, topK: topK, capacityFactor: capacityFactor, minCapacity: 0)
    return try logits.withUnsafeBufferPointer { try Router.route(logits: $0, tokenCount: tokens, layer: layer) }
}

/// Each route's packed row with one rank holding every expert (expert order, slot order).
func expertMajorRows(_ plan: RoutingPlan) -> [Int] {
    TokenDispatcher.PackOrder(slotRoutes: plan.slotRoutes(), kept: plan.keptPerExpert,
                              slots: ExpertSlots(ExpertBlocks(experts: plan.expertCount, ranks: 1)),
                              routeCount: plan.tokenCount * plan.topK).rowOfRoute
}

/// `[count]` seeded floats.
func seededRows(_ count: Int, seed: UInt64) -> [Float] {
    var random = SeededGenerator(seed: seed, stream: 2)
    return (0..<count).map { _ in random.nextSignedUnitFloat() }
}

@Suite("Token dispatcher kernels (pure, no MPI)")
struct TokenDispatcherKernelTests {
    @Test("pack copies the token row of each route in the order given (here: each expert's slots, experts in a shuffled order)",
          arguments: [1, 2, 4])
    func packOrder(topK: Int) throws {
        let (tokens, experts, width) = (37, 6, 5)
        let plan = try seededPlan(tokens: tokens, experts: experts, topK: topK)
        let rows = seededRows(tokens * width, seed: 9)
        let slotRoutes = plan.slotRoutes()
        let order = [3, 0, 5, 1, 4, 2]
        var packed = [Float](repeating: .nan, count: (plan.keptPerExpert.reduce(0, +) + 1) * width)
        let written = rows.withUnsafeBufferPointer { source in
            packed.withUnsafeMutableBufferPointer { destination in
                TokenDispatcher.pack(tokenRows: source.baseAddress!, width: width, tokenCount: tokens,
                                     routes: order.flatMap { slotRoutes[$0] }, into: destination.baseAddress!)
            }
        }
        // The plain reading of the rule: for each expert, its tokens by slot.
        var expected: [Float] = []
        for expert in order {
            for slot in 0..<plan.keptPerExpert[expert] {
                let route = plan.expert.indices.first { plan.expert[$0] == expert && plan.slot[$0] == slot }!
                let token = route % tokens
                expected += rows[token * width..<(token + 1) * width]
            }
        }
        #expect(written == plan.keptPerExpert.reduce(0, +))
        #expect(Array(packed[..<expected.count]) == expected)
        #expect(packed[expected.count...].allSatisfy { $0.isNaN }, "nothing written past the packed rows")
    }

    @Test("pack order with replicas: destination by destination, slot by slot, each replica its contiguous share of a source's slots",
          arguments: [1, 2, 4])
    func packOrderWithReplicas(topK: Int) throws {
        let (tokens, experts) = (41, 5)
        let plan = try seededPlan(tokens: tokens, experts: experts, topK: topK)
        // Expert 0 on three ranks, expert 3 on two; rank 2 holds expert 0 in its second slot.
        let slots = try ExpertSlots(experts: experts, slots: [[0, 1], [3, 0, 4], [2, 0], [3]])
        let order = TokenDispatcher.PackOrder(slotRoutes: plan.slotRoutes(), kept: plan.keptPerExpert, slots: slots,
                                              routeCount: tokens * topK)
        // The plain reading: for each destination and slot, this replica's share of the slots.
        var expected: [Int] = []
        var perSlot: [[Int]] = []
        for (rank, held) in slots.slots.enumerated() {
            var rows: [Int] = []
            for (slot, expert) in held.enumerated() {
                let replicas = slots.replicas[expert]
                let index = replicas.firstIndex { $0.rank == rank && $0.slot == slot }!
                let kept = plan.keptPerExpert[expert]
                let share = (kept * index / replicas.count)..<(kept * (index + 1) / replicas.count)
                for s in share { expected.append(plan.expert.indices.first { plan.expert[$0] == expert && plan.slot[$0] == s }!) }
                rows.append(share.count)
            }
            perSlot.append(rows)
        }
        #expect(order.routes == expected)
        #expect(order.rowsPerSlot == perSlot)
        #expect(order.sendCounts == perSlot.map { $0.reduce(0, +) })
        #expect(order.routes.count == plan.keptPerExpert.reduce(0, +), "every kept route leaves exactly once")
        for route in 0..<tokens * topK {
            #expect(order.rowOfRoute[route] == (order.routes.firstIndex(of: route) ?? -1))
        }
        // With the contiguous blocks the order is expert order, slot order.
        let blocks = TokenDispatcher.PackOrder(slotRoutes: plan.slotRoutes(), kept: plan.keptPerExpert,
                                               slots: ExpertSlots(ExpertBlocks(experts: experts, ranks: 2)), routeCount: tokens * topK)
        #expect(blocks.routes == plan.slotRoutes().flatMap { $0 })
    }

    @Test("gather takes a local expert's rows source by source; scatter puts outputs back where they came from")
    func gatherScatter() {
        let width = 3
        // 3 sources, 2 local experts: rowsFrom[s][j].
        let rowsFrom = [[2, 1], [0, 3], [1, 0]]
        let blocks = rowsFrom.map { $0.reduce(0, +) }
        let layout = ExchangeLayout(sendCounts: blocks, receiveCounts: blocks)!
        let received = (0..<layout.receiveRows * width).map(Float.init)
        func rowsOf(source: Int, local: Int) -> [Float] {
            let start = layout.receiveDisplacements[source] + rowsFrom[source][..<local].reduce(0, +)
            return Array(received[start * width..<(start + rowsFrom[source][local]) * width])
        }
        var roundTrip = [Float](repeating: 0, count: received.count)
        for local in 0..<2 {
            let rows = rowsFrom.reduce(0) { $0 + $1[local] }
            var gathered = [Float](repeating: 0, count: rows * width)
            let count = received.withUnsafeBufferPointer { input in
                gathered.withUnsafeMutableBufferPointer { output in
                    TokenDispatcher.gather(received: input.baseAddress!, width: width, receiveDisplacements: layout.receiveDisplacements,
                                           rowsFrom: rowsFrom, localExpert: local, into: output.baseAddress!)
                }
            }
            #expect(count == rows)
            #expect(gathered == (0..<3).flatMap { rowsOf(source: $0, local: local) })
            // An "expert" that negates its rows, scattered back.
            let outputs = gathered.map { -$0 }
            outputs.withUnsafeBufferPointer { output in
                roundTrip.withUnsafeMutableBufferPointer { target in
                    TokenDispatcher.scatter(expertRows: output.baseAddress!, width: width, receiveDisplacements: layout.receiveDisplacements,
                                            rowsFrom: rowsFrom, localExpert: local, into: target.baseAddress!)
                }
            }
        }
        #expect(roundTrip == received.map { -$0 }, "every received row replaced by its own expert output")
    }

    /// The weighted sum as docs/ROUTING.md §5 writes it, one scalar at a time.
    func plainWeightedSum(plan: RoutingPlan, expertRows: [[Float]], width: Int, hidden: [Float]) -> [Float] {
        var output = hidden
        for token in 0..<plan.tokenCount {
            var mixture = [Float](repeating: 0, count: width)
            for r in 0..<plan.topK {
                let route = r * plan.tokenCount + token
                let expert = plan.expert[route]
                guard expert >= 0 else { continue }
                for feature in 0..<width { mixture[feature] += plan.gate[route] * expertRows[expert][plan.slot[route] * width + feature] }
            }
            for feature in 0..<width { output[token * width + feature] += mixture[feature] }
        }
        return output
    }

    @Test("weighted sum: routes summed in choice order into the token's row, bitwise the scalar rule; dropped routes add nothing",
          arguments: [1, 2, 3])
    func weightedSum(topK: Int) throws {
        let (tokens, experts, width) = (29, 5, 19)  // width not a multiple of 8: the scalar tail runs too
        let plan = try seededPlan(tokens: tokens, experts: experts, topK: topK)
        #expect(plan.droppedRoutes > 0, "the case includes drops")
        let expertRows = (0..<experts).map { seededRows(plan.keptPerExpert[$0] * width, seed: UInt64(100 + $0)) }
        let combined = expertRows.flatMap { $0 }  // pack order: experts in order, slots in order
        let hidden = seededRows(tokens * width, seed: 11)
        var output = hidden
        var scratch = [Float](repeating: 0, count: width)
        combined.withUnsafeBufferPointer { rows in
            scratch.withUnsafeMutableBufferPointer { scratch in
                output.withUnsafeMutableBufferPointer { target in
                    TokenDispatcher.weightedSum(combined: rows.baseAddress!, width: width, plan: plan, rowOfRoute: expertMajorRows(plan), residual: nil,
                                                scratch: scratch.baseAddress!, into: target.baseAddress!)
                }
            }
        }
        #expect(output == plainWeightedSum(plan: plan, expertRows: expertRows, width: width, hidden: hidden))
    }

    @Test("weighted sum of a residual layer equals ResidualMixture.add per token, bitwise")
    func residualWeightedSum() throws {
        let (tokens, experts, width) = (23, 4, 12)
        let plan = try seededPlan(tokens: tokens, experts: experts, topK: 1)
        let expertRows = (0..<experts).map { seededRows(plan.keptPerExpert[$0] * width, seed: UInt64(200 + $0)) }
        let combined = expertRows.flatMap { $0 }
        let dense = seededRows(tokens * width, seed: 12)
        let coefficients = (0..<tokens).flatMap { token -> [Float] in
            let pair = ResidualMixture.softmaxPair(Float(token % 5) * 0.3, 0.4)
            return [pair.mlp, pair.expert]
        }
        let hidden = seededRows(tokens * width, seed: 13)
        var output = hidden
        var scratch = [Float](repeating: 0, count: width)
        combined.withUnsafeBufferPointer { rows in
            coefficients.withUnsafeBufferPointer { coefficients in
                dense.withUnsafeBufferPointer { dense in
                    scratch.withUnsafeMutableBufferPointer { scratch in
                        output.withUnsafeMutableBufferPointer { target in
                            TokenDispatcher.weightedSum(
                                combined: rows.baseAddress!, width: width, plan: plan, rowOfRoute: expertMajorRows(plan),
                                residual: .init(coefficients: coefficients.baseAddress!, dense: dense.baseAddress!),
                                scratch: scratch.baseAddress!, into: target.baseAddress!)
                        }
                    }
                }
            }
        }
        var expected = hidden
        for token in 0..<tokens {
            let expert = plan.expert[token]
            let pair = (mlp: coefficients[2 * token], expert: coefficients[2 * token + 1])
            dense.withUnsafeBufferPointer { dense in
                expected.withUnsafeMutableBufferPointer { target in
                    if expert >= 0 {
                        expertRows[expert].withUnsafeBufferPointer { rows in
                            ResidualMixture.add(expertRow: rows.baseAddress! + plan.slot[token] * width, combineWeight: plan.gate[token],
                                                denseRow: dense.baseAddress! + token * width, coefficients: pair, count: width,
                                                to: target.baseAddress! + token * width)
                        }
                    } else {
                        ResidualMixture.add(expertRow: nil, combineWeight: 0, denseRow: dense.baseAddress! + token * width,
                                            coefficients: pair, count: width, to: target.baseAddress! + token * width)
                    }
                }
            }
        }
        #expect(plan.droppedRoutes > 0)
        #expect(output == expected)
    }
}

@Suite("Dispatch headers and the plan-cache strategy")
struct DispatchHeaderAndPlanCacheTests {
    @Test("a header written is the header read, at any byte offset")
    func headerRoundTrip() {
        let header = DispatchHeader(status: .overflow, tokens: 4096, rowsPerExpert: [7, 0, 1 << 40])
        var bytes = [UInt8](repeating: 0, count: DispatchHeader.bytes(experts: 3) + 3)
        bytes.withUnsafeMutableBytes { header.write(to: $0.baseAddress! + 3) }
        let read = bytes.withUnsafeBytes { DispatchHeader.read(from: $0.baseAddress! + 3, experts: 3) }
        #expect(read == header)
        #expect(DispatchHeader.words(experts: 3) == 5)
    }

    @Test("a status word that is none of ours reads as a routing failure (every rank stops)")
    func unknownStatus() {
        var words = [99, 1, 2]
        let read = words.withUnsafeMutableBytes { DispatchHeader.read(from: $0.baseAddress!, experts: 1) }
        #expect(read.status == .routingFailed)
        #expect(DispatchStatus.ready.rawValue == 0 && DispatchStatus.routingFailed.rawValue == 1 && DispatchStatus.overflow.rawValue == 2,
                "the wire values of the status word do not change")
    }

    @Test("a dispatch mode: no plan cache counts every step; a plan cache only with one chunk; degrees in range")
    func dispatchModes() {
        #expect(DispatchMode.of(planCache: nil, degree: 4, progress: .chunks) == .success(.counted(degree: 4, progress: .chunks)))
        #expect(DispatchMode.of(planCache: .capacity, degree: 1, progress: .gemms) == .success(.cached(.capacity)))
        #expect(DispatchMode.of(planCache: .capacity, degree: 2, progress: .gemms) == .failure(.planCacheWithOverlap(overlap: "2")))
        #expect(DispatchMode.of(planCache: nil, degree: 0, progress: .gemms) == .failure(.degreeOutOfRange(0)))
        #expect(DispatchMode.of(planCache: nil, degree: OverlapDegree.limit + 1, progress: .gemms) == .failure(.degreeOutOfRange(OverlapDegree.limit + 1)))
        #expect(DispatchMode.cached(.observed(headroom: 0.5)).degree == 1)
    }

    @Test("observed keeps last step's rows × (1 + headroom) + 1")
    func observed() {
        let layer = LayerConfiguration(experts: 4, topK: 2, capacityFactor: 1, minCapacity: 0)
        let placement = ExpertSlots(ExpertBlocks(experts: 4, ranks: 2))
        let layout = ExchangeLayout(sendCounts: [10, 3], receiveCounts: [10, 0])!
        let observed = PlanCache(mode: .observed(headroom: 0.25))
        #expect(observed.blocks(layer: layer, capacity: .configured, slots: placement, here: 0) == nil, "nothing before the first step")
        observed.record(layout: layout)
        let blocks = observed.blocks(layer: layer, capacity: .configured, slots: placement, here: 0)
        #expect(blocks?.to == [14, 5] && blocks?.from == [14, 1])  // ceil(10·1.25)+1, ceil(3·1.25)+1, ceil(0)+1
    }

    @Test("capacity mode: block s → d is the sum of s's capacities for d's experts; dropless layers are not cached")
    func capacityMode() {
        let layer = LayerConfiguration(experts: 4, topK: 2, capacityFactor: 1, minCapacity: 0)
        let placement = ExpertSlots(ExpertBlocks(experts: 4, ranks: 2))  // rank 0 holds 0, 1; rank 1 holds 2, 3
        let cache = PlanCache(mode: .capacity)
        #expect(cache.blocks(layer: layer, capacity: .configured, slots: placement, here: 1) == nil)
        cache.record(tokensOf: [8, 6])  // capacities: ceil(2·8/4) = 4 and ceil(2·6/4) = 3 per expert
        let blocks = cache.blocks(layer: layer, capacity: .configured, slots: placement, here: 1)
        #expect(blocks?.to == [6, 6] && blocks?.from == [8, 6])
        let shares = cache.blocks(layer: layer, capacity: .shares([2, 0, 1, 1]), slots: placement, here: 1)
        // rank 1's budget 12 over shares 2:0:1:1 → 6, 0, 3, 3; rank 0's budget 16 → 8, 0, 4, 4.
        #expect(shares?.to == [6, 6] && shares?.from == [8, 6])
        var dropless = layer
        dropless.capacityFactor = 0
        #expect(cache.blocks(layer: dropless, capacity: .configured, slots: placement, here: 1) == nil)
    }
}
