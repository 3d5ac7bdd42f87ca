/// How far a lower-precision result is from fp32's, summed the way `moe reference` and
/// `moe run --compare-fp32` report it: max relative = max|a − r| / max|r|, mean relative =
/// Σ|a − r| / Σ|r| over every value seen. Tallies add (across slots, steps and ranks).
package struct PrecisionError: Sendable, Equatable {
    package var largestDifference: Float = 0
    package var largestReference: Float = 0
    package var differences = 0.0
    package var magnitudes = 0.0
    /// Rows (tokens) compared.
    package var rows = 0

    package init() {}

    /// Adds `rows` rows of `count / rows` values: `values` against `reference`.
    package mutating func add(_ values: UnsafePointer<Float>, reference: UnsafePointer<Float>, count: Int, rows: Int) {
        for index in 0..<count {
            let difference = abs(values[index] - reference[index]), magnitude = abs(reference[index])
            largestDifference = max(largestDifference, difference)
            largestReference = max(largestReference, magnitude)
            differences += Double(difference)
            magnitudes += Double(magnitude)
        }
        self.rows += rows
    }

    /// Adds whole arrays of equal length (`rows` rows).
    package mutating func add(_ values: [Float], reference: [Float], rows: Int) {
        precondition(values.count == reference.count)
        values.withUnsafeBufferPointer { a in reference.withUnsafeBufferPointer { add(a.baseAddress!, reference: $0.baseAddress!, count: values.count, rows: rows) } }
    }

    package var maxRelative: Double { largestReference > 0 ? Double(largestDifference / largestReference) : 0 }
    package var meanRelative: Double { magnitudes > 0 ? differences / magnitudes : 0 }

    /// Two tallies as one (the maxima of the maxima, the sums of the sums).
    package static func + (lhs: PrecisionError, rhs: PrecisionError) -> PrecisionError {
        var sum = lhs
        sum.largestDifference = max(lhs.largestDifference, rhs.largestDifference)
        sum.largestReference = max(lhs.largestReference, rhs.largestReference)
        sum.differences += rhs.differences
        sum.magnitudes += rhs.magnitudes
        sum.rows += rhs.rows
        return sum
    }
}
