#!/usr/bin/env bash
# Run on the GPU machine after run 3 (output beside this file, .txt): does a C++ exception from a custom op crash on this machine?
export PYTHONPATH=/tmp/site:$PWD
export CUDA_VISIBLE_DEVICES=""
g++ --version | head -1; ldd --version | head -1; which gdb || echo "no gdb"
python3 -c "import torch,sys;print(torch.__version__, torch._C._GLIBCXX_USE_CXX11_ABI, sys.version)"
ls /opt/torch/.venv/lib/python3.12/site-packages/torch/lib | grep -i -E "gomp|stdc" ; ldconfig -p | grep -E "libgomp|libstdc" | head
cat > /tmp/inline.py <<'EOF'
import sys, torch, torch.utils.cpp_extension as ce
omp = sys.argv[1] == "omp"
src = r'''
#include <ATen/ATen.h>
#include <torch/library.h>
#include <stdexcept>
at::Tensor boom_std(const at::Tensor& x){ throw std::runtime_error("std boom"); }
at::Tensor boom_rt(const at::Tensor& x){ TORCH_CHECK(x.dim() == 7, "boom runtime"); return x; }
at::Tensor boom_val(const at::Tensor& x){ TORCH_CHECK_VALUE(x.dim() == 7, "boom value"); return x; }
TORCH_LIBRARY(NS, m){ m.def("boom_std(Tensor x)->Tensor"); m.def("boom_rt(Tensor x)->Tensor"); m.def("boom_val(Tensor x)->Tensor");}
TORCH_LIBRARY_IMPL(NS, CPU, m){ m.impl("boom_std",&boom_std); m.impl("boom_rt",&boom_rt); m.impl("boom_val",&boom_val);}
'''
ns = "diag_omp" if omp else "diag_plain"
flags = ["-O3", "-fopenmp"] if omp else ["-O3"]
ce.load_inline(ns, cpp_sources=[src.replace("NS", ns)], is_python_module=False, extra_cflags=flags,
               extra_ldflags=["-fopenmp"] if omp else [], build_directory=None)
print("built", ns, flush=True)
for f in ("boom_std", "boom_rt", "boom_val"):
    try:
        getattr(getattr(torch.ops, ns), f)(torch.zeros(1))
    except Exception as e:
        print("caught", ns, f, type(e).__name__, str(e).splitlines()[0][:60], flush=True)
EOF
for v in plain omp; do timeout 150 python3 -X faulthandler /tmp/inline.py $v 2>&1 | grep -v "^  File" | tail -8; echo "inline $v rc=${PIPESTATUS[0]}"; done
cat > /tmp/tile.py <<'EOF'
import torch
from nda_stylegan.negatives.plan import TilePlan
from nda_stylegan.ops import tile
x = torch.randn(3, 1, 4, 4)
p = TilePlan.identity(3); p.tile_rot[1, 0] = 4
try:
    tile.apply_plan(x, p, impl="kernel")
except ValueError as e:
    print("tile caught", str(e)[:70], flush=True)
EOF
timeout 150 python3 -X faulthandler /tmp/tile.py 2>&1 | grep -v "^  File" | tail -5; echo "tile rc=${PIPESTATUS[0]}"
if which gdb >/dev/null; then timeout 120 gdb -q -batch -ex run -ex bt --args python3 /tmp/tile.py 2>&1 | tail -30; fi
