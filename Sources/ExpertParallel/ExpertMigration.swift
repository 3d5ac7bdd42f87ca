import MessagePassing
import MoE

/// Why a migration did not apply. Every rank throws it (the ranks agree before anyone adopts),
/// naming the lowest failing rank; `detail` is that rank's own cause, nil on the others.
package struct MigrationError: AgreedFailure {
    package let step: Int
    package let rank: Int
    package let detail: String?

    package var agreedReportingRank: Int? { rank }

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
    /// (`MPI_Isend`/`MPI_Irecv` of the expert backend's own weight bytes, `PreparedFFN.wireBytes`, one tag per layer; only slots whose
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
        var outgoing: [UnsafeMutableRawBufferPointer] = []
        var incoming: [(layer: Int, slot: Int, bytes: UnsafeMutableRawBufferPointer)] = []
        defer {
            for buffer in outgoing { buffer.deallocate() }
            for buffer in incoming { buffer.bytes.deallocate() }
        }
        for change in changes {
            let placement = placements[change.layer]
            let first = placement.ranks(ofGroup: change.group).lowerBound
            let layer = layers[change.layer]
            let count = layer.kernels.wireByteCount(form: configuration.form(.expert, layer: change.layer), dModel: configuration.dModel)
            for transfer in ExpertTransfer.needed(by: change, firstWorldRank: first) {
                outcome.experts += 1
                outcome.bytes += count
                if transfer.source == worldRank {
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 16)
                    layer.slotFFNs[layer.slotExperts.firstIndex(of: transfer.expert)!].wireBytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
                    outgoing.append(buffer)
                    try world.sendNonblocking(UnsafeRawPointer(buffer.baseAddress!), rows: count, rowBytes: 1, to: transfer.destination, tag: change.layer, into: requests)
                }
                if transfer.destination == worldRank {
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 16)
                    incoming.append((change.layer, transfer.slot, buffer))
                    try world.receiveNonblocking(buffer.baseAddress!, rows: count, rowBytes: 1, from: transfer.source, tag: change.layer, into: requests)
                }
            }
        }
        try requests.waitAll()
        // What arrived, restored in the backend's form and checked; then every rank's verdict
        // before anyone adopts.
        var received: [Int: [Int: any PreparedFFN]] = [:]  // layer → slot → FFN
        var problem: String? = failHere ? "testing aid --fail-migration" : nil
        for (layer, slot, bytes) in incoming where problem == nil {
            let form = configuration.form(.expert, layer: layer)
            let count = layers[layer].kernels.wireByteCount(form: form, dModel: configuration.dModel)
            guard let ffn = layers[layer].kernels.restore(wireBytes: UnsafeRawBufferPointer(rebasing: bytes[..<count]), form: form, dModel: configuration.dModel) else {
                problem = "layer \(layer) slot \(slot): the received expert weights are not finite"
                break
            }
            received[layer, default: [:]][slot] = ffn
        }
        if let failed = try world.lowestFailingRank(failed: problem != nil) {
            throw MigrationError(step: step, rank: failed, detail: failed == worldRank ? problem : nil)
        }
        for change in changes where placements[change.layer].group(ofRank: worldRank) == change.group {
            let layer = layers[change.layer]
            let here = placements[change.layer].rankInGroup(worldRank)
            let ffns = change.new.slots[here].enumerated().map { slot, expert in
                received[change.layer]?[slot] ?? layer.slotFFNs[layer.slotExperts.firstIndex(of: expert)!]
            }
            layer.adopt(change.new, experts: ffns)
        }
        outcome.seconds = try world.allReduce(MPIRuntime.wallTime() - start, .maximum)
        return outcome
    }
}
