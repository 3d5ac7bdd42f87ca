// SwiftMoE's hand-written kernels for low-precision experts: CPU feature detection, bf16
// conversion and int8 quantisation and GEMM. Portable C, plus per-function `target`
// attributes (AVX2/FMA) chosen at run time by the caller's `isa` argument; no global compiler
// flags, so the same build runs on every x86-64 CPU. Imported by one Swift file
// (Sources/MoE/Experts/CPUKernels.swift).
#ifndef SWIFTMOE_CKERNELS_H
#define SWIFTMOE_CKERNELS_H

#include <stddef.h>
#include <stdint.h>

/// Feature bits of `smoe_cpu_features` (what the CPU and the OS support).
enum {
    SMOE_CPU_AVX2 = 1 << 0,
    SMOE_CPU_FMA = 1 << 1,
    SMOE_CPU_F16C = 1 << 2,
    SMOE_CPU_AVX512F = 1 << 3,
    SMOE_CPU_AVX512BW = 1 << 4,
    SMOE_CPU_AVX512VNNI = 1 << 5,
    SMOE_CPU_AVX512BF16 = 1 << 6,
};

/// Kernel levels the `isa` arguments take.
enum { SMOE_ISA_PORTABLE = 0, SMOE_ISA_AVX2 = 1 };

/// The CPU's features (cpuid, with the OS's register support), as `SMOE_CPU_*` bits.
uint32_t smoe_cpu_features(void);

/// `dst[i] = bf16(src[i])`, rounded to nearest even; NaN stays NaN.
void smoe_f32_to_bf16(const float *src, uint16_t *dst, size_t count);

/// `dst[i] = float(src[i])` (exact).
void smoe_bf16_to_f32(const uint16_t *src, float *dst, size_t count, int isa);

/// Rounds every value to the nearest bf16, in place (the value stays a float).
void smoe_round_to_bf16(float *values, size_t count);

/// Columns per block of the blocked bf16 weight layout: weights `[inner, columns]` are held as
/// ⌈columns / 32⌉ blocks, block b being `[inner][32]` (columns b·32 …, zero-padded), so one
/// block's weights are one contiguous stream.
enum { SMOE_BF16_BLOCK = 32 };

/// `y[t, n] (+)= Σ_k x[t, k] · float(w[k, n])` for few rows: `x` is `[rows, inner]` float,
/// `w` the blocked bf16 layout of `[inner, columns]`, `y` is `[rows, columns]`. Each weight is
/// read once (widened in registers) for all rows, so a decode-sized call streams half of fp32's
/// bytes. The sum over k runs in k order with fused multiply-adds on every ISA level (so all
/// levels give the same bits).
void smoe_bf16_gemm_rows(const float *x, size_t rows, size_t inner, const uint16_t *w, size_t columns,
                         float *y, int accumulate, int isa);

/// Rows `first ..< first + count` of blocked bf16 weights `[inner, columns]`, widened into
/// `panel` as row-major `[count, columns]` floats (exact).
void smoe_bf16_widen_rows(const uint16_t *w, size_t inner, size_t columns, size_t first, size_t count, float *panel, int isa);

/// Symmetric int8 per row with `levels` steps each side (127 for 8 bits, 63 for 7):
/// `scale[r] = max|x[r, :]| / levels` (1 for an all-zero row) and
/// `q[r, k] = round(x[r, k] / scale[r])` in −levels…levels. `x` is `[rows, width]` row-major.
/// Every `isa` level gives the same bits.
void smoe_quantize_rows(const float *x, size_t rows, size_t width, int8_t *q, float *scale, int levels, int isa);

/// `out[t, n] (+)= a_scale[t] · w_scale[n] · Σ_k a[t, k] · w[n, k]`, the sums exact in int32.
/// `a` is `[rows, inner]` int8, `w` is `[columns, inner]` int8 (one row per output channel),
/// `out` is `[rows, columns]` float; `accumulate` adds to `out` instead of overwriting it.
/// `inner` must be below 2^17 (so the int32 sums cannot overflow).
void smoe_int8_gemm(const int8_t *a, const float *a_scale, size_t rows, size_t inner,
                    const int8_t *w, const float *w_scale, size_t columns,
                    float *out, int accumulate, int isa);

/// `smoe_int8_gemm` with group-wise weight scales (ZeroQuant): `w_scale` is `[columns, groups]`,
/// groups of `group` inputs (the last may be shorter), `groups = ⌈inner / group⌉`, and
/// `out[t, n] (+)= a_scale[t] · Σ_g w_scale[n, g] · Σ_{k ∈ g} a[t, k] · w[n, k]` (int32 per group,
/// float over the groups in order).
void smoe_int8_gemm_grouped(const int8_t *a, const float *a_scale, size_t rows, size_t inner,
                            const int8_t *w, const float *w_scale, size_t group, size_t columns,
                            float *out, int accumulate, int isa);

// MARK: oneDNN (onednn.c; libdnnl)

/// fp32 C[rows, columns] (+)= A[rows, inner] · B[inner, columns] (A's rows `lda` apart, B and C
/// dense), B read once; for a few rows (decode), where OpenBLAS's sgemm packs B first. Every
/// element sums k in order with fused multiply-adds: the same bits on every path.
void smoe_sgemm_stream(const float *a, size_t lda, size_t rows, size_t inner, const float *b, size_t columns,
                       float *c, int accumulate, int isa);

/// Caps oneDNN at `max_isa` (`SMOE_ISA_AVX2`, or anything else for no cap) and sets its (OpenMP)
/// threads. The cap applies only before oneDNN's first primitive: 0 when it applied (or none was
/// asked), else oneDNN's status.
int smoe_dnnl_configure(int max_isa, int threads);

/// The ISA oneDNN runs at ("avx2", "avx512_core_vnni", …).
const char *smoe_dnnl_effective_isa(void);

/// Makes (once per shape) oneDNN's u8·s8→s32 matmul for weights `[columns, inner]`; returns the
/// implementation oneDNN chose ("gemm:jit", "brg:avx512_core_vnni", …), or NULL with `*status`
/// set to oneDNN's status (e.g. 3, unimplemented).
const char *smoe_dnnl_int8_prepare(size_t inner, size_t columns, int *status);

/// 1 when oneDNN's u8·s8 matmul at this shape is exact with activations up to `largest_u8`
/// (its worst case run once: every activation `largest_u8`, every weight 127), else 0.
int smoe_dnnl_int8_exact(size_t inner, size_t columns, int largest_u8);

/// `out[t, n] (+)= a_scale[t] · w_scale[n] · Σ_k a[t, k] · w[n, k]` through oneDNN: the codes
/// `a` are shifted by `zero_point` into u8 (so they must lie in −zero_point … 255 − zero_point), multiplied,
/// and the shift taken back out with `w_sums[n] = Σ_k w[n, k]`, so the int32 sums are those of
/// `smoe_int8_gemm` whenever oneDNN's kernel does not saturate. (AVX2's `vpmaddubsw` adds pairs
/// of u8·s8 products into int16: exact when every u8 is ≤ 127, i.e. codes within ±63 shifted by
/// 64; VNNI kernels are exact for the whole u8 range.) Returns 0, or oneDNN's status.
int smoe_dnnl_int8_gemm(const int8_t *a, const float *a_scale, size_t rows, size_t inner,
                        const int8_t *w, const float *w_scale, const int32_t *w_sums, int zero_point, size_t columns,
                        float *out, int accumulate);

/// Makes (once per shape) oneDNN's bf16·bf16→f32 matmul for row-major weights `[inner, columns]`;
/// the implementation's name, or NULL with `*status` set (oneDNN 2.6 refuses bf16 below AVX-512).
const char *smoe_dnnl_bf16_prepare(size_t inner, size_t columns, int *status);

/// `y[rows, columns] (+)= bf16(x) · w` through oneDNN (fp32 accumulation), `w` row-major bf16
/// `[inner, columns]`. Returns 0, or oneDNN's status.
int smoe_dnnl_bf16_gemm(const float *x, size_t rows, size_t inner, const uint16_t *w, size_t columns, float *y, int accumulate);

#endif
