import MessagePassing
import MoE

/// Why a migration did not apply. Every rank throws it (the ranks agree before anyone adopts),
/// naming the lowest failing rank; `detail` is that rank's own cause, nil on the others.
package struct MigrationError: Error, CustomStringConvertible {
    package let step: Int
    package let rank: Int
    package let detail: String?

    package var description: String {
        "step \(step + 1): expert migration failed on rank \(rank)" + (detail.map { ": \($0)" } ?? "")
            + "; no rank adopted the new placement"
    }
}

/// What one migration moved, over all ranks.
package struct MigrationOutcome: Equatable, Sendable {
    /// Expert copies sent rank to rank (slots newly filled on a rank that did not hold the expert).
    package var experts = 0
    package var bytes = 0
    /// The slowest rank's wall time of the migration, from its first send to the agreement.
    package var seconds = 0.0

    package init() {}
}

/// One expert copy a placement change needs: layer `layer`'s expert `expert` from world rank
/// `source` (which holds it now) to slot `slot` of world rank `destination`.
struct ExpertTransfer: Equatable {
    let layer: Int
    let expert: Int
    let source: Int
    let destination: Int
    let slot: Int

    /// The copies `change` needs, in the order both sides post them: by destination rank, then
    /// slot. A slot whose rank holds the expert already is filled locally and needs none. The
    /// sender is one of the expert's current holders, `(rank + slot) mod replicas` — spread, so
    /// no one holder sends every copy. `firstWorldRank` is the group's first world rank.
    static func needed(by change: PlacementChange, firstWorldRank: Int) -> [ExpertTransfer] {
        change.movedSlots.map { rank, slot in
            let expert = change.new.slots[rank][slot]
            let holders = change.old.replicas[expert]
            let holder = holders[(rank + slot) % holders.count].rank
            return ExpertTransfer(layer: change.layer, expert: expert, source: firstWorldRank + holder,
                                  destination: firstWorldRank + rank, slot: slot)
        }
    }
}

extension DistributedModel {
    /// Applies placement changes between steps: sends every expert copy they need rank to rank
    /// (`MPI_Isend`/`MPI_Irecv` of the flattened weights, one tag per layer; only slots whose
    /// rank does not hold their expert move), checks what arrived, agrees on the outcome over
    /// `world`, and only then lets every changed layer adopt its new placement — all ranks at
    /// once, or none (`MigrationError`). Collective over `world`; every rank passes the same
    /// changes. `step` is the step they follow (for messages); `failHere`: testing aid, this rank
    /// reports a failed migration.
    package func migrate(_ changes: [PlacementChange], world: Communicator, step: Int, failHere: Bool = false) throws -> MigrationOutcome {
        let start = MPIRuntime.wallTime()
        var outcome = MigrationOutcome()
        let requests = RequestList()
        // Buffers live until waitAll (and the checks after it).
        var outgoing: [UnsafeMutableBufferPointer<Float>] = []
        var incoming: [(layer: Int, slot: Int, values: UnsafeMutableBufferPointer<Float>)] = []
        defer {
            for buffer in outgoing { buffer.deallocate() }
            for buffer in incoming { buffer.values.deallocate() }
        }
        for change in changes {
            let placement = placements[change.layer]
            let first = placement.ranks(ofGroup: change.group).lowerBound
            let form = configuration.form(.expert, layer: change.layer)
            let count = form.parameterCount(dModel: configuration.dModel)
            for transfer in ExpertTransfer.needed(by: change, firstWorldRank: first) {
                outcome.experts += 1
                outcome.bytes += count * MemoryLayout<Float>.stride
                if transfer.source == worldRank {
                    let layer = layers[change.layer]
                    let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
                    _ = buffer.initialize(from: layer.slotWeights[layer.slotExperts.firstIndex(of: transfer.expert)!].flattened)
                    outgoing.append(buffer)
                    try world.sendNonblocking(UnsafeRawPointer(buffer.baseAddress), rows: count, rowBytes: MemoryLayout<Float>.stride,
                                              to: transfer.destination, tag: change.layer, into: requests)
                }
                if transfer.destination == worldRank {
                    let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
                    incoming.append((change.layer, transfer.slot, buffer))
                    try world.receiveNonblocking(UnsafeMutableRawPointer(buffer.baseAddress), rows: count, rowBytes: MemoryLayout<Float>.stride,
                                                 from: transfer.source, tag: change.layer, into: requests)
                }
            }
        }
        try requests.waitAll()
        // What arrived, checked; then every rank's verdict before anyone adopts.
        var received: [Int: [Int: ExpertWeights]] = [:]  // layer → slot → weights
        var problem: String? = failHere ? "testing aid --fail-migration" : nil
        for (layer, slot, values) in incoming where problem == nil {
            let form = configuration.form(.expert, layer: layer)
            guard values.allSatisfy(\.isFinite), let weights = ExpertWeights(flattened: Array(values), form: form, dModel: configuration.dModel) else {
                problem = "layer \(layer) slot \(slot): the received expert weights are not finite"
                break
            }
            received[layer, default: [:]][slot] = weights
        }
        if let failed = try world.lowestFailingRank(failed: problem != nil) {
            throw MigrationError(step: step, rank: failed, detail: failed == worldRank ? problem : nil)
        }
        for change in changes where placements[change.layer].group(ofRank: worldRank) == change.group {
            let layer = layers[change.layer]
            let here = placements[change.layer].rankInGroup(worldRank)
            let weights = change.new.slots[here].enumerated().map { slot, expert in
                received[change.layer]?[slot] ?? layer.slotWeights[layer.slotExperts.firstIndex(of: expert)!]
            }
            layer.adopt(change.new, weights: weights)
        }
        outcome.seconds = try world.allReduce(MPIRuntime.wallTime() - start, .maximum)
        return outcome
    }
}
