/// Every layer's keys and values for the sequences of this rank, preallocated once
/// (`--kv-cache-gib`): `capacity` token slots per layer, `keyWidth` and `valueWidth` values per
/// slot (grouped-query attention: KV heads × head width each; latent attention: the latent and
/// the rotated shared key as the key row, no value row — `DecoderConfiguration.cacheWidths`). A sequence reserves a contiguous run of slots for its whole length
/// (prompt + new tokens) when it is admitted and frees them when it ends; the run's slot i holds
/// position i.
package final class KVCache {
    package let layers: Int
    package let capacity: Int
    package let keyWidth: Int
    package let valueWidth: Int
    /// `keys[l]`: `[capacity, keyWidth]`, `values[l]`: `[capacity, valueWidth]`.
    private(set) var keys: [[Float]]
    private(set) var values: [[Float]]
    /// Reserved runs, by start slot: their lengths.
    private var reserved: [Int: Int] = [:]

    /// Bytes one token takes (every layer's K and V).
    package static func bytesPerToken(layers: Int, widths: (key: Int, value: Int)) -> Int {
        layers * (widths.key + widths.value) * MemoryLayout<Float>.stride
    }

    package init(layers: Int, capacity: Int, widths: (key: Int, value: Int)) {
        (self.layers, self.capacity, keyWidth, valueWidth) = (layers, capacity, widths.key, widths.value)
        // One buffer per layer and per K and V: copies of one array would share its storage until
        // the first write, which would then copy a whole layer (seconds for a large cache).
        keys = (0..<layers).map { _ in [Float](repeating: 0, count: capacity * widths.key) }
        values = (0..<layers).map { _ in [Float](repeating: 0, count: max(capacity * widths.value, 1)) }
    }

    /// Slots in use.
    package var usedSlots: Int { reserved.values.reduce(0, +) }
    package var bytes: Int { Self.bytesPerToken(layers: layers, widths: (keyWidth, valueWidth)) * capacity }

    /// The start of a free run of `length` slots (first fit), now reserved; nil when none is free.
    package func reserve(_ length: Int) -> Int? {
        var start = 0
        for (runStart, runLength) in reserved.sorted(by: { $0.key < $1.key }) {
            if runStart - start >= length { break }
            start = runStart + runLength
        }
        guard start + length <= capacity else { return nil }
        reserved[start] = length
        return start
    }

    package func release(_ start: Int) { reserved[start] = nil }

    /// Writes a key row and a value row (none when `valueWidth` is 0) at `slot` of `layer`.
    func store(layer: Int, slot: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>?) {
        keys[layer].withUnsafeMutableBufferPointer { k in (k.baseAddress! + slot * keyWidth).update(from: key, count: keyWidth) }
        guard let value, valueWidth > 0 else { return }
        values[layer].withUnsafeMutableBufferPointer { v in (v.baseAddress! + slot * valueWidth).update(from: value, count: valueWidth) }
    }

    /// Reads `layer`'s keys and values.
    func withLayer<R>(_ layer: Int, _ body: (UnsafePointer<Float>, UnsafePointer<Float>) -> R) -> R {
        keys[layer].withUnsafeBufferPointer { k in values[layer].withUnsafeBufferPointer { v in body(k.baseAddress!, v.baseAddress!) } }
    }
}
