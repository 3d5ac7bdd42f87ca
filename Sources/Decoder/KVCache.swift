/// Every layer's keys and values for the sequences of this rank, preallocated once
/// (`--kv-cache-gib`): `capacity` token slots per layer, `width` = KV heads × head width values
/// each for K and for V. A sequence reserves a contiguous run of slots for its whole length
/// (prompt + new tokens) when it is admitted and frees them when it ends; the run's slot i holds
/// position i.
package final class KVCache {
    package let layers: Int
    package let capacity: Int
    package let width: Int
    /// `keys[l]`, `values[l]`: `[capacity, width]`.
    private(set) var keys: [[Float]]
    private(set) var values: [[Float]]
    /// Reserved runs, by start slot: their lengths.
    private var reserved: [Int: Int] = [:]

    /// Bytes one token takes (every layer's K and V).
    package static func bytesPerToken(layers: Int, width: Int) -> Int { layers * 2 * width * MemoryLayout<Float>.stride }

    package init(layers: Int, capacity: Int, width: Int) {
        (self.layers, self.capacity, self.width) = (layers, capacity, width)
        // One buffer per layer and per K and V: copies of one array would share its storage until
        // the first write, which would then copy a whole layer (seconds for a large cache).
        keys = (0..<layers).map { _ in [Float](repeating: 0, count: capacity * width) }
        values = (0..<layers).map { _ in [Float](repeating: 0, count: capacity * width) }
    }

    /// Slots in use.
    package var usedSlots: Int { reserved.values.reduce(0, +) }
    package var bytes: Int { Self.bytesPerToken(layers: layers, width: width) * capacity }

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

    /// Writes a key and a value row at `slot` of `layer`.
    func store(layer: Int, slot: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        keys[layer].withUnsafeMutableBufferPointer { k in (k.baseAddress! + slot * width).update(from: key, count: width) }
        values[layer].withUnsafeMutableBufferPointer { v in (v.baseAddress! + slot * width).update(from: value, count: width) }
    }

    /// Reads `layer`'s keys and values.
    func withLayer<R>(_ layer: Int, _ body: (UnsafePointer<Float>, UnsafePointer<Float>) -> R) -> R {
        keys[layer].withUnsafeBufferPointer { k in values[layer].withUnsafeBufferPointer { v in body(k.baseAddress!, v.baseAddress!) } }
    }
}
