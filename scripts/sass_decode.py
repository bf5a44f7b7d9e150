"""Opcode histogram of the decode kernel's SASS: ``python scripts/sass_decode.py [N_TILES]``
compiles the decode kernel for sm_90a (no GPU needed) and prints its most frequent
instructions. Needs ``cuobjdump`` (the CUDA toolkit) on the PATH."""

import argparse
import collections
import pathlib
import re
import shutil
import subprocess


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("n_tiles", nargs="?", type=int, default=1, help="output tiles per CTA (default 1)")
    args = parser.parse_args(argv)
    if args.n_tiles < 1:
        parser.error(f"N_TILES must be positive, got {args.n_tiles}")
    if shutil.which("cuobjdump") is None:
        parser.error("needs cuobjdump (the CUDA toolkit) on the PATH")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    from nvfp4lab import kernels  # first: it points CuTeDSL's dump folder away from the working tree

    import cutlass.cute as cute
    from cutlass import Int32
    from cutlass.cute.runtime import make_fake_stream

    from nvfp4lab.kernels import decode_gemm, launch

    compiled = cute.compile[cute.KeepCUBIN()](decode_gemm.decode_forward, *launch._decode_args(), *[Int32(1)] * 5,
                                              make_fake_stream(), args.n_tiles, False, False, True)
    cubin = pathlib.Path(kernels.DUMP_DIR) / "decode_forward.cubin"
    cubin.write_bytes(compiled.artifacts.CUBIN)
    sass = subprocess.run(["cuobjdump", "-sass", str(cubin)], capture_output=True, text=True).stdout
    instruction = r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)"
    ops = collections.Counter(m.group(1) for m in re.finditer(instruction, sass))
    print(sum(ops.values()), "SASS instructions;", subprocess.run(["cuobjdump", "-res-usage", str(cubin)],
                                                                      capture_output=True, text=True).stdout[-400:])
    for op, count in ops.most_common(45):
        print(f"{count:6d} {op}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
