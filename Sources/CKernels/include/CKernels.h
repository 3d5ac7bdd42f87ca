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

/// Symmetric int8 per row: `scale[r] = max|x[r, :]| / 127` (1 for an all-zero row) and
/// `q[r, k] = round(x[r, k] / scale[r])` in −127…127. `x` is `[rows, width]` row-major. Every
/// `isa` level gives the same bits.
void smoe_quantize_rows(const float *x, size_t rows, size_t width, int8_t *q, float *scale, int isa);

/// `out[t, n] (+)= a_scale[t] · w_scale[n] · Σ_k a[t, k] · w[n, k]`, the sums exact in int32.
/// `a` is `[rows, inner]` int8, `w` is `[columns, inner]` int8 (one row per output channel),
/// `out` is `[rows, columns]` float; `accumulate` adds to `out` instead of overwriting it.
/// `inner` must be below 2^17 (so the int32 sums cannot overflow).
void smoe_int8_gemm(const int8_t *a, const float *a_scale, size_t rows, size_t inner,
                    const int8_t *w, const float *w_scale, size_t columns,
                    float *out, int accumulate, int isa);

#endif
