"""Only the native parts live here (everything else is in pyproject.toml): the byte test and the hold scanner.

Both extensions are optional: where no C compiler is available the build goes on without them;
``consumer.runtime.routing`` then uses the pure-Python byte test, and ``handlers.announcements`` the msgspec reader,
which make the same decisions (tested equal), only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("consumer._bytetest", ["consumer/_bytetest.c"], optional=True, extra_compile_args=["-O2"]),
        Extension("handlers._holdscan", ["handlers/_holdscan.c"], optional=True, extra_compile_args=["-O2"]),
    ]
)
