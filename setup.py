"""Builds the Cython extensions in native/ into the fastkv._native package.

Everything else about the package lives in pyproject.toml.  Set FASTKV_ANNOTATE=1 to
write Cython's HTML annotation next to each source, FASTKV_DEBUG=1 for -O0 -g builds,
FASTKV_ONLY=<module> to build one extension, FASTKV_LIMITED_API=1 to build against CPython's
limited API (one ``abi3`` wheel for 3.11 and later; measured and not chosen, see docs/design.md).
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

NATIVE_MODULES = ["crc32c", "raftentry", "walcodec", "keyindex", "httpcodec", "watchfan", "benchwatch"]

debug = os.environ.get("FASTKV_DEBUG") == "1"
compile_args = ["-O0", "-g"] if debug else ["-O3"]
limited_api = os.environ.get("FASTKV_LIMITED_API") == "1"
LIMITED_API_VERSION = 0x030B0000  # 3.11, the oldest Python fastkv supports

extensions = [
    Extension(
        f"fastkv._native.{name}",
        [f"native/{name}.pyx"],
        extra_compile_args=compile_args,
        define_macros=[("Py_LIMITED_API", LIMITED_API_VERSION)] if limited_api else [],
        py_limited_api=limited_api,
    )
    for name in NATIVE_MODULES
    if os.path.exists(f"native/{name}.pyx")
    and os.environ.get("FASTKV_ONLY", name) == name
]

setup(
    options={"bdist_wheel": {"py_limited_api": "cp311"}} if limited_api else {},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        # Declarations shared between extensions (cimport fastkv._native.<name>) live beside the
        # package: src/fastkv/_native/<name>.pxd.
        include_path=["src"],
        annotate=os.environ.get("FASTKV_ANNOTATE") == "1",
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    ),
)
