/*
 * A compile-only stand-in for the CUDA driver (libcuda.so.1), cuBLAS (libcublas.so.12),
 * cuBLASLt (libcublasLt.so.12) and cuRAND (libcurand.so.10, linked by luminal_cudarc's
 * default features, never called), for machines without an NVIDIA GPU.
 *
 * Why: luminal_cuda writes and NVRTC-compiles its kernels while it compiles a graph, but only
 * after `CudaDevice::new(0)` (luminal_cuda-0.2.0/src/prim.rs:1382, matmul.rs:215), and it
 * loads each PTX into the device as soon as NVRTC returns it (`dev.load_ptx`, e.g.
 * prim.rs:183). With this library in place of the driver every kernel still goes through the
 * real NVRTC (libnvrtc.so.12 from the nvidia-cuda-nvrtc-cu12 wheel): a kernel that does not
 * compile makes the graph compilation fail exactly as on a GPU. Nothing can run: the calls a
 * graph compilation makes succeed with dummy handles, every other entry point returns
 * CUDA_ERROR_NOT_SUPPORTED / CUBLAS_STATUS_NOT_SUPPORTED and says so on stderr.
 *
 * `cuModuleLoadData` writes each PTX image it is given to `$AUTODIFF_PTX_DUMP/NNNN.ptx`
 * when that variable names a directory, so a test can count and inspect the kernels.
 *
 * Built by scripts/install-cuda-nvrtc.sh, once per library (-DFAKE_CUDA, -DFAKE_CUBLAS,
 * -DFAKE_CUBLASLT, -DFAKE_CURAND), together with a generated file of weak `unsupported`
 * definitions of every other function luminal_cudarc declares, so that the link succeeds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every handle the fake hands out: non-null, never dereferenced. */
#define FAKE_HANDLE ((void *)0x1000)

/* Called by the generated stubs: a graph compilation never needs these. */
int fake_unsupported(const char *name, int code) {
    fprintf(stderr, "fake CUDA driver: %s is not supported (compile-only stand-in, no GPU)\n",
            name);
    return code;
}

#ifdef FAKE_CUDA
typedef int CUresult;
enum { CUDA_SUCCESS = 0, CUDA_ERROR_INVALID_DEVICE = 101 };

CUresult cuInit(unsigned flags) { (void)flags; return CUDA_SUCCESS; }

CUresult cuDeviceGetCount(int *count) { *count = 1; return CUDA_SUCCESS; }

CUresult cuDeviceGet(int *device, int ordinal) {
    if (ordinal != 0)
        return CUDA_ERROR_INVALID_DEVICE;
    *device = 0;
    return CUDA_SUCCESS;
}

/* All attributes read as 0 (so luminal_cudarc takes its synchronous allocation path). */
CUresult cuDeviceGetAttribute(int *value, int attribute, int device) {
    (void)attribute; (void)device;
    *value = 0;
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(void **context, int device) {
    (void)device;
    *context = FAKE_HANDLE;
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease_v2(int device) { (void)device; return CUDA_SUCCESS; }
CUresult cuCtxSetCurrent(void *context) { (void)context; return CUDA_SUCCESS; }

CUresult cuCtxGetCurrent(void **context) {
    *context = FAKE_HANDLE;
    return CUDA_SUCCESS;
}

CUresult cuEventCreate(void **event, unsigned flags) {
    (void)flags;
    *event = FAKE_HANDLE;
    return CUDA_SUCCESS;
}

CUresult cuEventDestroy_v2(void *event) { (void)event; return CUDA_SUCCESS; }

CUresult cuModuleLoadData(void **module, const void *image) {
    static unsigned loaded = 0;
    const char *dir = getenv("AUTODIFF_PTX_DUMP");
    if (dir != NULL && *dir != '\0') {
        char path[4096];
        snprintf(path, sizeof path, "%s/%04u.ptx", dir, loaded);
        FILE *f = fopen(path, "w");
        if (f == NULL) {
            fprintf(stderr, "fake CUDA driver: cannot write %s\n", path);
            return 1; /* CUDA_ERROR_INVALID_VALUE */
        }
        fputs((const char *)image, f);
        fclose(f);
    }
    loaded++;
    *module = FAKE_HANDLE;
    return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(void **function, void *module, const char *name) {
    (void)module; (void)name;
    *function = FAKE_HANDLE;
    return CUDA_SUCCESS;
}

CUresult cuModuleUnload(void *module) { (void)module; return CUDA_SUCCESS; }

/* NVRTC itself opens libcuda.so.1 and asks for this table; without it, it compiles all the
 * same. Declined quietly, so that the log shows only calls luminal_cuda makes. */
CUresult cuGetExportTable(const void **table, const void *id) {
    (void)table; (void)id;
    return 801; /* CUDA_ERROR_NOT_SUPPORTED */
}

CUresult cuGetErrorString(CUresult error, const char **text) {
    (void)error;
    *text = "fake CUDA driver: not supported (compile-only stand-in, no GPU)";
    return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult error, const char **text) {
    *text = error == CUDA_SUCCESS ? "CUDA_SUCCESS" : "CUDA_ERROR_NOT_SUPPORTED";
    return CUDA_SUCCESS;
}
#endif

#ifdef FAKE_CUBLAS
typedef int cublasStatus_t;

cublasStatus_t cublasCreate_v2(void **handle) {
    *handle = FAKE_HANDLE;
    return 0;
}

cublasStatus_t cublasSetStream_v2(void *handle, void *stream) {
    (void)handle; (void)stream;
    return 0;
}

cublasStatus_t cublasDestroy_v2(void *handle) { (void)handle; return 0; }
#endif
