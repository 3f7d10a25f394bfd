# Sourced by scripts/serve and scripts/test: make .venv and install the
# project into it when setup.py changed since the last install.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.uploadsvc-installed"
want=$(cat "$repo/setup.py" | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$venv/bin/python" -m pip install -q -e "$repo[test,bench,http2]" --config-settings editable_mode=compat
    echo "$want" > "$stamp"
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
