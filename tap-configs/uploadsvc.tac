"""
uploadsvc as a twistd application file. From the repository, once
scripts/serve or scripts/test has made .venv/:

    .venv/bin/twistd --pidfile= -ny tap-configs/uploadsvc.tac

(--pidfile= because twistd would otherwise write twistd.pid into the current
folder and refuse a second start while it is there; -n keeps it in the
foreground, logging to stdout: add --logfile=FILE to log to a file.)

Settings come from the environment so one file serves every host:
UPLOADSVC_ROOT (default ./uploads), UPLOADSVC_LISTEN (space-separated
endpoint strings, default tcp:8080:interface=127.0.0.1) and UPLOADSVC_ARGS
(any other `twistd uploadsvc` options, e.g. "--allow-overwrite --no-fsync").
"""

import os
import shlex

from twisted.application import service

from uploadsvc.tap import DEFAULT_LISTEN, Options, makeService

args = ["--root", os.environ.get("UPLOADSVC_ROOT", "./uploads")]
for endpoint in os.environ.get("UPLOADSVC_LISTEN", DEFAULT_LISTEN).split():
    args += ["--listen", endpoint]
args += shlex.split(os.environ.get("UPLOADSVC_ARGS", ""))

options = Options()
options.parseOptions(args)

application = service.Application("uploadsvc")
makeService(options).setServiceParent(application)
