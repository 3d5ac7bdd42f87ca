#include "CKernels.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define SMOE_X86 1
#else
#define SMOE_X86 0
#endif

// MARK: CPU features

#if SMOE_X86
static uint64_t smoe_xgetbv(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}
#endif

uint32_t smoe_cpu_features(void) {
    uint32_t features = 0;
#if SMOE_X86
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    int osxsave = (ecx >> 27) & 1, avx = (ecx >> 28) & 1, fma = (ecx >> 12) & 1, f16c = (ecx >> 29) & 1;
    if (!osxsave || !avx) return 0;
    uint64_t xcr0 = smoe_xgetbv();
    int ymm = (xcr0 & 0x6) == 0x6;          // SSE and AVX state
    int zmm = ymm && (xcr0 & 0xE0) == 0xE0;  // opmask and the upper ZMM state
    if (!ymm) return 0;
    if (fma) features |= SMOE_CPU_FMA;
    if (f16c) features |= SMOE_CPU_F16C;
    if (__get_cpuid_max(0, 0) < 7) return features;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    if ((ebx >> 5) & 1) features |= SMOE_CPU_AVX2;
    if (zmm && ((ebx >> 16) & 1)) features |= SMOE_CPU_AVX512F;
    if (zmm && ((ebx >> 30) & 1)) features |= SMOE_CPU_AVX512BW;
    if (zmm && ((ecx >> 11) & 1)) features |= SMOE_CPU_AVX512VNNI;
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    if (zmm && ((eax >> 5) & 1)) features |= SMOE_CPU_AVX512BF16;
#endif
    return features;
}

// MARK: bf16

static inline uint16_t smoe_bf16_of(float value) {
    uint32_t bits;
    memcpy(&bits, &value, 4);
    if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu)) return (uint16_t)((bits >> 16) | 0x0040u);  // quiet NaN
    uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);  // round to nearest, ties to even
    return (uint16_t)((bits + rounding) >> 16);
}

static inline float smoe_f32_of(uint16_t value) {
    uint32_t bits = (uint32_t)value << 16;
    float result;
    memcpy(&result, &bits, 4);
    return result;
}

void smoe_f32_to_bf16(const float *src, uint16_t *dst, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] = smoe_bf16_of(src[i]);
}

void smoe_round_to_bf16(float *values, size_t count) {
    for (size_t i = 0; i < count; i++) values[i] = smoe_f32_of(smoe_bf16_of(values[i]));
}

#if SMOE_X86
__attribute__((target("avx2")))
static void smoe_bf16_to_f32_avx2(const uint16_t *src, float *dst, size_t count) {
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m128i half = _mm_loadu_si128((const __m128i *)(src + i));
        __m256i wide = _mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16);
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(wide));
    }
    for (; i < count; i++) dst[i] = smoe_f32_of(src[i]);
}
#endif

void smoe_bf16_to_f32(const uint16_t *src, float *dst, size_t count, int isa) {
#if SMOE_X86
    if (isa >= SMOE_ISA_AVX2) { smoe_bf16_to_f32_avx2(src, dst, count); return; }
#endif
    for (size_t i = 0; i < count; i++) dst[i] = smoe_f32_of(src[i]);
}

static void smoe_bf16_gemm_rows_portable(const float *x, size_t rows, size_t inner, const uint16_t *w, size_t columns,
                                         float *y, int accumulate) {
    for (size_t t = 0; t < rows; t++) {
        for (size_t n = 0; n < columns; n++) {
            const uint16_t *block = w + (n / SMOE_BF16_BLOCK) * inner * SMOE_BF16_BLOCK + n % SMOE_BF16_BLOCK;
            float sum = accumulate ? y[t * columns + n] : 0;
            for (size_t k = 0; k < inner; k++) sum = fmaf(x[t * inner + k], smoe_f32_of(block[k * SMOE_BF16_BLOCK]), sum);
            y[t * columns + n] = sum;
        }
    }
}

#if SMOE_X86
// One block (32 columns: four YMM accumulators per row) and up to four rows at a time: 16
// accumulators in registers while k runs over the block's contiguous [inner][32] weights.
__attribute__((target("avx2,fma")))
static void smoe_bf16_gemm_rows_avx2(const float *x, size_t rows, size_t inner, const uint16_t *w, size_t columns,
                                     float *y, int accumulate) {
    size_t blocks = (columns + SMOE_BF16_BLOCK - 1) / SMOE_BF16_BLOCK;
    for (size_t t0 = 0; t0 < rows; t0 += 4) {
        size_t count = rows - t0 < 4 ? rows - t0 : 4;
        for (size_t b = 0; b < blocks; b++) {
            size_t n = b * SMOE_BF16_BLOCK, width = columns - n < SMOE_BF16_BLOCK ? columns - n : SMOE_BF16_BLOCK;
            __m256 acc[4][4];
            float staging[4][SMOE_BF16_BLOCK];
            for (size_t r = 0; r < 4; r++) {
                for (size_t j = 0; j < SMOE_BF16_BLOCK; j++) staging[r][j] = (r < count && accumulate && j < width) ? y[(t0 + r) * columns + n + j] : 0;
                for (int j = 0; j < 4; j++) acc[r][j] = _mm256_loadu_ps(&staging[r][8 * j]);
            }
            const uint16_t *block = w + b * inner * SMOE_BF16_BLOCK;
            for (size_t k = 0; k < inner; k++) {
                const uint16_t *row = block + k * SMOE_BF16_BLOCK;
                __m256 wide[4];
                for (int j = 0; j < 4; j++) {
                    __m256i bits = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(row + 8 * j)));
                    wide[j] = _mm256_castsi256_ps(_mm256_slli_epi32(bits, 16));
                }
                for (size_t r = 0; r < count; r++) {
                    __m256 scale = _mm256_set1_ps(x[(t0 + r) * inner + k]);
                    for (int j = 0; j < 4; j++) acc[r][j] = _mm256_fmadd_ps(scale, wide[j], acc[r][j]);
                }
            }
            for (size_t r = 0; r < count; r++) {
                for (int j = 0; j < 4; j++) _mm256_storeu_ps(&staging[r][8 * j], acc[r][j]);
                for (size_t j = 0; j < width; j++) y[(t0 + r) * columns + n + j] = staging[r][j];
            }
        }
    }
}
#endif

void smoe_bf16_gemm_rows(const float *x, size_t rows, size_t inner, const uint16_t *w, size_t columns,
                         float *y, int accumulate, int isa) {
#if SMOE_X86
    if (isa >= SMOE_ISA_AVX2) { smoe_bf16_gemm_rows_avx2(x, rows, inner, w, columns, y, accumulate); return; }
#endif
    smoe_bf16_gemm_rows_portable(x, rows, inner, w, columns, y, accumulate);
}

void smoe_bf16_widen_rows(const uint16_t *w, size_t inner, size_t columns, size_t first, size_t count, float *panel, int isa) {
    size_t blocks = (columns + SMOE_BF16_BLOCK - 1) / SMOE_BF16_BLOCK;
    for (size_t k = 0; k < count; k++) {
        for (size_t b = 0; b < blocks; b++) {
            size_t n = b * SMOE_BF16_BLOCK, width = columns - n < SMOE_BF16_BLOCK ? columns - n : SMOE_BF16_BLOCK;
            smoe_bf16_to_f32(w + (b * inner + first + k) * SMOE_BF16_BLOCK, panel + k * columns + n, width, isa);
        }
    }
}

// MARK: int8

static void smoe_quantize_row_portable(const float *row, size_t width, int8_t *out, float *scale, int levels) {
    float largest = 0;
    int nan = 0;
    for (size_t k = 0; k < width; k++) {
        float magnitude = fabsf(row[k]);
        if (magnitude != magnitude) nan = 1;
        else if (magnitude > largest) largest = magnitude;
    }
    const float top = (float)levels;
    float s = largest > 0 ? largest / top : 1.0f;
    // NaN goes into the scale (and so into every output of the row, where the non-finite checks see it).
    *scale = nan ? NAN : s;
    float inverse = 1.0f / s;
    for (size_t k = 0; k < width; k++) {
        float v = rintf(row[k] * inverse);
        v = v > top ? top : (v < -top ? -top : v);
        out[k] = (int8_t)(isnan(v) ? 0 : v);
    }
}

#if SMOE_X86
// The same arithmetic eight lanes at a time (max|x| is exact in any order; the product, the
// round to nearest even and the clamp are per element), so it gives the portable bits. A row
// holding NaN goes to the portable path, which keeps the NaN in the scale.
__attribute__((target("avx2")))
static void smoe_quantize_row_avx2(const float *row, size_t width, int8_t *out, float *scale, int levels) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 largest8 = _mm256_setzero_ps(), unordered = _mm256_setzero_ps();
    size_t k = 0;
    for (; k + 8 <= width; k += 8) {
        __m256 x = _mm256_loadu_ps(row + k);
        unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
        largest8 = _mm256_max_ps(largest8, _mm256_andnot_ps(sign, x));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, largest8);
    float largest = 0;
    for (int j = 0; j < 8; j++) largest = lanes[j] > largest ? lanes[j] : largest;
    int nan = _mm256_movemask_ps(unordered) != 0;
    for (size_t tail = k; tail < width; tail++) {
        float magnitude = fabsf(row[tail]);
        if (magnitude != magnitude) nan = 1;
        if (magnitude > largest) largest = magnitude;
    }
    if (nan) { smoe_quantize_row_portable(row, width, out, scale, levels); return; }
    const float top = (float)levels;
    float s = largest > 0 ? largest / top : 1.0f;
    *scale = s;
    const __m256 inverse = _mm256_set1_ps(1.0f / s), high = _mm256_set1_ps(top), low = _mm256_set1_ps(-top);
    k = 0;
    for (; k + 8 <= width; k += 8) {
        __m256 v = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(row + k), inverse), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm256_min_ps(_mm256_max_ps(v, low), high);
        __m256i words = _mm256_cvtps_epi32(v);
        int32_t values[8];
        _mm256_storeu_si256((__m256i *)values, words);
        for (int j = 0; j < 8; j++) out[k + j] = (int8_t)values[j];
    }
    float inv = 1.0f / s;
    for (; k < width; k++) {
        float v = rintf(row[k] * inv);
        out[k] = (int8_t)(v > top ? top : (v < -top ? -top : v));
    }
}
#endif

void smoe_quantize_rows(const float *x, size_t rows, size_t width, int8_t *q, float *scale, int levels, int isa) {
#if SMOE_X86
    if (isa >= SMOE_ISA_AVX2) {
        for (size_t r = 0; r < rows; r++) smoe_quantize_row_avx2(x + r * width, width, q + r * width, scale + r, levels);
        return;
    }
#endif
    for (size_t r = 0; r < rows; r++) smoe_quantize_row_portable(x + r * width, width, q + r * width, scale + r, levels);
}

static int32_t smoe_dot_portable(const int8_t *a, const int8_t *b, size_t count) {
    int32_t sum = 0;
    for (size_t k = 0; k < count; k++) sum += (int32_t)a[k] * (int32_t)b[k];
    return sum;
}

#if SMOE_X86
// Four output channels at a time: each 16 int8 of the activation row is widened once to int16
// and multiplied with four weight rows; `_mm256_madd_epi16` sums pairs of int16 products into
// int32 exactly (no saturation, unlike `vpmaddubsw`'s int16 sums).
__attribute__((target("avx2")))
static void smoe_dot4_avx2(const int8_t *a, const int8_t *w, size_t stride, size_t count, int32_t *sums) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    size_t k = 0;
    for (; k + 16 <= count; k += 16) {
        __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(a + k)));
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(x, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + k)))));
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(x, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + stride + k)))));
        s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(x, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 2 * stride + k)))));
        s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(x, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 3 * stride + k)))));
    }
    __m256i lanes[4] = {s0, s1, s2, s3};
    for (int j = 0; j < 4; j++) {
        int32_t part[8];
        _mm256_storeu_si256((__m256i *)part, lanes[j]);
        int32_t sum = part[0] + part[1] + part[2] + part[3] + part[4] + part[5] + part[6] + part[7];
        for (size_t tail = k; tail < count; tail++) sum += (int32_t)a[tail] * (int32_t)w[j * stride + tail];
        sums[j] = sum;
    }
}

__attribute__((target("avx2")))
static int32_t smoe_dot_avx2(const int8_t *a, const int8_t *b, size_t count) {
    __m256i s = _mm256_setzero_si256();
    size_t k = 0;
    for (; k + 16 <= count; k += 16) {
        __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(a + k)));
        __m256i y = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + k)));
        s = _mm256_add_epi32(s, _mm256_madd_epi16(x, y));
    }
    int32_t part[8];
    _mm256_storeu_si256((__m256i *)part, s);
    int32_t sum = part[0] + part[1] + part[2] + part[3] + part[4] + part[5] + part[6] + part[7];
    for (; k < count; k++) sum += (int32_t)a[k] * (int32_t)b[k];
    return sum;
}
#endif

// Output channels outermost, in blocks of four: a block's four weight rows (4 × inner bytes)
// stay in L1 while every activation row passes over them, so the weights stream from memory
// once per call whatever the row count (decode-sized calls are bound by that stream).
void smoe_int8_gemm(const int8_t *a, const float *a_scale, size_t rows, size_t inner,
                    const int8_t *w, const float *w_scale, size_t columns,
                    float *out, int accumulate, int isa) {
    size_t n = 0;
#if SMOE_X86
    if (isa >= SMOE_ISA_AVX2) {
        int32_t sums[4];
        for (; n + 4 <= columns; n += 4) {
            for (size_t t = 0; t < rows; t++) {
                smoe_dot4_avx2(a + t * inner, w + n * inner, inner, inner, sums);
                float *y = out + t * columns + n;
                for (int j = 0; j < 4; j++) {
                    float value = a_scale[t] * w_scale[n + j] * (float)sums[j];
                    y[j] = accumulate ? y[j] + value : value;
                }
            }
        }
        for (; n < columns; n++) {
            for (size_t t = 0; t < rows; t++) {
                float value = a_scale[t] * w_scale[n] * (float)smoe_dot_avx2(a + t * inner, w + n * inner, inner);
                float *y = out + t * columns + n;
                *y = accumulate ? *y + value : value;
            }
        }
        return;
    }
#endif
    for (; n < columns; n++) {
        for (size_t t = 0; t < rows; t++) {
            float value = a_scale[t] * w_scale[n] * (float)smoe_dot_portable(a + t * inner, w + n * inner, inner);
            float *y = out + t * columns + n;
            *y = accumulate ? *y + value : value;
        }
    }
}

// Group-wise weights (ZeroQuant): one exact int32 sum per group of `group` inputs, scaled by its
// group's weight scale and summed in float in group order, on every ISA level (so the same bits).
void smoe_int8_gemm_grouped(const int8_t *a, const float *a_scale, size_t rows, size_t inner,
                            const int8_t *w, const float *w_scale, size_t group, size_t columns,
                            float *out, int accumulate, int isa) {
    size_t groups = (inner + group - 1) / group;
    size_t n = 0;
#if SMOE_X86
    if (isa >= SMOE_ISA_AVX2) {
        int32_t sums[4];
        for (; n + 4 <= columns; n += 4) {
            for (size_t t = 0; t < rows; t++) {
                float total[4] = {0, 0, 0, 0};
                for (size_t g = 0; g < groups; g++) {
                    size_t start = g * group, count = inner - start < group ? inner - start : group;
                    smoe_dot4_avx2(a + t * inner + start, w + n * inner + start, inner, count, sums);
                    for (int j = 0; j < 4; j++) total[j] += w_scale[(n + j) * groups + g] * (float)sums[j];
                }
                float *y = out + t * columns + n;
                for (int j = 0; j < 4; j++) y[j] = accumulate ? y[j] + a_scale[t] * total[j] : a_scale[t] * total[j];
            }
        }
    }
#endif
    for (; n < columns; n++) {
        for (size_t t = 0; t < rows; t++) {
            float total = 0;
            for (size_t g = 0; g < groups; g++) {
                size_t start = g * group, count = inner - start < group ? inner - start : group;
                total += w_scale[n * groups + g] * (float)smoe_dot_portable(a + t * inner + start, w + n * inner + start, count);
            }
            float *y = out + t * columns + n;
            *y = accumulate ? *y + a_scale[t] * total : a_scale[t] * total;
        }
    }
}

// MARK: fp32 products of a few rows

// C[rows, columns] (+)= A[rows, inner] · B[inner, columns], B row-major and read once: per block
// of SMOE_STREAM_BLOCK columns, eight rows of B at a time are multiplied into each output row
// (the block of C stays in L1/L2 while B streams past). Every output element sums k in order
// with one fused multiply-add per term, on both paths, so they give the same bits and a row's
// result does not depend on the other rows.
#define SMOE_STREAM_BLOCK 1024

static void smoe_sgemm_stream_portable(const float *a, size_t lda, size_t rows, size_t inner, const float *b, size_t columns,
                                       float *c, int accumulate) {
    for (size_t r = 0; r < rows; r++) {
        float *y = c + r * columns;
        if (!accumulate) memset(y, 0, columns * sizeof(float));
        for (size_t k = 0; k < inner; k++) {
            const float x = a[r * lda + k], *row = b + k * columns;
            for (size_t j = 0; j < columns; j++) y[j] = fmaf(x, row[j], y[j]);
        }
    }
}

#if SMOE_X86
__attribute__((target("avx2,fma")))
static void smoe_sgemm_stream_avx2(const float *a, size_t lda, size_t rows, size_t inner, const float *b, size_t columns,
                                   float *c, int accumulate) {
    for (size_t n0 = 0; n0 < columns; n0 += SMOE_STREAM_BLOCK) {
        size_t width = columns - n0 < SMOE_STREAM_BLOCK ? columns - n0 : SMOE_STREAM_BLOCK;
        size_t vector = width / 8 * 8;
        if (!accumulate) {
            for (size_t r = 0; r < rows; r++) memset(c + r * columns + n0, 0, width * sizeof(float));
        }
        size_t k = 0;
        for (; k + 8 <= inner; k += 8) {
            const float *block = b + k * columns + n0;
            for (size_t r = 0; r < rows; r++) {
                const float *x = a + r * lda + k;
                __m256 x0 = _mm256_set1_ps(x[0]), x1 = _mm256_set1_ps(x[1]), x2 = _mm256_set1_ps(x[2]), x3 = _mm256_set1_ps(x[3]);
                __m256 x4 = _mm256_set1_ps(x[4]), x5 = _mm256_set1_ps(x[5]), x6 = _mm256_set1_ps(x[6]), x7 = _mm256_set1_ps(x[7]);
                float *y = c + r * columns + n0;
                for (size_t j = 0; j < vector; j += 8) {
                    __m256 sum = _mm256_loadu_ps(y + j);
                    sum = _mm256_fmadd_ps(x0, _mm256_loadu_ps(block + j), sum);
                    sum = _mm256_fmadd_ps(x1, _mm256_loadu_ps(block + columns + j), sum);
                    sum = _mm256_fmadd_ps(x2, _mm256_loadu_ps(block + 2 * columns + j), sum);
                    sum = _mm256_fmadd_ps(x3, _mm256_loadu_ps(block + 3 * columns + j), sum);
                    sum = _mm256_fmadd_ps(x4, _mm256_loadu_ps(block + 4 * columns + j), sum);
                    sum = _mm256_fmadd_ps(x5, _mm256_loadu_ps(block + 5 * columns + j), sum);
                    sum = _mm256_fmadd_ps(x6, _mm256_loadu_ps(block + 6 * columns + j), sum);
                    sum = _mm256_fmadd_ps(x7, _mm256_loadu_ps(block + 7 * columns + j), sum);
                    _mm256_storeu_ps(y + j, sum);
                }
                for (size_t j = vector; j < width; j++) {
                    float sum = y[j];
                    for (size_t q = 0; q < 8; q++) sum = fmaf(x[q], block[q * columns + j], sum);
                    y[j] = sum;
                }
            }
        }
        for (; k < inner; k++) {
            const float *row = b + k * columns + n0;
            for (size_t r = 0; r < rows; r++) {
                __m256 x = _mm256_set1_ps(a[r * lda + k]);
                float *y = c + r * columns + n0;
                for (size_t j = 0; j < vector; j += 8) _mm256_storeu_ps(y + j, _mm256_fmadd_ps(x, _mm256_loadu_ps(row + j), _mm256_loadu_ps(y + j)));
                for (size_t j = vector; j < width; j++) y[j] = fmaf(a[r * lda + k], row[j], y[j]);
            }
        }
    }
}
#endif

void smoe_sgemm_stream(const float *a, size_t lda, size_t rows, size_t inner, const float *b, size_t columns,
                       float *c, int accumulate, int isa) {
#if SMOE_X86
    if (isa >= SMOE_ISA_AVX2) { smoe_sgemm_stream_avx2(a, lda, rows, inner, b, columns, c, accumulate); return; }
#endif
    smoe_sgemm_stream_portable(a, lda, rows, inner, b, columns, c, accumulate);
}
