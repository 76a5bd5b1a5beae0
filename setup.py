"""Only the native byte test lives here (everything else is in pyproject.toml).

The extension is optional: where no C compiler is available the build goes on without it and
``consumer.runtime.routing`` uses the pure-Python byte test, which makes the same decisions (tested equal), only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("consumer._bytetest", ["consumer/_bytetest.c"], optional=True, extra_compile_args=["-O2"]),
    ]
)
