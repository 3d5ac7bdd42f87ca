import ExpertParallel
import FileFormats
import Foundation
import MessagePassing
import MoE

/// What a generation produced over the job, on rank 0: every sequence in input order, its prompt
/// logits (when kept), and the run's rates, latencies and time per phase.
package struct GenerationReport {
    package var sequences: [GeneratedSequence]
    /// Every kept prompt position's logits, prompts in input order, `[positions, V]`.
    package var prefillLogits: [Float]
    package var totals: GenerationTotals
    /// The slowest rank's seconds in attention and in the LM head.
    package var attentionSeconds: Double
    package var headSeconds: Double
    package var cacheSlots: Int
    package var cacheBytes: Int
    /// Largest KV-cache use of any rank, in slots.
    package var peakCacheSlots: Int
    /// Rank 0's steps (rows over the job, wall time and phases of the slowest rank).
    package var steps: [GenerationStep]

    /// Gathers every rank's sequences to rank 0 (nil elsewhere). Collective over `world`.
    @MainActor
    package static func gather(_ generator: Generator, world: Communicator, cacheSlots: Int) throws -> GenerationReport? {
        let local = JSONValue.object([
            ("sequences", .array(generator.finished.map { sequence in
                .object([("id", .number(Double(sequence.id))), ("tokens", .array(sequence.tokens.map { .number(Double($0)) })),
                         ("finish", .string(sequence.finishReason)), ("ttft", .number(sequence.timeToFirstToken)),
                         ("latencies", .array(sequence.tokenLatencies.map { .number($0) }))])
            })),
            ("logits", .array(generator.prefillLogits.sorted { $0.key < $1.key }.map { id, values in
                .object([("id", .number(Double(id))), ("values", .array(values.map { .number(Double($0)) }))])
            })),
        ])
        let maxima = try world.allReduce([generator.totals.attentionSeconds, generator.totals.headSeconds, Double(generator.totals.peakCacheSlots)], .maximum)
        guard let parts = try world.gatherBytes(Array(local.serialized(pretty: false).utf8), root: 0) else { return nil }
        var sequences: [GeneratedSequence] = [], logits: [(Int, [Float])] = []
        for part in parts {
            guard case let .object(members)? = try? JSONParser.parse(part) else { continue }
            for (key, value) in members {
                guard case let .array(items) = value else { continue }
                for case let .object(fields) in items {
                    let field = { (name: String) in fields.first { $0.key == name }?.value }
                    guard case let .number(id)? = field("id") else { continue }
                    if key == "sequences", case let .array(tokens)? = field("tokens"), case let .string(finish)? = field("finish"),
                       case let .number(ttft)? = field("ttft"), case let .array(latencies)? = field("latencies") {
                        sequences.append(GeneratedSequence(id: Int(id), tokens: tokens.compactMap { if case let .number(n) = $0 { Int(n) } else { nil } },
                                                           finishReason: finish, timeToFirstToken: ttft,
                                                           tokenLatencies: latencies.compactMap { if case let .number(n) = $0 { n } else { nil } }))
                    } else if key == "logits", case let .array(values)? = field("values") {
                        logits.append((Int(id), values.compactMap { if case let .number(n) = $0 { Float(n) } else { nil } }))
                    }
                }
            }
        }
        sequences.sort { $0.id < $1.id }
        return GenerationReport(sequences: sequences, prefillLogits: logits.sorted { $0.0 < $1.0 }.flatMap(\.1), totals: generator.totals,
                                attentionSeconds: maxima[0], headSeconds: maxima[1], cacheSlots: cacheSlots, cacheBytes: generator.cache.bytes,
                                peakCacheSlots: Int(maxima[2]), steps: generator.steps)
    }

    /// The `q`-quantile of `values` (nearest rank), 0 when empty.
    static func quantile(_ values: [Double], _ q: Double) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let rank = Int((q * Double(sorted.count)).rounded(.up))  // 1-based
        return sorted[min(sorted.count, max(rank, 1)) - 1]
    }

    package var timeToFirstToken: [Double] { sequences.map(\.timeToFirstToken) }
    package var tokenLatencies: [Double] { sequences.flatMap(\.tokenLatencies) }

    /// The summary, as `moe generate` prints it.
    package func summaryLines(algorithm: String) -> [String] {
        let t = totals
        let phases = zip(PhaseTimes.names, t.phases.values).map { "\($0) \(Self.ms($1))" }.joined(separator: ", ")
        let newTokens = sequences.reduce(0) { $0 + $1.tokens.count }
        return [
            "[\(algorithm)] \(sequences.count) sequences, \(newTokens) new tokens in \(t.steps) steps; finished: "
                + Dictionary(grouping: sequences, by: \.finishReason).sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.count)" }.joined(separator: ", "),
            "[\(algorithm)] prefill: \(t.prefillRows) tokens, " + String(format: "%.0f tokens/s", Double(t.prefillRows) / max(t.prefillSeconds, 1e-9))
                + "; decode: \(t.decodeRows) tokens, " + String(format: "%.0f tokens/s", Double(t.decodeRows) / max(t.decodeSeconds, 1e-9))
                + String(format: " (MoE exchanges %.0f%% of decode time)", 100 * t.decodeExchangeSeconds / max(t.decodeSeconds, 1e-9)),
            "[\(algorithm)] time to first token p50 \(Self.ms(Self.quantile(timeToFirstToken, 0.5))) ms, p99 \(Self.ms(Self.quantile(timeToFirstToken, 0.99))) ms; "
                + "per-token latency p50 \(Self.ms(Self.quantile(tokenLatencies, 0.5))) ms, p99 \(Self.ms(Self.quantile(tokenLatencies, 0.99))) ms",
            "[\(algorithm)] time (ms, slowest rank): attention \(Self.ms(attentionSeconds)), \(phases), LM head \(Self.ms(headSeconds))",
            String(format: "[\(algorithm)] KV cache: %d slots per rank (%.2f MiB), at most %d in use", cacheSlots, Double(cacheBytes) / 1_048_576, peakCacheSlots),
        ]
    }

    static func ms(_ seconds: Double) -> String { String(format: "%.1f", seconds * 1000) }

    /// The `--output` document.
    /// `texts`: each sequence's new tokens as text (when a tokenizer is at hand).
    package func json(model: String, texts: [String]? = nil) -> JSONValue {
        let t = totals
        return .object([
            ("model", .string(model)),
            ("sequences", .array(sequences.enumerated().map { index, sequence in
                .object([("id", .number(Double(sequence.id))), ("tokens", .array(sequence.tokens.map { .number(Double($0)) }))]
                        + (texts.map { [("text", JSONValue.string($0[index]))] } ?? []) + [
                         ("finish_reason", .string(sequence.finishReason)), ("time_to_first_token_s", .number(sequence.timeToFirstToken)),
                         ("token_latencies_s", .array(sequence.tokenLatencies.map { .number($0) }))])
            })),
            ("prefill_tokens", .number(Double(t.prefillRows))), ("prefill_seconds", .number(t.prefillSeconds)),
            ("decode_tokens", .number(Double(t.decodeRows))), ("decode_seconds", .number(t.decodeSeconds)), ("decode_exchange_seconds", .number(t.decodeExchangeSeconds)),
            ("time_to_first_token_p50_s", .number(Self.quantile(timeToFirstToken, 0.5))),
            ("token_latency_p50_s", .number(Self.quantile(tokenLatencies, 0.5))), ("token_latency_p99_s", .number(Self.quantile(tokenLatencies, 0.99))),
            ("phase_seconds", .object([("attention", .number(attentionSeconds))] + zip(PhaseTimes.names, t.phases.values).map { ($0, .number($1)) }
                                      + [("lm_head", .number(headSeconds))])),
            ("kv_cache", .object([("slots_per_rank", .number(Double(cacheSlots))), ("bytes_per_rank", .number(Double(cacheBytes))),
                                  ("peak_slots", .number(Double(peakCacheSlots)))])),
            ("steps", .array(steps.map { step in
                .object([("step", .number(Double(step.number + 1))), ("prefill_tokens", .number(Double(step.jobPrefillRows))),
                         ("decode_tokens", .number(Double(step.jobDecodeRows))), ("seconds", .number(step.wallSeconds)),
                         ("tokens_per_second", .number(Double(step.jobPrefillRows + step.jobDecodeRows) / max(step.wallSeconds, 1e-9))),
                         // The MoE phases are the slowest rank's; attention and the LM head rank 0's.
                         ("phase_seconds", .object([("attention", .number(step.attentionSeconds))]
                                                   + zip(PhaseTimes.names, step.outcome.slowestPhases.values).map { ($0, .number($1)) }
                                                   + [("lm_head", .number(step.headSeconds))])),
                         ("live_sequences_rank0", .number(Double(step.liveSequences))), ("waiting_sequences_rank0", .number(Double(step.waitingSequences))),
                         ("kv_slots_rank0", .number(Double(step.cacheSlotsUsed)))])
            })),
        ])
    }
}
