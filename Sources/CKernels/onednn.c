// oneDNN (Debian's libdnnl 2.6) behind four plain C calls: the ISA cap and threads, and two
// matrix products — u8·s8→s32 for int8 experts and bf16·bf16→f32 for bf16 experts — whose
// primitives are created once per weight shape and kept. Nothing else in SwiftMoE includes
// dnnl.h. See CKernels.h for the contracts.
#include "CKernels.h"

#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t smoe_dnnl_lock = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t smoe_engine;
static dnnl_stream_t smoe_stream;

/// The engine and stream, made on first use; 0 when oneDNN cannot make them. Call with the lock.
static int smoe_dnnl_ready(void) {
    if (smoe_stream) return 1;
    if (dnnl_engine_create(&smoe_engine, dnnl_cpu, 0) != dnnl_success) return 0;
    if (dnnl_stream_create(&smoe_stream, smoe_engine, dnnl_stream_default_flags) != dnnl_success) return 0;
    return 1;
}

int smoe_dnnl_configure(int max_isa, int threads) {
    pthread_mutex_lock(&smoe_dnnl_lock);
    // The cap takes effect only before the first primitive (oneDNN's rule); later calls fail
    // with dnnl_invalid_arguments, which the caller reads as "cap not applied".
    dnnl_status_t status = dnnl_success;
    if (max_isa == SMOE_ISA_AVX2) status = dnnl_set_max_cpu_isa(dnnl_cpu_isa_avx2);
    // oneDNN runs on OpenMP's threads; its library is loaded with oneDNN's, so look it up.
    void (*set_threads)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (set_threads && threads > 0) set_threads(threads);
    pthread_mutex_unlock(&smoe_dnnl_lock);
    return status == dnnl_success ? 0 : (int)status;
}

const char *smoe_dnnl_effective_isa(void) {
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "below avx2";
    }
}

/// One matmul primitive: `src[M, inner] · weights[inner, columns] → dst[M, columns]` with M
/// given at run time (`DNNL_RUNTIME_DIM_VAL`), so one primitive serves every row count.
typedef struct {
    int kind;  // 0: u8·s8→s32 (weights [columns, inner], one row per output); 1: bf16·bf16→f32 (weights row-major [inner, columns])
    size_t inner, columns;
    dnnl_primitive_t primitive;
    const char *implementation;
} smoe_matmul;

enum { SMOE_MATMULS = 64 };
static smoe_matmul smoe_matmuls[SMOE_MATMULS];
static int smoe_matmul_count;

static dnnl_status_t smoe_desc(dnnl_memory_desc_t *desc, int64_t rows, int64_t columns, dnnl_data_type_t type, int transposed) {
    dnnl_dims_t dims = {rows, columns}, strides = {transposed ? 1 : columns, transposed ? rows : 1};
    return dnnl_memory_desc_init_by_strides(desc, 2, dims, type, strides);
}

/// The primitive for `kind` at this shape (made and kept on first use), or NULL with `*status` set.
static smoe_matmul *smoe_matmul_for(int kind, size_t inner, size_t columns, dnnl_status_t *status) {
    pthread_mutex_lock(&smoe_dnnl_lock);
    smoe_matmul *found = NULL;
    for (int i = 0; i < smoe_matmul_count && !found; i++) {
        smoe_matmul *m = &smoe_matmuls[i];
        if (m->kind == kind && m->inner == inner && m->columns == columns) found = m;
    }
    *status = dnnl_success;
    if (!found) {
        dnnl_memory_desc_t src, weights, dst;
        dnnl_matmul_desc_t desc;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_t primitive = NULL;
        dnnl_data_type_t in = kind == 0 ? dnnl_u8 : dnnl_bf16, w = kind == 0 ? dnnl_s8 : dnnl_bf16, out = kind == 0 ? dnnl_s32 : dnnl_f32;
        if (!smoe_dnnl_ready()) *status = dnnl_runtime_error;
        if (*status == dnnl_success) *status = smoe_desc(&src, DNNL_RUNTIME_DIM_VAL, (int64_t)inner, in, 0);
        if (*status == dnnl_success) *status = smoe_desc(&weights, (int64_t)inner, (int64_t)columns, w, kind == 0);
        if (*status == dnnl_success) *status = smoe_desc(&dst, DNNL_RUNTIME_DIM_VAL, (int64_t)columns, out, 0);
        if (*status == dnnl_success) *status = dnnl_matmul_desc_init(&desc, &src, &weights, NULL, &dst);
        if (*status == dnnl_success) *status = dnnl_primitive_desc_create(&pd, &desc, NULL, smoe_engine, NULL);
        if (*status == dnnl_success) *status = dnnl_primitive_create(&primitive, pd);
        if (*status == dnnl_success && smoe_matmul_count < SMOE_MATMULS) {
            const char *name = "?";
            dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name);
            found = &smoe_matmuls[smoe_matmul_count++];
            *found = (smoe_matmul){kind, inner, columns, primitive, strdup(name)};
        } else if (*status == dnnl_success) {
            *status = dnnl_out_of_memory;  // the table is full: the caller falls back to its own kernel
            dnnl_primitive_destroy(primitive);
        }
        if (pd) dnnl_primitive_desc_destroy(pd);
    }
    pthread_mutex_unlock(&smoe_dnnl_lock);
    return found;
}

/// Runs `m` over `rows` rows: src, weights and dst are the caller's buffers.
static dnnl_status_t smoe_matmul_run(const smoe_matmul *m, size_t rows, const void *src, const void *weights, void *dst) {
    int u8 = m->kind == 0;
    dnnl_memory_desc_t src_desc, weights_desc, dst_desc;
    dnnl_memory_t memories[3] = {NULL, NULL, NULL};
    dnnl_status_t status = smoe_desc(&src_desc, (int64_t)rows, (int64_t)m->inner, u8 ? dnnl_u8 : dnnl_bf16, 0);
    if (status == dnnl_success) status = smoe_desc(&weights_desc, (int64_t)m->inner, (int64_t)m->columns, u8 ? dnnl_s8 : dnnl_bf16, u8);
    if (status == dnnl_success) status = smoe_desc(&dst_desc, (int64_t)rows, (int64_t)m->columns, u8 ? dnnl_s32 : dnnl_f32, 0);
    if (status == dnnl_success) status = dnnl_memory_create(&memories[0], &src_desc, smoe_engine, (void *)src);
    if (status == dnnl_success) status = dnnl_memory_create(&memories[1], &weights_desc, smoe_engine, (void *)weights);
    if (status == dnnl_success) status = dnnl_memory_create(&memories[2], &dst_desc, smoe_engine, dst);
    if (status == dnnl_success) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, memories[0]}, {DNNL_ARG_WEIGHTS, memories[1]}, {DNNL_ARG_DST, memories[2]}};
        status = dnnl_primitive_execute(m->primitive, smoe_stream, 3, args);
        if (status == dnnl_success) status = dnnl_stream_wait(smoe_stream);
    }
    for (int i = 0; i < 3; i++)
        if (memories[i]) dnnl_memory_destroy(memories[i]);
    return status;
}

/// A per-thread scratch area of at least `bytes` (kept and grown, never shrunk).
static void *smoe_scratch(int which, size_t bytes) {
    static __thread void *buffers[2];
    static __thread size_t sizes[2];
    if (sizes[which] < bytes) {
        free(buffers[which]);
        buffers[which] = malloc(bytes);
        sizes[which] = buffers[which] ? bytes : 0;
    }
    return buffers[which];
}

const char *smoe_dnnl_int8_prepare(size_t inner, size_t columns, int *status) {
    dnnl_status_t s;
    smoe_matmul *m = smoe_matmul_for(0, inner, columns, &s);
    *status = (int)s;
    return m ? m->implementation : NULL;
}

int smoe_dnnl_int8_gemm(const int8_t *a, const float *a_scale, size_t rows, size_t inner,
                        const int8_t *w, const float *w_scale, const int32_t *w_sums, int zero_point, size_t columns,
                        float *out, int accumulate) {
    if (rows == 0 || columns == 0) return 0;
    dnnl_status_t status;
    smoe_matmul *m = smoe_matmul_for(0, inner, columns, &status);
    if (!m) return (int)status;
    uint8_t *shifted = smoe_scratch(0, rows * inner);
    int32_t *sums = smoe_scratch(1, rows * columns * sizeof(int32_t));
    if (!shifted || !sums) return (int)dnnl_out_of_memory;
    for (size_t i = 0; i < rows * inner; i++) shifted[i] = (uint8_t)((int)a[i] + zero_point);
    status = smoe_matmul_run(m, rows, shifted, w, sums);
    if (status != dnnl_success) return (int)status;
    // Σ (a + z)·w − z·Σ w = Σ a·w, exact in int32; then both scales, as smoe_int8_gemm does.
    for (size_t t = 0; t < rows; t++) {
        float *y = out + t * columns;
        const int32_t *row = sums + t * columns;
        for (size_t n = 0; n < columns; n++) {
            float value = a_scale[t] * w_scale[n] * (float)(row[n] - zero_point * w_sums[n]);
            y[n] = accumulate ? y[n] + value : value;
        }
    }
    return 0;
}

int smoe_dnnl_int8_exact(size_t inner, size_t columns, int largest_u8) {
    dnnl_status_t status;
    smoe_matmul *m = smoe_matmul_for(0, inner, columns, &status);
    if (!m) return 0;
    // The worst case for vpmaddubsw's int16 pair sums: every activation at its largest, every
    // weight at 127 (all products of one sign).
    uint8_t *a = malloc(2 * inner);
    int8_t *w = malloc(inner * columns);
    int32_t *c = malloc(2 * columns * sizeof(int32_t));
    int exact = a && w && c;
    if (exact) {
        memset(a, largest_u8, 2 * inner);
        memset(w, 127, inner * columns);
        exact = smoe_matmul_run(m, 2, a, w, c) == dnnl_success;
        for (size_t i = 0; exact && i < 2 * columns; i++) exact = c[i] == (int32_t)inner * largest_u8 * 127;
    }
    free(a);
    free(w);
    free(c);
    return exact;
}

const char *smoe_dnnl_bf16_prepare(size_t inner, size_t columns, int *status) {
    dnnl_status_t s;
    smoe_matmul *m = smoe_matmul_for(1, inner, columns, &s);
    *status = (int)s;
    return m ? m->implementation : NULL;
}

int smoe_dnnl_bf16_gemm(const float *x, size_t rows, size_t inner, const uint16_t *w, size_t columns, float *y, int accumulate) {
    if (rows == 0 || columns == 0) return 0;
    dnnl_status_t status;
    smoe_matmul *m = smoe_matmul_for(1, inner, columns, &status);
    if (!m) return (int)status;
    uint16_t *rows_bf16 = smoe_scratch(0, rows * inner * sizeof(uint16_t));
    float *products = accumulate ? smoe_scratch(1, rows * columns * sizeof(float)) : y;
    if (!rows_bf16 || !products) return (int)dnnl_out_of_memory;
    smoe_f32_to_bf16(x, rows_bf16, rows * inner);
    status = smoe_matmul_run(m, rows, rows_bf16, w, products);
    if (status != dnnl_success) return (int)status;
    if (accumulate)
        for (size_t i = 0; i < rows * columns; i++) y[i] += products[i];
    return 0;
}
