import Foundation

/// The memory bandwidth a weight stream is compared with: a plain sequential read.
package enum MemoryBandwidth {
    /// GB/s of a plain sequential read of `bytes` (rounded down to whole 32-byte vectors; the best
    /// of `repeats`), on this thread.
    package static func plainRead(bytes: Int = 256 << 20, repeats: Int = 3) -> Double {
        let count = max(bytes / 32, 1) * 8
        let buffer = [Float](repeating: 1, count: count)
        var best = Double.infinity
        var sink: Float = 0
        for _ in 0..<repeats {
            let start = DispatchTime.now().uptimeNanoseconds
            buffer.withUnsafeBufferPointer { values in
                // Four independent sums, so the adds' latency does not pace the loads.
                var sums = (SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>())
                let base = UnsafeRawPointer(values.baseAddress!)
                var index = 0
                while index + 32 <= count {
                    sums.0 += (base + 4 * index).loadUnaligned(as: SIMD8<Float>.self)
                    sums.1 += (base + 4 * (index + 8)).loadUnaligned(as: SIMD8<Float>.self)
                    sums.2 += (base + 4 * (index + 16)).loadUnaligned(as: SIMD8<Float>.self)
                    sums.3 += (base + 4 * (index + 24)).loadUnaligned(as: SIMD8<Float>.self)
                    index += 32
                }
                while index + 8 <= count {
                    sums.0 += (base + 4 * index).loadUnaligned(as: SIMD8<Float>.self)
                    index += 8
                }
                sink += (sums.0 + sums.1 + sums.2 + sums.3).sum()
            }
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        precondition(sink > 0)
        return Double(count * 4) / best / 1e9
    }
}
