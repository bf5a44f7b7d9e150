"""The folds the transform study simulates, checked on a whole (tiny) decoder.

The study applies an activation transform ``A`` inside the ``o_proj`` hook: ``x' = x·A``,
``W' = A⁻¹·W`` (:class:`~nvfp4lab.transforms.recipes.FittedTransform`). A serving stack
instead folds ``A`` into the value projection (each KV head's rows of ``w_v`` and its bias)
and ``A⁻¹`` into ``o_proj``'s weight, then runs the plain dense decoder. Here: the folded
decoder gives the unfolded decoder's output and its attention output comes out as ``o·A``,
for per-head Hadamard rotations and for smoothing scales tied across the query heads that
share a KV head; untied per-query-head scales do not fold; and the hook's product
``x'·W'`` is ``x·W``.

Tolerances (measured on these decoders: Llama and Qwen2 layouts, 4 query heads on 2 KV
heads, head_dim 32, 2 layers, 2×12 tokens). The folds are exact in real numbers; only the
rounding of reordered sums remains. Final residual stream, relative to its largest value:
≤ 5.0e-7 in float32, ≤ 7.4e-16 in float64 — asserted at 1e-5 and 1e-12. Logits are
float32 in both dtypes (``Decoder.head`` casts them): ≤ 4.0e-7 (float32 decoder) and 0
(float64 decoder) — asserted at 1e-5 and 1e-6 (one float32 ulp of a logit near the largest
is up to 1.2e-7 of it). The attention output entering ``o_proj``: ≤ 7.8e-7 (float32),
≤ 7.4e-16 (float64) — asserted at 1e-5 and 1e-12. A wrong fold (untied scales) moves the
residual stream by 9 % and the logits by 6 %, the wrongly scaled heads by 29 %.
"""

import pytest
import torch

from gguf_tiny import write_tiny
from nvfp4lab.models.decoder import Decoder, dense_projection
from nvfp4lab.transforms import hadamard as hd
from nvfp4lab.transforms import smoothing as sm
from nvfp4lab.transforms.recipes import ACTIVATION_TRANSFORMS, STUDY_TRANSFORMS, Transform, fit_transforms

GROUPS = 2  # o_proj's grouped view: 2 groups of 2 heads
#: (final residual stream, logits, attention output) relative tolerances per decoder dtype
TOLERANCE = {torch.float32: (1e-5, 1e-5, 1e-5), torch.float64: (1e-12, 1e-6, 1e-12)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Llama (no v bias) and Qwen2 (q/k/v biases) decoders with GQA (4 heads, 2 KV heads)
    and head_dim 32, so that a 16-block rotation differs from the per-head one."""
    directory = tmp_path_factory.mktemp("tiny-folds")
    return {arch: write_tiny(directory / f"{arch}.gguf", arch, heads=4, kv_heads=2, head_dim=32)
            for arch in ("llama", "qwen2")}


def ids_for(decoder):
    return torch.randint(0, decoder.config.vocab, (2, 12), generator=torch.Generator().manual_seed(7))


def run(decoder, ids):
    """The dense decoder's final residual stream, logits and per-layer attention outputs
    ``o (B·S, heads·head_dim)`` as they enter ``o_proj``."""
    seen = {}

    def hook(layer, o, w):
        seen[layer] = o.clone()
        return dense_projection(layer, o, w)

    final = decoder.hidden_states(ids, hook)[-1]
    return final, decoder.head(final), seen


def folded(decoder, fold_v, fold_o):
    """A copy of ``decoder`` with ``fold_v(layer, t)`` applied to each layer's ``attn_v``
    weight and bias (where there is one) and ``fold_o(layer, t)`` to ``attn_output``."""
    w = dict(decoder.w)
    has_bias = False
    for i in range(decoder.config.layers):
        for part in ("weight", "bias"):
            key = f"blk.{i}.attn_v.{part}"
            if key in w:
                w[key] = fold_v(i, w[key])
                has_bias |= part == "bias"
        key = f"blk.{i}.attn_output.weight"
        w[key] = fold_o(i, w[key])
    assert has_bias == (decoder.config.architecture == "qwen2"), "the Qwen2 fold must exercise the v bias"
    return Decoder(decoder.config, w, "cpu", decoder.dtype)


def relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


def assert_same_model(reference, candidate, dtype):
    (final_ref, logits_ref, _), (final, logits, _) = reference, candidate
    state_tol, logit_tol, _ = TOLERANCE[dtype]
    assert final.dtype == dtype and logits.dtype == torch.float32
    assert relative(final, final_ref) <= state_tol, relative(final, final_ref)
    assert relative(logits, logits_ref) <= logit_tol, relative(logits, logits_ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("block", ["head", 16])
def test_a_per_head_rotation_folded_into_v_and_o_proj_leaves_the_decoder_unchanged(tiny, arch, dtype, block):
    """Folding ``R = I ⊗ Ĥ_b`` (b = head_dim or 16) into ``w_v`` (and its bias) and ``Rᵀ``
    into ``o_proj`` gives the unfolded decoder's output to rounding, and the attention
    output entering the folded ``o_proj`` is ``o·R`` of the unfolded one (so quantizing it
    is what the study's hook quantizes)."""
    decoder = Decoder.from_gguf(tiny[arch], "cpu", dtype)
    d = decoder.config.head_dim
    b = d if block == "head" else block
    ids = ids_for(decoder)
    reference = run(decoder, ids)
    rotated = run(folded(decoder, lambda i, t: hd.fold_into_value_projection(t, d, b),
                         lambda i, t: hd.fold_into_output_projection(t, b)), ids)
    assert_same_model(reference, rotated, dtype)
    for layer, o in reference[2].items():
        o_folded = rotated[2][layer]
        expected = hd.rotate_activations(o, b)
        assert relative(o_folded, expected) <= TOLERANCE[dtype][2], layer
        assert relative(o_folded, o) > 0.1, "the folded attention output must come out rotated, not as it was"


def layer_amaxes(decoder, o_by_layer):
    """Per layer, the channel amaxes ``(a, m)`` ``(G, K)`` of the attention output and of
    ``o_proj``'s grouped weight (``W (G, K, N)``, as models.projection.LayerWeights)."""
    c = decoder.config
    out = {}
    for layer, o in o_by_layer.items():
        x = o.reshape(o.shape[0], GROUPS, -1)
        w = decoder.o_proj_weight(layer).T.reshape(GROUPS, -1, c.hidden)
        out[layer] = sm.activation_channel_amax(x), sm.weight_channel_amax(w)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_smoothing_scales_tied_across_shared_kv_heads_fold_into_v_and_o_proj(tiny, arch, dtype):
    """Scales from amaxes tied with ``tie_shared_kv_heads`` fold: ``w_v`` rows (and bias)
    divided by ``s`` and ``o_proj``'s columns multiplied by ``s`` give the unfolded
    decoder's output to rounding, and the folded attention output is ``o·diag(s)⁻¹``."""
    decoder = Decoder.from_gguf(tiny[arch], "cpu", dtype)
    c = decoder.config
    ids = ids_for(decoder)
    reference = run(decoder, ids)
    s = {}
    for layer, (a, m) in layer_amaxes(decoder, reference[2]).items():
        s[layer] = sm.smoothing_scales(sm.tie_shared_kv_heads(a, c.heads, c.kv_heads),
                                       sm.tie_shared_kv_heads(m, c.heads, c.kv_heads), 0.5)
        assert float(s[layer].max() / s[layer].min()) > 1.5, "scales far from uniform: the fold is visible"
    smoothed = run(folded(decoder, lambda i, t: sm.fold_scales_into_value_projection(t, s[i], c.heads),
                          lambda i, t: sm.fold_scales_into_output_projection(t, s[i])), ids)
    assert_same_model(reference, smoothed, dtype)
    for layer, o in reference[2].items():
        expected = o / s[layer].reshape(1, -1).to(dtype)
        assert relative(smoothed[2][layer], expected) <= TOLERANCE[dtype][2], layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_untied_per_query_head_scales_do_not_fold_which_is_why_they_are_tied(tiny, dtype):
    """Per-query-head scales that differ between heads sharing a KV head cannot fold:
    ``fold_scales_into_value_projection`` refuses them, and the best a ``w_v`` fold can do
    (each KV head divided by the scales of its first query head, ``o_proj`` multiplied by
    every head's own scales) changes the model: the other query heads come out divided by
    the wrong scales, moving the logits by several percent."""
    decoder = Decoder.from_gguf(tiny["qwen2"], "cpu", dtype)
    c = decoder.config
    r = c.heads // c.kv_heads
    ids = ids_for(decoder)
    reference = run(decoder, ids)
    s = {layer: sm.smoothing_scales(a, m, 0.5) for layer, (a, m) in layer_amaxes(decoder, reference[2]).items()}
    for layer, scales in s.items():
        per_kv = scales.reshape(c.kv_heads, r, c.head_dim)
        assert not torch.equal(per_kv[:, 0], per_kv[:, 1]), "untied scales must differ across shared heads"
        with pytest.raises(ValueError, match="share a KV head"):
            sm.fold_scales_into_value_projection(decoder.w[f"blk.{layer}.attn_v.weight"], scales, c.heads)

    def first_head_of_each_kv(i, t):
        divisor = s[i].reshape(c.kv_heads, r, c.head_dim)[:, 0].reshape(-1).to(t.dtype)
        return t / (divisor[:, None] if t.dim() == 2 else divisor)

    naive = run(folded(decoder, first_head_of_each_kv, lambda i, t: sm.fold_scales_into_output_projection(t, s[i])),
                ids)
    assert relative(naive[0], reference[0]) > 0.02
    assert relative(naive[1], reference[1]) > 0.02
    o = reference[2][0].reshape(-1, c.heads, c.head_dim)
    o_naive = naive[2][0].reshape(-1, c.heads, c.head_dim)
    wanted = o / s[0].reshape(c.heads, c.head_dim).to(dtype)
    assert relative(o_naive[:, ::r], wanted[:, ::r]) <= TOLERANCE[dtype][2], "the first head of each KV head is right"
    assert relative(o_naive[:, 1::r], wanted[:, 1::r]) > 0.05, "the others are divided by the wrong scales"


def captured(decoder, ids):
    """Per layer, the dense decoder's attention output in the grouped view ``x (T, G, K)``."""
    return {layer: o.reshape(o.shape[0], GROUPS, -1) for layer, o in run(decoder, ids)[2].items()}


def test_the_hook_product_of_every_fitted_activation_transform_is_the_layer():
    """For each activation transform of STUDY_TRANSFORMS fitted on captured activations,
    ``FittedTransform.activations(x) @ FittedTransform.weights`` equals ``x @ W`` (float64
    products): what the study's hook multiplies, before quantization, is the layer. ``W'``
    is stored in float32 (transformed from the float32 weights), so the agreement is to
    float32 rounding: ≤ 8.5e-8 of the largest output measured, asserted at 1e-6; multiplying
    by the untransformed ``W`` instead misses by 83 % to 184 %."""
    g = torch.Generator().manual_seed(3)
    heads, kv_heads, d, n = 4, 2, 32, 48
    x = torch.randn(64, GROUPS, heads * d // GROUPS, generator=g, dtype=torch.float64)
    x = x * torch.exp(torch.randn(heads * d // GROUPS, generator=g, dtype=torch.float64))  # channel outliers
    w = torch.randn(GROUPS, heads * d // GROUPS, n, generator=g) / 8
    activations = [t for t in STUDY_TRANSFORMS if t.weights == "rtn" and t.unavailable(d, x.shape[-1]) is None]
    assert {t.activation for t in activations} == set(ACTIVATION_TRANSFORMS) - {"none", "hadamard 128"}
    fitted = fit_transforms(activations, x, w, d, shared_kv=(heads, kv_heads))
    reference = torch.einsum("tgk,gkn->tgn", x, w.double())
    for t, f in fitted.items():
        xt = f.activations(x)
        z = torch.einsum("tgk,gkn->tgn", xt.double(), f.weights.double())
        assert relative(z, reference) <= 1e-6, (t.label, relative(z, reference))
        unfolded = torch.einsum("tgk,gkn->tgn", xt.double(), w.double())
        assert relative(unfolded, reference) > 0.1, t.label


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("activation", ["hadamard head", "smoothquant"])
def test_the_study_fitted_transform_folds_into_the_decoder_and_its_hook_input_is_what_the_folded_model_feeds_o_proj(
        tiny, dtype, activation):
    """The transform the study fits per layer (with ``shared_kv`` = the model's heads, as
    models.evaluate.fit_layer_transforms does) folds into the decoder: the folded decoder
    gives the unfolded output to rounding, and the folded model's ``o_proj`` input is
    ``FittedTransform.activations(x)`` of the unfolded model's, i.e. the hook simulation
    quantizes exactly what a served, folded model would. Measured: the rotation's hook input
    ≤ 5.6e-7 (float32) and ≤ 6.7e-16 (float64) of the largest value from the folded model's;
    smoothing's ≤ 1.3e-6 (its division runs in float32 in both dtypes; asserted at 1e-5);
    ``W'`` (float32) equals the folded ``o_proj`` exactly in float32, to 1.3e-7 in float64."""
    decoder = Decoder.from_gguf(tiny["qwen2"], "cpu", dtype)
    c = decoder.config
    ids = ids_for(decoder)
    reference = run(decoder, ids)
    xs = captured(decoder, ids)
    transform = Transform(activation)
    fitted = {layer: fit_transforms([transform], x, decoder.o_proj_weight(layer).T.reshape(GROUPS, -1, c.hidden),
                                    c.head_dim, shared_kv=(c.heads, c.kv_heads))[transform]
              for layer, x in xs.items()}
    if activation == "smoothquant":
        model = folded(decoder, lambda i, t: sm.fold_scales_into_value_projection(t, fitted[i].smoothing, c.heads),
                       lambda i, t: sm.fold_scales_into_output_projection(t, fitted[i].smoothing))
    else:
        assert all(f.block == c.head_dim for f in fitted.values())
        model = folded(decoder, lambda i, t: hd.fold_into_value_projection(t, c.head_dim),
                       lambda i, t: hd.fold_into_output_projection(t, c.head_dim))
    result = run(model, ids)
    assert_same_model(reference, result, dtype)
    for layer, x in xs.items():
        hook_input = fitted[layer].activations(x).reshape(x.shape[0], -1).to(dtype)
        # the hook divides by s in float32 (FittedTransform.activations): float32 rounding there
        tol = 1e-5 if activation == "smoothquant" else TOLERANCE[dtype][2]
        assert relative(result[2][layer], hook_input) <= tol, layer
        assert relative(result[2][layer], x.reshape(x.shape[0], -1)) > 0.05, "the transform must do something"
        # and the fitted W' is the folded o_proj in the grouped view
        w_folded = model.o_proj_weight(layer).T.reshape(GROUPS, -1, c.hidden)
        assert relative(fitted[layer].weights.to(dtype), w_folded) <= 1e-5, layer
