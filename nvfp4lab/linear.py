"""``Nvfp4GroupedLinear``: DeepSeek V4's ``wo_a`` as an NVFP4 grouped GEMM.

``o (T, H, D)`` is viewed as ``x (T, G, K = H/G·D)``; group ``g`` is multiplied by its own
weight ``W_g (K, N)``: ``z[t, g] = x[t, g] @ W_g``, giving ``z (T, G, N)`` bf16. Every token
goes to every group. Weights are NVFP4 with one global scale per group (dynamic, from
the weight itself); activations are NVFP4 with a global scale that is either shared by
all groups or one per group, and either static (calibrated with
:meth:`compute_activation_global_scale`, or set) or dynamic (from each input).

The forward is :meth:`Nvfp4GroupedLinear.run` (``layer(o)`` and ``layer.forward(o)``
call it). It is also registered as the custom op ``torch.ops.nvfp4lab.grouped_linear``
(``torch.library.custom_op``, with a fake implementation for shapes), which ``run``
calls while ``torch.compile`` traces: compiled model code (``fullgraph=True``, and
CUDA graphs with ``mode="reduce-overhead"``) sees the layer as one opaque op.
"""

from __future__ import annotations

import itertools
import weakref

import torch

from nvfp4lab import validation as v
from nvfp4lab.formats import GLOBAL_SCALE_DIVISOR
from nvfp4lab.gemm import run_nvfp4_grouped_gemm
from nvfp4lab.layouts import ROW_TILE, grouped_a_operand, grouped_b_operand, round_up
from nvfp4lab.quantize import NVFP4Tensor, dynamic_global_scale, quantize_nvfp4
from nvfp4lab.scale_modes import SHARINGS, SOURCES, ScaleMode


_LAYERS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # op handle -> layer
_HANDLES = itertools.count()


def _layer(handle: int) -> Nvfp4GroupedLinear:
    layer = _LAYERS.get(handle)
    if layer is None:
        raise RuntimeError(f"nvfp4lab::grouped_linear: layer {handle} no longer exists")
    return layer


@torch.library.custom_op("nvfp4lab::grouped_linear", mutates_args=())
def grouped_linear(o: torch.Tensor, layer: int) -> torch.Tensor:
    """The forward of the layer with handle ``layer`` as one op: ``o (T, H, D)`` bf16 ->
    a new ``z (T, G, N)`` bf16 tensor (a copy of the layer's output buffer)."""
    return _layer(layer)._forward(o).clone()


@grouped_linear.register_fake
def _grouped_linear_fake(o: torch.Tensor, layer: int) -> torch.Tensor:
    module = _layer(layer)
    module._check_call(o)
    module._check_input(o, "o")
    return o.new_empty((o.shape[0], module.groups, module.out_features), dtype=torch.bfloat16)


class Nvfp4GroupedLinear:
    """The grouped linear ``z (T, G, N) = einsum("tgk,gkn->tgn", o.view(T, G, K), W)``.

    Args:
        n_local_groups: G, the groups on this rank.
        heads_per_group, head_dim: K = heads_per_group · head_dim (a multiple of 16).
        o_lora_rank: N, the output width of each group.
        max_num_tokens: the largest T a call accepts; buffers are sized for it.
        device: where the weights, buffers and computation live.
        activation_scale: ``"shared"`` (one global activation scale for all groups, as
            the original sketch) or ``"per_group"``.
        activation_scale_source: ``"static"`` (the stored scale: the sketch's default
            ``1/2688``, i.e. amax 1, until :meth:`compute_activation_global_scale` or
            :meth:`set_activation_global_scale`) or ``"dynamic"`` (from each input).
        backend: ``"auto"`` (the CuTeDSL kernels on CUDA sm_90+, the reference
            elsewhere), ``"cutedsl"`` or ``"reference"`` (see :mod:`nvfp4lab.gemm`).
        check_finite: reject NaN/Inf inputs (skipped while a CUDA graph is captured).

    On the CuTeDSL path every buffer (the A operand for ``max_num_tokens``, scales,
    global scales, offsets, the output) is allocated here, and the forward is three
    kernel launches at most (amax, quantizer, GEMM) with no host-device synchronisation
    and no Python loop over groups, so it can be captured in a CUDA graph.

    The output of an eager call is a view of the layer's pre-allocated output buffer:
    valid until the next call (clone it to keep it). Under ``torch.compile`` the call is
    the custom op ``nvfp4lab::grouped_linear``, whose output is a new tensor.
    """

    def __init__(
        self,
        n_local_groups: int,
        heads_per_group: int,
        head_dim: int,
        o_lora_rank: int,
        max_num_tokens: int = 8192,
        device=None,
        *,
        activation_scale: str = "shared",
        activation_scale_source: str = "static",
        backend: str = "auto",
        check_finite: bool = True,
    ):
        for name, value in dict(
            n_local_groups=n_local_groups,
            heads_per_group=heads_per_group,
            head_dim=head_dim,
            o_lora_rank=o_lora_rank,
            max_num_tokens=max_num_tokens,
        ).items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if activation_scale not in SHARINGS:
            raise ValueError(f"activation_scale must be one of {SHARINGS}; got {activation_scale!r}")
        if activation_scale_source not in SOURCES:
            raise ValueError(f"activation_scale_source must be one of {SOURCES}; got {activation_scale_source!r}")
        self.groups = n_local_groups
        self.heads_per_group = heads_per_group
        self.head_dim = head_dim
        self.in_features = heads_per_group * head_dim  # K
        self.out_features = o_lora_rank  # N
        v.check_block_multiple(self.in_features, "heads_per_group * head_dim")
        self.max_num_tokens = max_num_tokens
        self.device = v.normalize_device(device)
        self.activation_scale = activation_scale
        self.activation_scale_source = activation_scale_source
        if backend not in ("auto", "cutedsl", "reference"):
            raise ValueError(f"backend must be 'auto', 'cutedsl' or 'reference'; got {backend!r}")
        if backend == "auto":
            from nvfp4lab.kernels import gpu_supported

            backend = "cutedsl" if gpu_supported(self.device) else "reference"
        self.backend = backend
        self.check_finite = check_finite

        g, n = self.groups, self.out_features
        self.activation_global_scale = torch.full((g,), 1.0 / GLOBAL_SCALE_DIVISOR, device=self.device)
        self.weight_nk: torch.Tensor | None = None  # (G, N, K), K-major, as set
        self.weight_q: NVFP4Tensor | None = None
        self._mat_b = self._scale_b = None
        self._z = torch.empty((max_num_tokens, g, n), dtype=torch.bfloat16, device=self.device)
        if backend == "cutedsl":
            self._allocate_kernel_buffers()
        self._handle = next(_HANDLES)  # the custom op finds the layer by this number
        _LAYERS[self._handle] = self

    def _allocate_kernel_buffers(self) -> None:
        g, k = self.groups, self.in_features
        rows_p = round_up(self.max_num_tokens, ROW_TILE)
        block_cols_p = round_up(k // 16, 4)
        dev = self.device
        self._a_data = torch.empty(g * rows_p * (k // 2), dtype=torch.uint8, device=dev)
        self._a_scales = torch.zeros(g * rows_p * block_cols_p, dtype=torch.uint8, device=dev)  # padding stays 0
        self._gs_a = torch.empty(g, dtype=torch.float32, device=dev)
        self._amax_bits = torch.zeros(g, dtype=torch.int32, device=dev)
        self._group_ends = torch.arange(1, g + 1, dtype=torch.int32, device=dev)
        self._offsets = torch.empty(g, dtype=torch.int32, device=dev)
        self._decode_counters = None  # the decode kernel's split-K counters, with its weights
        self._prefill_counters = None  # the prefill kernel's split-K counters, with its weights
        self._decode_weights = None  # (words, scales) in the decode kernel's layout, set by finalize_weights

    # ----------------------------------------------------------------- weights
    def set_bf16_weight(self, w: torch.Tensor) -> None:
        """Set the weights: bmm form ``(G, K, N)`` or dense form ``(G·N, K)`` (rows
        ``g·N + n``, as ``nn.Linear`` weights of the groups stacked). bf16, fp16 or fp32.
        Setting weights again replaces them and requires :meth:`finalize_weights` again."""
        v.check_tensor(w, "w")
        v.check_dtype(w, "w", v.FLOAT_INPUT_DTYPES)
        g, k, n = self.groups, self.in_features, self.out_features
        if tuple(w.shape) == (g, k, n):
            weight_nk = w.transpose(1, 2)
        elif tuple(w.shape) == (g * n, k):
            weight_nk = w.reshape(g, n, k)
        else:
            raise ValueError(f"w must be (G, K, N) = {(g, k, n)} or (G·N, K) = {(g * n, k)}; got {tuple(w.shape)}")
        if w.device != self.device:
            raise ValueError(f"w is on {w.device}, the layer on {self.device}")
        v.check_finite(w, "w")
        self.weight_nk = weight_nk.contiguous()
        self.weight_q = self._mat_b = self._scale_b = None

    def finalize_weights(self) -> None:
        """Quantize the weights (one dynamic global scale per group) into the GEMM's B
        operand."""
        if self.weight_nk is None:
            raise RuntimeError("finalize_weights() called before set_bf16_weight()")
        gs_b = dynamic_global_scale(self.weight_nk, per_group=True, group_dim=0)  # (G,)
        self.weight_q = quantize_nvfp4(self.weight_nk, gs_b, group_dim=0, check_finite=False)
        self._mat_b, self._scale_b = grouped_b_operand(self.weight_q)
        if self.backend == "cutedsl":
            from nvfp4lab.kernels import launch
            from nvfp4lab.kernels.decode_layout import pack_decode_weights

            if (launch.decode_supported(1, self.groups, self.in_features, self.out_features)  # for some T <= 32
                    or launch.prefill_supported(self.groups, self.in_features, self.out_features)):
                # the decode and prefill kernels' copy: each lane's 16-byte load is its MMA fragments
                self._decode_weights = pack_decode_weights(self.weight_q.data, self.weight_q.scales)
                self._decode_counters = launch.decode_counters(self.groups, self.out_features, self.device)
                if launch.prefill_supported(self.groups, self.in_features, self.out_features):
                    self._prefill_counters = launch.prefill_counters(self.max_num_tokens, self.groups,
                                                                     self.out_features, self.device)

    # ------------------------------------------------------ activation scales
    def _check_input(self, o: torch.Tensor, name: str) -> None:
        """Type, dtype, shape and device checks that need no data (also run while tracing)."""
        v.check_tensor(o, name)
        v.check_dtype(o, name, (torch.bfloat16,))
        v.check_ndim(o, name, 3, "(T, H, D)")
        h = self.groups * self.heads_per_group
        if tuple(o.shape[1:]) != (h, self.head_dim):
            raise ValueError(f"{name} must be (T, H={h}, D={self.head_dim}); got {tuple(o.shape)}")
        if o.device != self.device:
            raise ValueError(f"{name} is on {o.device}, the layer on {self.device}")

    def _grouped_view(self, o: torch.Tensor, name: str) -> torch.Tensor:
        self._check_input(o, name)
        if self.check_finite and v.finite_check_allowed(o):
            v.check_finite(o, name)
        return o.reshape(o.shape[0], self.groups, self.in_features)

    def _activation_scale_from(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(G,)`` scales computed from ``x`` itself (this layer's sharing)."""
        return ScaleMode(self.activation_scale, "dynamic").global_scale(x)

    def compute_activation_global_scale(self, o_sample: torch.Tensor) -> torch.Tensor:
        """Calibrate the static activation scale from ``o_sample (T, H, D)`` bf16: its amax
        (shared or per group) / 2688. Stores and returns it as ``(G,)`` float32."""
        x = self._grouped_view(o_sample, "o_sample")
        if x.shape[0] == 0:
            raise ValueError("o_sample has no tokens")
        self.activation_global_scale = self._activation_scale_from(x)
        return self.activation_global_scale

    def set_activation_global_scale(self, scale: torch.Tensor) -> None:
        """Set the static activation scale: a scalar or ``(G,)`` float32 (dequant form)."""
        scale = torch.as_tensor(scale, dtype=torch.float32, device=self.device)
        if scale.dim() == 0:
            scale = scale.expand(self.groups)
        v.check_shape(scale, "scale", (self.groups,))
        if self.activation_scale == "shared" and bool((scale != scale[0]).any()):
            raise ValueError("a layer with activation_scale='shared' needs one value for all groups")
        v.check_global_scale(scale, "scale")
        self.activation_global_scale = scale.contiguous().clone()

    # ----------------------------------------------------------------- forward
    def quantize_activations(self, o: torch.Tensor) -> NVFP4Tensor:
        """Quantize ``o (T, H, D)`` as the forward does: an NVFP4 tensor of shape ``(T, G, K)``."""
        x = self._grouped_view(o, "o")
        mode = ScaleMode(self.activation_scale, self.activation_scale_source)
        return quantize_nvfp4(x, mode.global_scale(x, self.activation_global_scale), check_finite=False)

    def run(self, o: torch.Tensor) -> torch.Tensor:
        """The forward: ``o (T, H, D)`` bf16 -> ``z (T, G, N)`` bf16,
        ``z[t, g] = x̂[t, g] @ Ŵ_g`` with ``x = o.view(T, G, K)`` (see the class docstring).

        Eager: a view of the layer's output buffer. While ``torch.compile`` traces it: the
        custom op ``torch.ops.nvfp4lab.grouped_linear`` (same numbers, a new tensor)."""
        if torch.compiler.is_compiling():
            return torch.ops.nvfp4lab.grouped_linear(o, self._handle)
        return self._forward(o)

    def __call__(self, o: torch.Tensor) -> torch.Tensor:
        """``layer(o)`` is :meth:`run`."""
        return self.run(o)

    def forward(self, o: torch.Tensor) -> torch.Tensor:
        """``layer.forward(o)`` is :meth:`run` (for code written for ``nn.Module``)."""
        return self.run(o)

    def _check_call(self, o: torch.Tensor) -> int | None:
        """The layer is ready and ``o`` fits its buffers; returns T (None if ``o`` is not 3-D)."""
        if self._mat_b is None:
            raise RuntimeError("call set_bf16_weight() and finalize_weights() before the forward")
        tokens = o.shape[0] if isinstance(o, torch.Tensor) and o.dim() == 3 else None
        if tokens is not None and tokens > self.max_num_tokens:
            raise ValueError(f"o has T={tokens} tokens, more than max_num_tokens={self.max_num_tokens}")
        return tokens

    def _forward(self, o: torch.Tensor) -> torch.Tensor:
        """The eager forward into the output buffer (the custom op's implementation)."""
        tokens = self._check_call(o)
        if self.backend == "cutedsl":
            return self._forward_kernels(self._grouped_view(o, "o"))
        q = self.quantize_activations(o)
        if tokens == 0:
            return self._z[:0]
        group_major_shape = torch.Size((self.groups, tokens, self.in_features))
        by_group = NVFP4Tensor(
            q.data.transpose(0, 1), q.scales.transpose(0, 1), q.global_scale, group_major_shape, q.dtype, group_dim=0
        )
        mat_a, scale_a, offsets = grouped_a_operand(by_group)
        out = run_nvfp4_grouped_gemm(
            mat_a, self._mat_b, scale_a, self._scale_b, offsets, q.global_scale, self.weight_q.global_scale,
            backend=self.backend,
        )
        rows_p = round_up(tokens, ROW_TILE)
        z = self._z[:tokens]
        z.copy_(out.view(self.groups, rows_p, self.out_features)[:, :tokens].transpose(0, 1))
        return z

    def _forward_kernels(self, x: torch.Tensor) -> torch.Tensor:
        """The CuTeDSL forward: ``x (T, G, K)`` bf16 contiguous -> ``z (T, G, N)``."""
        from nvfp4lab.gemm import cutedsl_grouped_gemm
        from nvfp4lab.kernels import launch

        v.check_contiguous(x, "o")
        tokens, g, k = x.shape
        z = self._z[:tokens]
        if tokens == 0:
            return z
        dynamic = self.activation_scale_source == "dynamic"
        shared = self.activation_scale == "shared"
        source = self._amax_bits.view(torch.float32) if dynamic else self.activation_global_scale
        plan = launch.forward_plan(tokens, g, k, self.out_features, launch.multiprocessors(x.device.index or 0),
                                   dynamic=dynamic, shared=shared, fragment_weights=self._decode_weights is not None)
        if plan.amax:
            launch.group_amax(x, self._amax_bits)
        if plan.decode:  # one launch: the prologue quantizes (and finds the amax when plan.fused_amax)
            launch.decode_forward(x, source, *self._decode_weights, self.weight_q.global_scale, z,
                                  self._decode_counters, dynamic=dynamic, shared=shared, fused_amax=plan.fused_amax)
            return z
        rows_p = round_up(tokens, ROW_TILE)
        data = self._a_data[: g * rows_p * (k // 2)].view(g * rows_p, k // 2)
        scales = self._a_scales[: g * rows_p * round_up(k // 16, 4)].view(g * rows_p, -1)
        launch.quantize_activations(x, source, data, scales, self._gs_a, dynamic=dynamic, shared=shared)
        if plan.prefill:
            launch.prefill_gemm(data, scales, *self._decode_weights, self._gs_a, self.weight_q.global_scale, z,
                                self._prefill_counters)
            return z
        torch.mul(self._group_ends, rows_p, out=self._offsets)
        cutedsl_grouped_gemm(
            data.view(torch.float4_e2m1fn_x2), self._mat_b, scales.view(torch.float8_e4m3fn), self._scale_b,
            self._offsets, self._gs_a, self.weight_q.global_scale, out=z, tokens=tokens,
        )
        return z
