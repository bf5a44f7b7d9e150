"""Opcode histogram of the decode kernel's SASS (needs cuobjdump, i.e. the CUDA toolkit):
``python scripts/sass_decode.py N_TILES`` prints the most frequent instructions."""

import collections
import pathlib
import re
import subprocess
import sys

from nvfp4lab import kernels  # first: it points CuTeDSL's dump folder away from the working tree

import cutlass.cute as cute  # noqa: E402
from cutlass import Int32  # noqa: E402
from cutlass.cute.runtime import make_fake_stream  # noqa: E402

from nvfp4lab.kernels import decode_gemm, launch  # noqa: E402

n_tiles = int(sys.argv[1]) if len(sys.argv) > 1 else 1
compiled = cute.compile[cute.KeepCUBIN()](decode_gemm.decode_forward, *launch._decode_args(), *[Int32(1)] * 5,
                                          make_fake_stream(), n_tiles, False, False, True)
cubin = pathlib.Path(kernels.DUMP_DIR) / "decode_forward.cubin"
cubin.write_bytes(compiled.artifacts.CUBIN)
sass = subprocess.run(["cuobjdump", "-sass", str(cubin)], capture_output=True, text=True).stdout
ops = collections.Counter(m.group(1) for m in re.finditer(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", sass))
print(sum(ops.values()), "SASS instructions;", subprocess.run(["cuobjdump", "-res-usage", str(cubin)],
                                                                  capture_output=True, text=True).stdout[-400:])
for op, count in ops.most_common(45):
    print(f"{count:6d} {op}")
