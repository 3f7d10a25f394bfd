"""
uploadsvc: streaming, resumable upload server for Twisted (twistd uploadsvc).
"""

from setuptools import find_packages, setup

setup(
    name="uploadsvc",
    version="0.1.0",
    description="Streaming, resumable upload server: twistd uploadsvc",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["uploadsvc", "uploadsvc.*"]) + ["twisted.plugins"],
    package_data={
        "twisted.plugins": ["uploadsvc_plugin.py"],
        # The upload page at /.upload/ (uploadsvc/web/uploadpage.py).
        "uploadsvc.web": ["page/*.html", "page/*.js", "page/*.css"],
    },
    install_requires=[
        # Below next year's releases: the streaming glue uses twisted.web
        # internals (tests/test_twisted_internals.py lists them), which a
        # release may change without a deprecation period. Twisted's versions
        # are calendar versions (YY.MM); raise the bound once the suite
        # passes on the new year's release.
        "twisted[tls]>=24.7,<27",
        # klein and treq: public APIs only, and they follow Twisted's
        # deprecation policy (calendar versions, no breaking majors), so no
        # upper bound.
        "klein>=24.8",
        "treq>=24.9",
        "pyOpenSSL>=24.0",
        "service-identity>=24.1",
        "attrs>=23.1",
        # The client's progress bars (per file and overall, with rate): a
        # small, well-kept library instead of our own terminal handling.
        "tqdm>=4.66",
        # Metrics (docs/operating.md): the reference Prometheus
        # client. Its multiprocess mode sums the --workers processes in one
        # scrape (files per process, merged by the process that serves
        # /metrics), and its text exposition and histogram buckets are what
        # scrapers expect; writing that (and the cross-process merge) by hand
        # would be larger and less trusted.
        "prometheus_client>=0.20",
    ],
    extras_require={
        "test": [
            "hypothesis>=6.100",
            "psutil>=5.9",
            # tests/test_typing.py: interfaces and their providers type-check.
            "mypy>=1.10",
            "mypy-zope>=1.0",
            # tests/support/rawhttp.py: the raw client reads answers with a
            # strict, independent HTTP/1.1 parser, so a malformed answer
            # from the server fails the test instead of being read loosely.
            "h11>=0.14",
            # Test CAs and leaf certificates (tests/test_e2e_tls.py,
            # tests/test_e2e_client_tls.py) instead of hand-made X.509 code.
            "trustme>=1.1",
            # An independent structured-field implementation (RFC 9651) as
            # the oracle of a property test for protocol/digests.py's parser.
            "http-sfv>=0.9",
            # tests/test_e2e_page.py drives the upload page in a real
            # headless Chromium (Debian's chromium + chromium-driver): the
            # WebDriver protocol is large, and selenium is its reference
            # client, kept by the browser vendors' own project.
            "selenium>=4.20",
            # tests/test_e2e_tus_clients.py: a stock tus client (chunked
            # upload, resume after a cut) proves the tus front end against
            # someone else's reading of the protocol, not only our own.
            "tuspy>=1.0",
        ],
        "bench": ["aiohttp>=3.9", "psutil>=5.9"],
        # HTTP/2 over TLS (ALPN h2): twisted's h2 support.
        "http2": ["twisted[http2]>=24.7,<27"],
    },
    entry_points={
        "console_scripts": ["uploadsvc-upload = uploadsvc.client.cli:main"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
    ],
)
