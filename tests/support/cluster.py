"""
nginx in front of several uploadsvc servers: the shipped upstream block of
C{tap-configs/nginx-uploadsvc-cluster.conf} with its servers made loopback
ones, and the location of C{tap-configs/nginx-uploadsvc.conf} without TLS
and authentication (bodies streamed through). Used by
tests/test_e2e_gluster.py and bench/chaos.py.
"""

from __future__ import annotations

import os
from typing import Sequence

CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tap-configs"
)

#: The servers of the shipped upstream block, in order.
SHIPPED_SERVERS = ("10.0.0.11:8080", "10.0.0.12:8080", "10.0.0.13:8080")
#: What follows each server's address in the shipped block.
SERVER_PARAMETERS = " max_fails=0"


def upstreamBlock(ports: Sequence[int]) -> str:
    """
    The shipped upstream block with its three servers on C{ports} of
    127.0.0.1 (a change to the shipped file fails here, loudly).
    """
    with open(os.path.join(CONFIGS, "nginx-uploadsvc-cluster.conf"), encoding="utf-8") as f:
        text = f.read()
    if len(ports) != len(SHIPPED_SERVERS):
        raise ValueError(f"the shipped upstream has {len(SHIPPED_SERVERS)} servers")
    for shipped, port in zip(SHIPPED_SERVERS, ports):
        line = f"server {shipped}{SERVER_PARAMETERS};"
        if text.count(line) != 1:
            raise AssertionError(f"expected {line!r} once in the shipped upstream")
        text = text.replace(line, f"server 127.0.0.1:{port}{SERVER_PARAMETERS};")
    return text


def writeNginxConf(folder: str, listenPort: int, ports: Sequence[int]) -> tuple[str, str]:
    """
    Write an C{nginx.conf} (no daemon, no master, everything in C{folder})
    that listens on 127.0.0.1:C{listenPort} and spreads requests over
    C{ports} round robin; each answer names its server in C{X-Upstream}.

    @return: the config's path and the error log's.
    """
    temps = "".join(
        f"{kind}_temp_path {folder}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = os.path.join(folder, "nginx.conf")
    with open(conf, "w") as f:
        f.write(
            f"daemon off;\nmaster_process off;\npid {folder}/nginx.pid;\n"
            f"error_log {folder}/error.log info;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\naccess_log {folder}/access.log;\n{temps}"
            f"{upstreamBlock(ports)}\n"
            f"server {{\n  listen 127.0.0.1:{listenPort};\n"
            "  location / {\n"
            "    proxy_request_buffering off;\n    proxy_buffering off;\n"
            "    client_max_body_size 0;\n    proxy_http_version 1.1;\n"
            '    proxy_set_header Connection "";\n    proxy_set_header Host $host;\n'
            "    proxy_read_timeout 300s;\n    proxy_send_timeout 300s;\n"
            "    add_header X-Upstream $upstream_addr always;\n"
            "    proxy_pass http://uploadsvc;\n  }\n}\n}\n"
        )
    return conf, os.path.join(folder, "error.log")
