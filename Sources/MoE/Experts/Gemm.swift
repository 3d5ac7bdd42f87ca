internal import COpenBLAS

/// Single-precision matrix multiply and OpenBLAS settings. The only file that imports COpenBLAS.
package enum BLAS {
    /// `C[m, n] = A[m, k] · B[k, n] (+ C if accumulate)`, all row-major and densely packed
    /// (leading dimensions k, n and n). Wraps `cblas_sgemm`. Does nothing when m, n or k is 0
    /// (except that a non-accumulating call with k = 0 zeroes C).
    @inline(__always)
    package static func multiply(
        rows m: Int, columns n: Int, inner k: Int,
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into c: UnsafeMutablePointer<Float>, accumulate: Bool = false
    ) {
        guard m > 0, n > 0 else { return }
        guard k > 0 else {
            if !accumulate { c.update(repeating: 0, count: m * n) }
            return
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k),
                    1, a, Int32(k), b, Int32(n), accumulate ? 1 : 0, c, Int32(n))
    }

    /// `C[m, n] (+)= A[m, k] · B[k, n]` where A's rows are `lda` floats apart (a column block of
    /// a wider matrix); B and C densely packed. Wraps `cblas_sgemm`.
    package static func multiply(
        rows m: Int, columns n: Int, inner k: Int, _ a: UnsafePointer<Float>, leadingA lda: Int, _ b: UnsafePointer<Float>,
        into c: UnsafeMutablePointer<Float>, accumulate: Bool
    ) {
        guard m > 0, n > 0, k > 0 else { return }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k),
                    1, a, Int32(lda), b, Int32(n), accumulate ? 1 : 0, c, Int32(n))
    }

    /// OpenBLAS's thread count for this process (`openblas_set_num_threads`). SwiftMoE sets it
    /// per rank so that ranks × threads does not exceed the cores.
    package static func setThreadCount(_ threads: Int) { openblas_set_num_threads(Int32(max(1, threads))) }

    package static var threadCount: Int { Int(openblas_get_num_threads()) }

    /// The kernel family OpenBLAS chose (`openblas_get_corename`), e.g. "Haswell".
    package static var coreName: String { String(cString: openblas_get_corename()) }
}
