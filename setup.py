"""Only the extension list lives here; everything else is in pyproject.toml."""
import os

from setuptools import setup

ext_modules = []
if os.environ.get("GATEWAY_PURE_PYTHON") != "1":
    from Cython.Build import cythonize

    ext_modules = cythonize(
        ["core_ext/_ledger_c.pyx", "core_ext/_promo_c.pyx", "core_ext/_salepath_c.pyx", "core_ext/_docbytes_c.pyx"],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        quiet=True,
    )

setup(ext_modules=ext_modules)
