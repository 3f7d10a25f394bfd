"""
The origin question's server, as the baseline: aiohttp, a C{readchunk} loop
writing each chunk to a file under a root folder, C{201} with the byte count.

Changed from the question only where it would not run or could not be
measured fairly:
  - the two lines lost from the posted code (C{f.write(chunk)}, C{break}) are
    back;
  - C{settings}/C{logger} are replaced by options (C{--root}, C{--host},
    C{--port}); it listens on loopback only;
  - PUT is routed to the same handler as POST (the benchmark uploads with PUT,
    like nginx's WebDAV module);
  - the access log is off unless C{--log-level info} or lower is given, as
    for nginx in the benchmark (the question's logger setup is not shown);
  - the listen backlog is an option (the benchmark gives every server 1024);
  - C{--write-rate} throttles writes to emulate a disk slower than the network
    (scenario S6); it sleeps in the write loop, blocking the event loop as a
    slow synchronous C{f.write} would.

Still as in the question: the path is used unchecked (it is only ever run on
loopback by the benchmark) and nothing is fsync'd.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import time

from aiohttp import web


class _Throttle:
    """
    A disk that writes C{rate} bytes per second, process-wide: each write
    takes C{size / rate} seconds after the previous one is done, and idle
    time earns no credit.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.busyUntil = 0.0

    def spend(self, size: int) -> None:
        now = time.monotonic()
        self.busyUntil = max(self.busyUntil, now) + size / self.rate
        time.sleep(self.busyUntil - now)


def makeApp(root: str, throttle: _Throttle | None) -> web.Application:
    """
    The origin's application, storing under C{root}.
    """

    async def upload_handler(request: web.Request) -> web.Response:
        # You cannot rely on Content-Length if transfer is chunked.
        size = 0
        local_path = root + request.path
        path_without_file = local_path.rsplit("/", 1)[0]
        pathlib.Path(path_without_file).mkdir(parents=True, exist_ok=True)

        with open(local_path, "wb") as f:
            while True:
                chunk, is_end_of_http_chunk = await request.content.readchunk()
                if not chunk:
                    break
                size += len(chunk)
                if throttle is not None:
                    throttle.spend(len(chunk))
                f.write(chunk)

        return web.Response(text="%d bytes uploaded" % size, status=201)

    app = web.Application(client_max_size=int(2e9), debug=False)
    app.router.add_post("/{tail:.*}", upload_handler)
    app.router.add_put("/{tail:.*}", upload_handler)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument(
        "--write-rate",
        type=float,
        default=0.0,
        help="bytes per second written at most (0: unthrottled)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error", "critical"],
        default="warning",
    )
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper())
    throttle = _Throttle(args.write_rate) if args.write_rate > 0 else None
    app = makeApp(args.root.rstrip("/"), throttle)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        backlog=args.backlog,
        access_log=logging.getLogger("aiohttp.access")
        if args.log_level in ("debug", "info")
        else None,
        print=None,
    )


if __name__ == "__main__":
    main()
