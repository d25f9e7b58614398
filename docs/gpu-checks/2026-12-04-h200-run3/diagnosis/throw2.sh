#!/usr/bin/env bash
# Run on the GPU machine after run 3 (output beside this file, .txt): which bad plan crashes, on which path.
export PYTHONPATH=/tmp/site:$PWD
cat > /tmp/cases.py <<'EOF'
import sys, torch
sys.path.insert(0, "tests")
from test_tile_op import bad_plans
from nda_stylegan.ops import tile
dev = sys.argv[1]
images = torch.randn(3, 1, 4, 4, device=dev)
for plan, words in bad_plans():
    for where in (("cpu", dev) if dev != "cpu" else ("cpu",)):
        print("case", dev, where, words, end=" ... ", flush=True)
        try:
            tile.apply_plan(images, plan.to(where), impl="kernel")
            print("NO ERROR", flush=True)
        except Exception as e:
            print(type(e).__name__, str(e).splitlines()[0][:60], flush=True)
EOF
CUDA_VISIBLE_DEVICES="" timeout 100 python3 -X faulthandler /tmp/cases.py cpu 2>&1 | grep -v "^  File" | tail -12; echo "cpu rc=${PIPESTATUS[0]}"
timeout 140 python3 -X faulthandler /tmp/cases.py cuda 2>&1 | grep -v "^  File" | tail -22; echo "cuda rc=${PIPESTATUS[0]}"
CUDA_VISIBLE_DEVICES="" timeout 60 python3 -m pytest -q -x -p no:cacheprovider tests/test_tile_op.py 2>&1 | grep -v "^  File" | tail -5
