import Foundation

/// About how much memory one process needs for a model, computed before anything is allocated,
/// so a model or token count inside the documented limits that does not fit this machine is one
/// line naming the need, not a "failed to allocate" crash on every rank.
///
/// Counted in float32 values, per layer: the weights this process holds (norm, gate, its
/// experts, a residual layer's dense MLP and coefficient) and the layer's reused buffers for
/// `tokens` tokens — normalised rows and logits; dispatch send, receive, compaction and combine
/// buffers of up to k·T rows each; under capacity-mode plan caching, padded blocks up to every
/// expert's capacity; each expert's gathered rows (its capacity from every source rank, k·T when
/// dropless) with the FFN's hidden buffer(s). An estimate of the steady state, not a bound.
package struct MemoryEstimate: Equatable, Sendable {
    package var weightBytes = 0
    package var bufferBytes = 0
    package var totalBytes: Int { weightBytes + bufferBytes }

    /// `expertSlots(l)`: the expert slots of layer l this process may hold (its experts, or the
    /// slots per rank with redundant experts); `tokens`: tokens per step on
    /// this process; `sourceRanks`: ranks whose tokens reach this process's experts.
    package static func of(
        model: ModelConfiguration, expertSlots: (Int) -> Int, tokens: Int, sourceRanks: Int, capacityPlanCache: Bool
    ) -> MemoryEstimate {
        let d = model.dModel
        let gated = model.activation.isGated
        var floats = (weights: 0, buffers: tokens * d)  // the batch itself
        for (index, layer) in model.layers.enumerated() {
            let k = layer.topK
            let dense = model.form(.dense, layer: index)
            if layer.dense {
                floats.weights += 2 * d + dense.parameterCount(dModel: d)
                floats.buffers += 2 * tokens * d + tokens * dense.dFF * (gated ? 2 : 1)
                continue
            }
            let expert = model.form(.expert, layer: index)
            let dFF = expert.dFF
            floats.weights += 2 * d + d * layer.experts + expertSlots(index) * expert.parameterCount(dModel: d)
            if layer.residual { floats.weights += dense.parameterCount(dModel: d) + 2 * d + 2 }
            if layer.sharedDFF > 0 {
                floats.weights += model.form(.shared, layer: index).parameterCount(dModel: d) + d
                floats.buffers += tokens * d
            }
            floats.buffers += tokens * d + tokens * layer.experts + (layer.residual ? tokens * (d + 2) : 0)
            floats.buffers += 4 * k * tokens * d
            let capacity = Router.capacity(tokenCount: tokens, layer: layer)
            if capacityPlanCache, let capacity { floats.buffers += 2 * layer.experts * capacity * d }
            let rowsPerExpert = min(sourceRanks * (capacity ?? k * tokens), sourceRanks * k * tokens)
            floats.buffers += rowsPerExpert * (2 * d + (gated ? 2 : 1) * dFF)
        }
        return MemoryEstimate(weightBytes: floats.weights * 4, bufferBytes: floats.buffers * 4)
    }

    /// The machine's physical memory in bytes (`sysconf`), 0 where unknown.
    package static var physicalBytes: Int {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        return pages > 0 && size > 0 ? pages * size : 0
    }

    /// Why this estimate does not fit a share of the machine — `processes` processes on a node of
    /// `physicalBytes` — or nil when it fits within 90% of the share.
    package func problem(processes: Int, physicalBytes: Int = MemoryEstimate.physicalBytes) -> String? {
        guard physicalBytes > 0 else { return nil }
        let share = physicalBytes / max(processes, 1)
        guard Double(totalBytes) > 0.9 * Double(share) else { return nil }
        func gib(_ bytes: Int) -> String { String(format: "%.1f GiB", Double(bytes) / Double(1 << 30)) }
        return "the model needs about \(gib(totalBytes)) per process (weights \(gib(weightBytes)), buffers \(gib(bufferBytes))) "
            + "but this node has \(gib(physicalBytes))" + (processes > 1 ? " for \(processes) ranks (\(gib(share)) each)" : "")
            + "; use more ranks or nodes, fewer tokens per rank, or a smaller model"
    }
}
