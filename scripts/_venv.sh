# Sourced by scripts/serve and scripts/test: make .venv and install the
# project into it when setup.py changed since the last install.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
python=${PYTHON:-python3}
# One setup at a time: scripts/serve and scripts/test started together on a
# fresh clone would otherwise both run pip in the same .venv, and break it.
mkdir -p "$venv"
exec 9>"$venv/.setup.lock"
flock 9
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.uploadsvc-installed"
want=$(cat "$repo/setup.py" | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    # pip's chatter goes to a log, shown only when the install fails.
    echo "setting up $venv (first run, or setup.py changed): a minute or two..." >&2
    piplog="$venv/pip-install.log"
    if ! { "$venv/bin/python" -m pip install -q --upgrade pip &&
           "$venv/bin/python" -m pip install -q -e "$repo[test,bench,http2]" \
               --config-settings editable_mode=compat; } >"$piplog" 2>&1; then
        tail -n 30 "$piplog" >&2
        echo "installing uploadsvc's dependencies failed; the whole log: $piplog" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
exec 9>&-  # (the lock goes with it)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
