# Sourced by the Makefile and scripts: points the libtorch build at the project venv's torch.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PATH="$ROOT/.venv/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
export MTL_PYTHON="$ROOT/.venv/bin/python"
