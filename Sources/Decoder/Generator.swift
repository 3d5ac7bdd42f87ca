import ExpertParallel
import Foundation
import MessagePassing
import MoE
import Session

/// Token generation on one rank, run by the library session: this rank's requests (data-parallel
/// attention: each rank its own sequences) go through every decoder layer — attention here, then
/// the layer's MoE through `InferenceSession.forward`, exchanged with every rank as in `moe run` —
/// and a token is chosen per sequence each step.
///
/// A step's batch is every live sequence's next rows: a newly admitted sequence's whole prompt
/// (its prefill), one row (the last token) for each decoding one. Requests are admitted in order
/// once their arrival step has come and the KV cache has room for their whole length; a sequence
/// ends at an end token or after its new-token budget and frees its slots. Every rank runs the
/// same number of steps (a rank with nothing to do still takes part in the exchanges), until no
/// rank has a request left.
@MainActor
package final class Generator {
    package let session: InferenceSession
    let model: ModelConfiguration
    let decoder: DecoderConfiguration
    let weights: DecoderWeights
    let attention: any AttentionLayer
    package let cache: KVCache
    let sampling: Sampling
    /// Whether each prompt position's logits are kept (`prefillLogits`; tests and `--logits-output`).
    let keepPrefillLogits: Bool

    private var waiting: [GenerationRequest]
    private var live: [LiveSequence] = []
    package private(set) var finished: [GeneratedSequence] = []
    /// Per request id, its prompt positions' logits `[prompt, V]` (when kept).
    package private(set) var prefillLogits: [Int: [Float]] = [:]
    package private(set) var totals = GenerationTotals()
    /// Every step of this rank (with the job's rows), in order.
    package private(set) var steps: [GenerationStep] = []

    final class LiveSequence {
        let request: GenerationRequest
        let cacheStart: Int
        var tokens: [Int]
        var prefilled = false
        var generated: [Int] = []
        var firstTokenAt: Double?
        var lastTokenAt = 0.0
        var latencies: [Double] = []
        let arrivedAt: Double

        init(request: GenerationRequest, cacheStart: Int, arrivedAt: Double) {
            (self.request, self.cacheStart, self.tokens, self.arrivedAt) = (request, cacheStart, request.prompt, arrivedAt)
        }
    }

    package init(session: InferenceSession, weights: DecoderWeights, requests: [GenerationRequest], cacheSlots: Int, sampling: Sampling,
                 keepPrefillLogits: Bool = false) {
        self.session = session
        model = session.model
        decoder = session.model.decoder!
        self.weights = weights
        attention = weights.attentionLayers(decoder, dModel: model.dModel)
        cache = KVCache(layers: model.layers.count, capacity: cacheSlots, widths: decoder.cacheWidths)
        self.sampling = sampling
        self.keepPrefillLogits = keepPrefillLogits
        waiting = requests
    }

    /// Runs steps until every rank's requests are done; `observe` sees each step (with the job's
    /// rows). Collective.
    package func run(observe: (GenerationStep) throws -> Void = { _ in }) throws {
        var number = 0
        while true {
            var step = try self.step(number)
            let sums = try session.world.allReduce([live.count + waiting.count, step.prefillRows, step.decodeRows], .sum)
            (step.jobPrefillRows, step.jobDecodeRows) = (sums[1], sums[2])
            totals.add(step)
            steps.append(step)
            try observe(step)
            if sums[0] == 0 { break }
            number += 1
        }
        try session.finish()
    }

    /// One step: admit, build the batch, run the layers, choose the tokens.
    private func step(_ number: Int) throws -> GenerationStep {
        let start = MPIRuntime.wallTime()
        admit(step: number, at: start)
        var rows: [RowPosition] = [], tokens: [Int] = [], lastRows: [Int] = []
        var prefillRows = 0
        for sequence in live {
            let positions = sequence.prefilled ? (sequence.tokens.count - 1)..<sequence.tokens.count : 0..<sequence.tokens.count
            if !sequence.prefilled { prefillRows += positions.count }
            for position in positions {
                rows.append(RowPosition(cacheStart: sequence.cacheStart, position: position))
                tokens.append(sequence.tokens[position])
            }
            lastRows.append(rows.count - 1)
        }
        var batch = TokenBatch(hidden: embed(tokens), taskIds: [], dModel: model.dModel)
        var attentionSeconds = 0.0
        let outcome = try session.forward(&batch, step: number, lastStep: false) { [attention, cache] layer, hidden in
            let begin = MPIRuntime.wallTime()
            attention.forward(&hidden, rows: rows, layer: layer, cache: cache)
            attentionSeconds += MPIRuntime.wallTime() - begin
        }
        let headStart = MPIRuntime.wallTime()
        let logitRows = keepPrefillLogits ? Array(0..<rows.count) : lastRows
        let logits = head(batch.hidden, rows: logitRows)
        let headSeconds = MPIRuntime.wallTime() - headStart
        let now = MPIRuntime.wallTime()
        var cursor = 0
        for (index, sequence) in live.enumerated() {
            let rowCount = sequence.prefilled ? 1 : sequence.tokens.count
            if keepPrefillLogits, !sequence.prefilled {
                prefillLogits[sequence.request.id] = Array(logits[cursor * decoder.vocabulary..<(cursor + rowCount) * decoder.vocabulary])
            }
            let last = keepPrefillLogits ? cursor + rowCount - 1 : index
            cursor += rowCount
            let token = logits.withUnsafeBufferPointer { values in
                sampling.choose(values.baseAddress! + last * decoder.vocabulary, vocabulary: decoder.vocabulary,
                                request: sequence.request.id, index: sequence.generated.count)
            }
            sequence.prefilled = true
            sequence.generated.append(token)
            sequence.tokens.append(token)
            if sequence.firstTokenAt == nil { sequence.firstTokenAt = now } else { sequence.latencies.append(now - sequence.lastTokenAt) }
            sequence.lastTokenAt = now
        }
        let usedBefore = cache.usedSlots
        retireFinished()
        let step = GenerationStep(number: number, outcome: outcome, prefillRows: prefillRows, decodeRows: rows.count - prefillRows,
                                  attentionSeconds: attentionSeconds, headSeconds: headSeconds, wallSeconds: MPIRuntime.wallTime() - start,
                                  liveSequences: live.count, waitingSequences: waiting.count, cacheSlotsUsed: usedBefore)
        return step
    }

    /// Admits the waiting requests whose step has come, in input order, until one does not fit
    /// the cache (it and those after it wait for slots to free).
    private func admit(step: Int, at now: Double) {
        var index = 0
        while index < waiting.count {
            let request = waiting[index]
            guard request.arrivalStep <= step else {
                index += 1
                continue
            }
            guard let start = cache.reserve(request.cacheSlots) else { break }
            waiting.remove(at: index)
            live.append(LiveSequence(request: request, cacheStart: start, arrivedAt: now))
        }
    }

    private func retireFinished() {
        live.removeAll { sequence in
            let ended = decoder.endTokens.contains(sequence.generated.last ?? -1)
            guard ended || sequence.generated.count >= sequence.request.maxNewTokens else { return false }
            cache.release(sequence.cacheStart)
            finished.append(GeneratedSequence(id: sequence.request.id, tokens: sequence.generated, finishReason: ended ? "eos" : "length",
                                              timeToFirstToken: (sequence.firstTokenAt ?? sequence.arrivedAt) - sequence.arrivedAt,
                                              tokenLatencies: sequence.latencies))
            return true
        }
    }

    /// The tokens' embeddings, `[tokens, d]`.
    private func embed(_ tokens: [Int]) -> [Float] {
        let d = model.dModel
        var hidden = [Float](repeating: 0, count: tokens.count * d)
        for (row, token) in tokens.enumerated() {
            for index in 0..<d { hidden[row * d + index] = weights.embedding[token * d + index] }
        }
        return hidden
    }

    /// The logits `[rows.count, V]` of `rows` of `hidden`: final RMSNorm, then the LM head.
    private func head(_ hidden: [Float], rows: [Int]) -> [Float] {
        let d = model.dModel, vocabulary = decoder.vocabulary
        guard !rows.isEmpty else { return [] }
        var picked = [Float](repeating: 0, count: rows.count * d)
        for (index, row) in rows.enumerated() { for i in 0..<d { picked[index * d + i] = hidden[row * d + i] } }
        var normed = picked
        picked.withUnsafeBufferPointer { x in normed.withUnsafeMutableBufferPointer { weights.finalNorm.apply(x.baseAddress!, rows: rows.count, into: $0.baseAddress!) } }
        var logits = [Float](repeating: 0, count: rows.count * vocabulary)
        if let int8Head = weights.int8Head {
            normed.withUnsafeBufferPointer { x in logits.withUnsafeMutableBufferPointer { int8Head.multiply(x.baseAddress!, rows: rows.count, into: $0.baseAddress!) } }
            return logits
        }
        normed.withUnsafeBufferPointer { x in
            weights.lmHeadTransposed.withUnsafeBufferPointer { w in
                logits.withUnsafeMutableBufferPointer { y in
                    BLAS.multiply(rows: rows.count, columns: vocabulary, inner: d, x.baseAddress!, w.baseAddress!, into: y.baseAddress!)
                }
            }
        }
        return logits
    }
}

/// One generation step on this rank.
package struct GenerationStep {
    package var number: Int
    package var outcome: StepOutcome
    package var prefillRows: Int
    package var decodeRows: Int
    package var attentionSeconds: Double
    package var headSeconds: Double
    package var wallSeconds: Double
    package var liveSequences: Int
    package var waitingSequences: Int
    /// KV-cache slots reserved during the step.
    package var cacheSlotsUsed: Int
    /// Rows of every rank (set by `Generator.run`).
    package var jobPrefillRows = 0
    package var jobDecodeRows = 0
}

/// Sums over this rank's steps.
package struct GenerationTotals {
    package var steps = 0
    /// Rows over every rank.
    package var prefillRows = 0
    package var decodeRows = 0
    package var prefillSeconds = 0.0
    package var decodeSeconds = 0.0
    /// Dispatch and combine (the slowest rank's) in decode steps: the MoE exchanges' share of decode.
    package var decodeExchangeSeconds = 0.0
    package var attentionSeconds = 0.0
    package var headSeconds = 0.0
    package var phases = PhaseTimes()
    package var peakCacheSlots = 0

    /// A step counts as prefill when any rank prefilled in it (its time is the prompts' then).
    mutating func add(_ step: GenerationStep) {
        steps += 1
        prefillRows += step.jobPrefillRows
        decodeRows += step.jobDecodeRows
        if step.jobPrefillRows > 0 {
            prefillSeconds += step.wallSeconds
        } else {
            decodeSeconds += step.wallSeconds
            decodeExchangeSeconds += step.outcome.slowestPhases.dispatch + step.outcome.slowestPhases.combine
        }
        attentionSeconds += step.attentionSeconds
        headSeconds += step.headSeconds
        phases = phases + step.outcome.slowestPhases
        peakCacheSlots = max(peakCacheSlots, step.cacheSlotsUsed)
    }
}
