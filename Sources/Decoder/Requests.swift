import MoE

/// One sequence to generate: its prompt (token ids), the step it may start at (continuous
/// batching: a request joins between decode steps), and its new-token budget.
package struct GenerationRequest: Sendable, Equatable {
    /// Its place in the input (output order, and the sampler's stream).
    package var id: Int
    package var prompt: [Int]
    package var arrivalStep: Int
    package var maxNewTokens: Int

    package init(id: Int, prompt: [Int], arrivalStep: Int = 0, maxNewTokens: Int) {
        (self.id, self.prompt, self.arrivalStep, self.maxNewTokens) = (id, prompt, arrivalStep, maxNewTokens)
    }

    /// Slots of the KV cache it takes: every position it will hold.
    package var cacheSlots: Int { prompt.count + maxNewTokens }
}

/// A request as it ran: the tokens it produced, why it stopped, when.
package struct GeneratedSequence: Sendable, Equatable {
    package var id: Int
    package var tokens: [Int]
    /// "eos" or "length".
    package var finishReason: String
    /// Seconds from the start of its arrival step to its first new token, and each later
    /// token's seconds after the one before.
    package var timeToFirstToken: Double
    package var tokenLatencies: [Double]
}

/// Why a request cannot run (the first problem, naming the request and what is wrong).
package struct RequestError: Error, CustomStringConvertible {
    package let description: String
}

extension GenerationRequest {
    /// The first problem of `requests` for `decoder` with a KV cache of `cacheSlots` slots per rank.
    package static func check(_ requests: [GenerationRequest], decoder: DecoderConfiguration, cacheSlots: Int, source: String) -> RequestError? {
        for request in requests {
            let name = "\(source): sequence \(request.id + 1)"
            if request.prompt.isEmpty { return RequestError(description: "\(name): the prompt is empty") }
            if let bad = request.prompt.firstIndex(where: { !(0..<decoder.vocabulary).contains($0) }) {
                return RequestError(description: "\(name), token \(bad + 1): id \(request.prompt[bad]) is outside the vocabulary (0..<\(decoder.vocabulary))")
            }
            if request.cacheSlots > decoder.maxPositions {
                return RequestError(description: "\(name): \(request.prompt.count) prompt tokens + \(request.maxNewTokens) new ones exceed the model's context of \(decoder.maxPositions) positions")
            }
            if request.cacheSlots > cacheSlots {
                return RequestError(description: "\(name): needs \(request.cacheSlots) KV-cache slots (prompt + new tokens) but the cache holds \(cacheSlots) per rank; give a larger --kv-cache-gib or fewer --max-new-tokens")
            }
        }
        return nil
    }
}
