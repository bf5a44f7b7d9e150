"""Vector views of global and shared memory for the kernels.

``cute.Pointer.align(n)`` rounds a pointer *up* to n bytes at run time (an add and a mask
on every access) so that the compiler may emit vector loads. Where the caller knows the
offset is a multiple of the vector, :func:`vector_at` says so to the compiler instead
(``cute.assume``): the same vector instruction, no run-time rounding.
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute


@cute.jit
def vector_at(tensor: cute.Tensor, offset, count: cutlass.Constexpr) -> cute.Tensor:
    """``tensor[offset : offset + count]`` as a 1-D tensor whose start is aligned to ``count``
    elements. The caller guarantees ``offset % count == 0`` and that ``tensor``'s pointer is
    declared with at least ``count`` elements of alignment (``launch.pointer``)."""
    return cute.make_tensor(tensor.iterator + cute.assume(offset, divby=count), cute.make_layout(count))
