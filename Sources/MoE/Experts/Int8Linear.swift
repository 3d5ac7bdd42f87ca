/// A dense product `y = x · W`, W `[inner, columns]` held as int8 codes with one scale per output
/// column, activations quantised per row right before it: the int8 experts' quantisation and
/// kernels (`Int8Kernels`: SwiftMoE's own for a few rows, oneDNN's where it is exact) for a
/// matrix outside the experts — the decoder's LM head under `moe generate --head-precision int8`.
/// Weight bytes are a quarter of fp32's plus the scales.
package struct Int8Linear: Sendable {
    let matrix: QuantizedMatrix
    let kernels: Int8Kernels

    /// Quantises row-major `[inner, columns]` fp32 weights for `kernels`.
    package init(_ weights: [Float], inner: Int, columns: Int, kernels: Int8Kernels) {
        var matrix = QuantizedMatrix(weights, inner: inner, columns: columns, group: inner, isa: kernels.isa)
        if let oneDNN = kernels.oneDNN { matrix.oneDNNReady = OneDNN.int8Ready(inner: inner, columns: columns, form: oneDNN) }
        (self.matrix, self.kernels) = (matrix, kernels)
    }

    package var bytesHeld: Int { matrix.codes.count + 4 * matrix.scales.count }
    package var implementation: String { kernels.implementation }

    /// `y[rows, columns] = x[rows, inner] · W`.
    package func multiply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>) {
        let (inner, columns) = (matrix.inner, matrix.columns)
        guard rows > 0 else { return }
        // The activations' codes (a few rows at decode: small next to the weights).
        var codes = [Int8](repeating: 0, count: rows * inner), scales = [Float](repeating: 0, count: rows)
        codes.withUnsafeMutableBufferPointer { a in
            scales.withUnsafeMutableBufferPointer { aScales in
                CPUKernels.quantizeRows(x, rows: rows, width: inner, codes: a.baseAddress!, scales: aScales.baseAddress!,
                                        levels: kernels.activationLevels, isa: kernels.isa)
                matrix.codes.withUnsafeBufferPointer { w in
                    matrix.scales.withUnsafeBufferPointer { wScales in
                        if let oneDNN = kernels.usesOneDNN(rows: rows, matrix),
                           matrix.sums.withUnsafeBufferPointer({ sums in
                               OneDNN.int8GEMM(a.baseAddress!, aScales: aScales.baseAddress!, rows: rows, inner: inner, w.baseAddress!,
                                               wScales: wScales.baseAddress!, wSums: sums.baseAddress!, columns: columns, form: oneDNN, into: y, accumulate: false)
                           }) {
                            return
                        }
                        CPUKernels.int8GEMM(a.baseAddress!, aScales: aScales.baseAddress!, rows: rows, inner: inner, w.baseAddress!,
                                            wScales: wScales.baseAddress!, columns: columns, into: y, accumulate: false, isa: kernels.isa)
                    }
                }
            }
        }
    }
}
