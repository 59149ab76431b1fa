#!/usr/bin/env bash
# Makes `--features cuda` build, link and compile kernels on a machine WITHOUT an NVIDIA GPU
# or CUDA toolkit, for scripts/cuda-kernels.sh (autodiff/tests/cuda_kernels.rs):
#
# - the CUDA headers and NVRTC from PyPI's wheels (nvidia-cuda-runtime-cu12 ships
#   include/cuda.h and cuda_fp16.h, nvidia-cuda-nvrtc-cu12 ships libnvrtc.so.12), installed
#   with pip into $AUTODIFF_CUDA_HOME (default ~/.cache/autodiff-cuda) and laid out as a
#   toolkit root: include/, lib/ (NVRTC);
# - lib64/stubs/: a compile-only stand-in for the driver, cuBLAS and cuRAND (libcuda.so.1,
#   libcublas.so.12, libcublasLt.so.12, libcurand.so.10: luminal_cudarc links all four),
#   built with cc from autodiff/tests/nvrtc/fake_driver.c. luminal_cuda needs a device
#   before it generates a kernel (see that file); the stand-in lets it get that far and no
#   further: nothing runs;
# - /usr/local/cuda/include: luminal_cuda passes NVRTC that fixed include path
#   (luminal_cuda-0.2.0/src/prim.rs:188 and every other kernel); when it is missing and
#   /usr/local is writable, it becomes a link to the wheel's headers.
#
# Prints, on stdout, the environment a build needs (CUDA_ROOT for luminal_cudarc's build
# script, LD_LIBRARY_PATH for the test binaries):   eval "$(scripts/install-cuda-nvrtc.sh)"
# Exits 3, saying why on stderr, when something it needs is missing (python3 with pip and
# network access to PyPI, a C compiler, a writable /usr/local). Never use this environment
# on a machine with a GPU: the stand-in would shadow the real driver.
set -euo pipefail
cd "$(dirname "$0")/.."

home=${AUTODIFF_CUDA_HOME:-$HOME/.cache/autodiff-cuda}
wheels=(nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-nvrtc-cu12==12.9.86)

fail() {
    echo "install-cuda-nvrtc: $*" >&2
    exit 3
}

if [[ ! -f $home/wheels/nvidia/cuda_nvrtc/lib/libnvrtc.so.12 ||
    ! -f $home/wheels/nvidia/cuda_runtime/include/cuda_fp16.h ]]; then
    echo "install-cuda-nvrtc: pip install ${wheels[*]} into $home/wheels" >&2
    python3 -m pip --version >/dev/null 2>&1 || fail "python3 -m pip is not available"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
        --target "$home/wheels" "${wheels[@]}" 1>&2 ||
        fail "pip could not install ${wheels[*]} (no network access to PyPI?)"
fi
command -v cc >/dev/null || fail "no C compiler (cc) for the driver stand-in"

mkdir -p "$home/lib" "$home/lib64/stubs"
ln -sfn wheels/nvidia/cuda_runtime/include "$home/include"
for lib in "$home"/wheels/nvidia/cuda_nvrtc/lib/*.so*; do
    ln -sfn "$lib" "$home/lib/$(basename "$lib")"
done
ln -sfn libnvrtc.so.12 "$home/lib/libnvrtc.so"

# The stand-in: the hand-written calls a graph compilation makes, plus a weak "unsupported"
# definition of every other function luminal_cudarc's bindings declare (so the link
# succeeds whichever of them the code references).
host=$(rustc -vV | sed -n "s/^host: //p")
cudarc=$(cargo metadata --format-version 1 --all-features --filter-platform "$host" |
    python3 -c 'import json, os, sys
print(next(os.path.dirname(p["manifest_path"]) for p in json.load(sys.stdin)["packages"] if p["name"] == "luminal_cudarc"))') ||
    fail "cannot locate luminal_cudarc's sources"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
stand_in() { # define bindings code soname
    {
        echo 'int fake_unsupported(const char *name, int code);'
        grep -oE 'pub fn [A-Za-z0-9_]+\(' "$cudarc/src/$2" | sed -E 's/pub fn (.*)\(/\1/' | sort -u |
            awk -v code="$3" '{ printf "__attribute__((weak)) int %s(void) { return fake_unsupported(\"%s\", %s); }\n", $1, $1, code }'
    } >"$build/$1.c"
    cc -O1 -shared -fPIC -D"$1" -o "$home/lib64/stubs/$4" -Wl,-soname,"$4" \
        autodiff/tests/nvrtc/fake_driver.c "$build/$1.c"
    ln -sfn "$4" "$home/lib64/stubs/${4%%.so*}.so"
}
stand_in FAKE_CUDA driver/sys.rs 801 libcuda.so.1         # CUDA_ERROR_NOT_SUPPORTED
stand_in FAKE_CUBLAS cublas/sys.rs 15 libcublas.so.12     # CUBLAS_STATUS_NOT_SUPPORTED
stand_in FAKE_CUBLASLT cublaslt/sys.rs 15 libcublasLt.so.12
stand_in FAKE_CURAND curand/sys.rs 999 libcurand.so.10     # CURAND_STATUS_INTERNAL_ERROR

if [[ ! -f /usr/local/cuda/include/cuda_fp16.h ]]; then
    # Absent, or a link of an earlier install that no longer resolves: (re)link it.
    if { [[ -L /usr/local/cuda/include ]] || [[ ! -e /usr/local/cuda/include ]]; } &&
        mkdir -p /usr/local/cuda 2>/dev/null && [[ -w /usr/local/cuda ]]; then
        ln -sfn "$home/include/" /usr/local/cuda/include
        echo "install-cuda-nvrtc: linked /usr/local/cuda/include -> $home/include (luminal_cuda's NVRTC include path)" >&2
    else
        fail "luminal_cuda compiles kernels with -I/usr/local/cuda/include, which lacks cuda_fp16.h and cannot be linked to $home/include"
    fi
fi

echo "export CUDA_ROOT='$home'"
echo "export LD_LIBRARY_PATH='$home/lib:$home/lib64/stubs'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
