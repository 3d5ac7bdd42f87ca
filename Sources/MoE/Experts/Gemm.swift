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
        multiply(rows: m, columns: n, inner: k, a, leadingA: k, b, into: c, accumulate: accumulate)
    }

    /// Decode-sized products: one row runs as `cblas_sgemv`, 2 ... `streamingRows` rows through
    /// SwiftMoE's streaming kernel (`CPUKernels.multiplyStreaming`: B read once), more as
    /// `cblas_sgemm`. OpenBLAS's sgemm packs B first, which for a few rows triples the bytes
    /// moved; per-row sgemv reads B once per row. Measured (one thread, weights out of cache, ms;
    /// sgemv × rows / sgemm / streaming): 1024 × 2816 at 1 row 0.63 / 1.58 / 0.81, 2 rows
    /// 1.01 / 1.47 / 0.86, 4 rows 1.43 / 1.29 / 1.18, 8 rows 2.37 / 1.47 / 1.74; 2816 × 1024 at
    /// 2 rows 1.21 / 1.60 / 0.61, 4 rows 1.88 / 1.27 / 0.78, 8 rows 2.44 / 1.36 / 1.44.
    static let streamingRows = 6

    /// The streaming kernel's level: the best this CPU has.
    static let streamingISA = CPUISA.best

    /// `C[r, :] (+)= A[r, :] · B` one row at a time (`cblas_sgemv` on Bᵀ).
    private static func multiplyByRows(rows m: Int, columns n: Int, inner k: Int, _ a: UnsafePointer<Float>, leadingA lda: Int,
                                       _ b: UnsafePointer<Float>, into c: UnsafeMutablePointer<Float>, accumulate: Bool) {
        for row in 0..<m {
            cblas_sgemv(CblasRowMajor, CblasTrans, Int32(k), Int32(n), 1, b, Int32(n), a + row * lda, 1, accumulate ? 1 : 0, c + row * n, 1)
        }
    }

    /// `C[m, n] (+)= A[m, k] · B[k, n]` where A's rows are `lda` floats apart (a column block of
    /// a wider matrix); B and C densely packed. Wraps `cblas_sgemv`, the streaming kernel or
    /// `cblas_sgemm` by the row count (`streamingRows`).
    package static func multiply(
        rows m: Int, columns n: Int, inner k: Int, _ a: UnsafePointer<Float>, leadingA lda: Int, _ b: UnsafePointer<Float>,
        into c: UnsafeMutablePointer<Float>, accumulate: Bool
    ) {
        guard m > 0, n > 0, k > 0 else { return }
        if m == 1 {
            multiplyByRows(rows: m, columns: n, inner: k, a, leadingA: lda, b, into: c, accumulate: accumulate)
            return
        }
        if m <= streamingRows {
            CPUKernels.multiplyStreaming(rows: m, columns: n, inner: k, a, leadingA: lda, b, into: c, accumulate: accumulate, isa: streamingISA)
            return
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k),
                    1, a, Int32(lda), b, Int32(n), accumulate ? 1 : 0, c, Int32(n))
    }

    /// `C[m, n] = A[m, k] · op(B)` with every matrix strided: A's rows `lda` apart, C's `ldc`; B is
    /// `[k, n]` with rows `ldb` apart, or with `transposeB` stored as `[n, k]` (rows `ldb` apart)
    /// and used transposed. (Attention's scores Q·Kᵀ and mixtures P·V over the KV cache.)
    package static func multiplyStrided(
        rows m: Int, columns n: Int, inner k: Int, _ a: UnsafePointer<Float>, leadingA lda: Int,
        _ b: UnsafePointer<Float>, leadingB ldb: Int, transposeB: Bool, into c: UnsafeMutablePointer<Float>, leadingC ldc: Int
    ) {
        guard m > 0, n > 0, k > 0 else { return }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k),
                    1, a, Int32(lda), b, Int32(ldb), 0, c, Int32(ldc))
    }

    /// OpenBLAS's thread count for this process (`openblas_set_num_threads`). SwiftMoE sets it
    /// per rank so that ranks × threads does not exceed the cores.
    package static func setThreadCount(_ threads: Int) { openblas_set_num_threads(Int32(max(1, threads))) }

    package static var threadCount: Int { Int(openblas_get_num_threads()) }

    /// The kernel family OpenBLAS chose (`openblas_get_corename`), e.g. "Haswell".
    package static var coreName: String { String(cString: openblas_get_corename()) }
}
