"""The study's computations, shared by the notebooks and the finding tests.

Every function is deterministic (seeded) and takes ``fast``: small shapes for CI (a few
seconds on 2 CPU cores), the shapes of NVFP4.md §5 otherwise.
"""

from __future__ import annotations

import torch

from nvfp4lab import baselines, drift, evaluation, metrics
from nvfp4lab.calibration import HeadroomCalibrator, MaxCalibrator
from nvfp4lab.data import synthetic
from nvfp4lab.formats import E2M1_GRID, e4m3_float_from_byte
from nvfp4lab.quantize import dequantize_nvfp4, quantize_nvfp4
from nvfp4lab.scale_modes import ScaleMode


#: The synthetic token sets: calibration and held-out evaluation (independent streams of one model).
CALIBRATION_SEED, HELD_OUT_SEED = 1, 2


def config(fast: bool, **changes) -> synthetic.SyntheticV4:
    base = synthetic.SyntheticV4(groups=4, heads_per_group=2, out_features=256) if fast else synthetic.FLASH
    return base.with_(**changes)


def tokens(fast: bool) -> int:
    return 256 if fast else 2048


def device(fast: bool) -> torch.device:
    """Full mode computes on the GPU when there is one; fast mode always on the CPU."""
    return torch.device("cuda") if not fast and torch.cuda.is_available() else torch.device("cpu")


def data(fast: bool, seed: int = CALIBRATION_SEED, **changes):
    """``(x (T, G, K) float32, w (G, K, N), cfg)`` of the synthetic V4 model."""
    cfg = config(fast, **changes)
    x = synthetic.grouped(synthetic.activations(cfg, tokens(fast), seed), cfg).float()
    return x.to(device(fast)), synthetic.weights(cfg).float().to(device(fast)), cfg


# ---------------------------------------------------------------- the format
def e2m1_times_e4m3_exact_in_bf16() -> dict:
    """Are all 16 × 254 finite products E2M1 · E4M3 exact in bf16 (and fp32)?"""
    grid = torch.tensor(E2M1_GRID + tuple(-v for v in E2M1_GRID), dtype=torch.float64)
    scales = e4m3_float_from_byte(torch.arange(256, dtype=torch.int32).to(torch.uint8)).double()
    scales = scales[torch.isfinite(scales)]
    products = grid[:, None] * scales[None, :]
    exact = products.to(torch.bfloat16).double() == products
    return {"products": int(products.numel()), "exact": int(exact.sum())}


def sqnr_vs_global_scale(fast: bool) -> dict:
    """Quantization SQNR of one activation tensor as its global scale is multiplied by
    2^e, e = -4 … 24: flat while block scales stay normal E4M3."""
    x, _, _ = data(fast)
    amax = x.abs().max()
    exponents = list(range(-4, 25))
    sqnr = []
    for e in exponents:
        gs = (amax / 2688 * 2.0**e).to(torch.float32)
        sqnr.append(metrics.sqnr_db(x, dequantize_nvfp4(quantize_nvfp4(x, gs))))
    at_max = sqnr[exponents.index(0)]
    flat = [e for e, s in zip(exponents, sqnr) if e >= 0 and abs(s - at_max) <= 0.1]
    widest = 0
    while widest + 1 in flat:
        widest += 1
    return {"exponents": exponents, "sqnr_db": sqnr, "sqnr_at_max_db": at_max, "flat_octaves": widest,
            "sqnr_at_minus_2_db": sqnr[exponents.index(-2)]}


# ------------------------------------------------------ shared vs per group
def shared_vs_per_group(fast: bool, spreads=(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)) -> dict:
    """Static max-calibrated scales, shared vs per group, as the spread of *group*
    magnitudes grows (group g scaled by 10^(-spread·g/(G-1))). Returns per spread the
    quietest group's SQNR of z for each sharing and the subnormal block-scale fraction."""
    rows = []
    for spread in spreads:
        x_cal, w, cfg = data(fast, seed=CALIBRATION_SEED, head_spread_decades=0.0)
        x_eval, _, _ = data(fast, seed=HELD_OUT_SEED, head_spread_decades=0.0)
        gain = (10.0 ** (-spread * torch.arange(cfg.groups) / (cfg.groups - 1))).to(x_cal.device)
        x_cal, x_eval = x_cal * gain[None, :, None], x_eval * gain[None, :, None]
        reference = baselines.reference_output(x_eval, w)
        w_hat = baselines.nvfp4_weights(w)
        row = {"spread_decades": spread}
        for sharing in ("shared", "per_group"):
            calibrator = MaxCalibrator(sharing)
            calibrator.observe(x_cal)
            scale = ScaleMode(sharing, "static").global_scale(x_eval, calibrator.global_scale())
            z, xq = baselines.nvfp4_output(x_eval, w, scale, w_hat)
            per_group = metrics.sqnr_db_per_group(reference, z)
            stats = metrics.quantization_stats(x_eval, xq)
            row[f"{sharing}_quietest_group_db"] = float(per_group[-1])
            row[f"{sharing}_subnormal_fraction"] = stats["subnormal_scale_blocks"] / stats["blocks"]
            row[f"{sharing}_zero_scale_fraction"] = stats["zero_scale_blocks"] / stats["blocks"]
        rows.append(row)
    return {"rows": rows}


def drift_of_static_scales(fast: bool) -> dict:
    """Max and headroom-×4 static per-group scales under the drift scenarios."""
    x_cal, w, _ = data(fast, seed=CALIBRATION_SEED)
    x_eval, _, _ = data(fast, seed=HELD_OUT_SEED)
    return {
        "max": drift.drift_report(MaxCalibrator("per_group"), x_cal, x_eval, w),
        "headroom x4": drift.drift_report(HeadroomCalibrator("per_group", headroom=4.0), x_cal, x_eval, w),
    }


def summarise_drift(rows: list[dict]) -> dict[str, dict]:
    out = {}
    for r in rows:
        s = out.setdefault(r["scenario"], {"min_sqnr_db": float("inf"), "max_clipped": 0.0, "clipping_groups": 0})
        s["min_sqnr_db"] = min(s["min_sqnr_db"], r["sqnr_db"])
        s["max_clipped"] = max(s["max_clipped"], r["clipped_fraction"])
        s["clipping_groups"] += int(r["clipped_fraction"] > 0)
    return out


# ------------------------------------------------------- error distributions
def error_distributions(fast: bool) -> dict:
    """Per-output errors of z for bf16, FP8 and NVFP4 (per-group dynamic), normalised by
    the rms of z, with their SQNR and excess kurtosis, on the held-out set."""
    x, w, _ = data(fast, seed=HELD_OUT_SEED)
    reference = baselines.reference_output(x, w)
    outputs = {
        "bf16": baselines.bf16_output(x, w),
        "fp8": baselines.fp8_output(x, w),
        "nvfp4 w4a16": baselines.w4a16_output(x, w),
        "nvfp4 w4a4": baselines.nvfp4_output(x, w, ScaleMode("per_group", "dynamic").global_scale(x))[0],
    }
    rms = reference.square().mean().sqrt()
    result = {}
    for name, z in outputs.items():
        error = ((z - reference) / rms).flatten()
        centred = error - error.mean()
        kurtosis = float((centred**4).mean() / (centred**2).mean() ** 2 - 3)
        result[name] = {"sqnr_db": metrics.sqnr_db(reference, z), "excess_kurtosis": kurtosis,
                        "p99_abs_error": float(error.abs().kthvalue(int(0.99 * error.numel())).values),
                        "errors": error.cpu()}
    return result


# ---------------------------------------------------------------- calibration
def recipe_table(fast: bool) -> list[evaluation.Result]:
    x_cal, w, _ = data(fast, seed=CALIBRATION_SEED)
    x_eval, _, _ = data(fast, seed=HELD_OUT_SEED)
    return evaluation.evaluate(x_cal, x_eval, w, progress=False)


def real_recipe_table(data_dir, layer: int = 5, groups: int = 4) -> list[evaluation.Result]:
    """The recipe table on a captured all-MiniLM-L6-v2 layer (first 75 % calibrate)."""
    from nvfp4lab.data import minilm

    activations, weights = minilm.load(data_dir, layer)
    x = activations.float().reshape(activations.shape[0], groups, -1)
    x, weights = x.to(device(False)), weights.to(device(False))
    split = int(x.shape[0] * 0.75)
    return evaluation.evaluate(x[:split], x[split:], weights, progress=False)


def result(results, recipe: str, mode: str) -> evaluation.Result:
    return next(r for r in results if r.recipe == recipe and r.mode == mode)
