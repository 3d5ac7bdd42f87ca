import Foundation
import RandomStreams

/// How the next token is chosen from the logits: greedily (temperature 0, the largest logit,
/// the lowest id on a tie, as `torch.argmax`), or drawn from softmax(logits / T) restricted to the
/// smallest set of most likely tokens whose probability reaches `topP` (nucleus sampling). A
/// draw uses its own random stream per (seed, request, token index), so a sequence's tokens do not
/// depend on its batch, its rank or the other sequences.
package struct Sampling: Sendable, Equatable {
    package var temperature: Double
    package var topP: Double
    package var seed: UInt64

    package init(temperature: Double = 0, topP: Double = 1, seed: UInt64 = 0) {
        (self.temperature, self.topP, self.seed) = (temperature, topP, seed)
    }

    package var isGreedy: Bool { temperature == 0 }

    /// The token chosen from `logits` (`vocabulary` values) for request `request`'s `index`-th
    /// new token.
    package func choose(_ logits: UnsafePointer<Float>, vocabulary: Int, request: Int, index: Int) -> Int {
        var best = 0
        for token in 1..<vocabulary where logits[token] > logits[best] { best = token }
        guard !isGreedy else { return best }
        var weights = (0..<vocabulary).map { (token: $0, p: exp((Double(logits[$0]) - Double(logits[best])) / temperature)) }
        let total = weights.reduce(0) { $0 + $1.p }
        weights.sort { $0.p != $1.p ? $0.p > $1.p : $0.token < $1.token }
        var kept = 0, mass = 0.0
        while kept < weights.count {
            mass += weights[kept].p / total
            kept += 1
            if mass >= topP { break }
        }
        var random = SeededGenerator(seed: seed, stream: 0x5A3F1E, UInt64(request), UInt64(index))
        let draw = Double(random.next() >> 11) / Double(1 << 53) * mass
        var cumulative = 0.0
        for candidate in weights[..<kept] {
            cumulative += candidate.p / total
            if draw < cumulative { return candidate.token }
        }
        return weights[kept - 1].token
    }
}
