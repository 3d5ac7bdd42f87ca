import Foundation
import RandomStreams
import Testing
@testable import MoE

@Suite("fp32 products of a few rows: the streaming kernel (B read once) on every ISA level")
struct StreamingGemmTests {
    private static func values(_ count: Int, seed: UInt64) -> [Float] {
        var random = SeededGenerator(seed: seed)
        return (0..<count).map { _ in random.nextSignedUnitFloat() }
    }

    /// `C = A · B (+ C)` summed in Double.
    private static func reference(_ a: [Float], lda: Int, _ b: [Float], rows: Int, inner: Int, columns: Int, start: [Float]) -> [Float] {
        (0..<rows * columns).map { index in
            let (row, column) = (index / columns, index % columns)
            var sum = Double(start[index])
            for k in 0..<inner { sum += Double(a[row * lda + k]) * Double(b[k * columns + column]) }
            return Float(sum)
        }
    }

    @Test("equal to a Double reference within 1e-5 of the largest output, accumulating or not, A strided; the same bits on every level; a row's result does not depend on the other rows",
          arguments: [(1, 1, 1), (2, 7, 13), (3, 9, 1030), (6, 67, 1031), (8, 16, 2049)])
    func matchesReference(rows: Int, inner: Int, columns: Int) {
        let lda = inner + 3
        let a = Self.values(rows * lda, seed: 1), b = Self.values(inner * columns, seed: 2), start = Self.values(rows * columns, seed: 3)
        let levels = CPUISA.allCases.filter { $0 != .native && (try? $0.resolved().get()) != nil }
        for accumulate in [false, true] {
            let expected = Self.reference(a, lda: lda, b, rows: rows, inner: inner, columns: columns, start: accumulate ? start : [Float](repeating: 0, count: start.count))
            let largest = expected.map(abs).max()!
            var results: [[Float]] = []
            for level in levels {
                var c = start
                a.withUnsafeBufferPointer { a in
                    b.withUnsafeBufferPointer { b in
                        c.withUnsafeMutableBufferPointer {
                            CPUKernels.multiplyStreaming(rows: rows, columns: columns, inner: inner, a.baseAddress!, leadingA: lda, b.baseAddress!,
                                                         into: $0.baseAddress!, accumulate: accumulate, isa: level)
                        }
                    }
                }
                let error = zip(c, expected).map { abs($0 - $1) }.max()!
                #expect(error <= 1e-5 * max(largest, 1), "\(level) rows \(rows) inner \(inner) columns \(columns) accumulate \(accumulate): error \(error)")
                results.append(c)
            }
            #expect(results.allSatisfy { $0 == results[0] }, "levels \(levels) differ")
            // The last row alone gives the bits it gives among the others.
            var alone = Array(start[(rows - 1) * columns..<rows * columns])
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    alone.withUnsafeMutableBufferPointer {
                        CPUKernels.multiplyStreaming(rows: 1, columns: columns, inner: inner, a.baseAddress! + (rows - 1) * lda, leadingA: lda, b.baseAddress!,
                                                     into: $0.baseAddress!, accumulate: accumulate)
                    }
                }
            }
            #expect(alone == Array(results[0][(rows - 1) * columns..<rows * columns]))
        }
    }
}
