"""Build the kernel as a plain shared library (no Python API; loaded with ctypes).

It is compiled for the CPU it is installed on (-march=native), as pip builds it on the
machine that runs it; HX_HAMMING_MARCH=x86-64-v2 (or empty) builds a portable one.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

march = os.environ.get("HX_HAMMING_MARCH", "native")
flags = ["-O3", "-std=c11", "-fno-strict-aliasing"]
if march:
    flags.append(f"-march={march}")

setup(
    ext_modules=[
        Extension("hx_hamming._kernel", ["src/hx_hamming/kernel.c"], extra_compile_args=flags),
    ]
)
