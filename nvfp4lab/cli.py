"""The ``nvfp4lab`` command line.

* ``nvfp4lab study [--fast | --full] [--out DIR]``: execute the notebooks, write the findings;
* ``nvfp4lab demo [--tokens T] [--spread S] [--seed N]``: the V4-Flash error table;
* ``nvfp4lab capture [--out DIR]``: real attention outputs from all-MiniLM-L6-v2;
* ``nvfp4lab calibrate --activations A.safetensors [--weights W.safetensors] --groups G
  [--out DIR] [--force] [--device auto|cpu|cuda] [--transforms [--head-dim D]]``: every recipe and
  mode (and, with ``--transforms``, every rotation, smoothing and weight recipe) on your tensors,
  and a recommendation (relative paths start from the current folder).
* ``nvfp4lab calibrate-model [--gguf FILE] [--text FILE] [--groups G] [--tokens N] [--out DIR] [--transforms]``:
  every recipe on a real decoder LM (perplexity, KL, top-1 on held-out text), and a recommendation.
* ``nvfp4lab export --format compressed-tensors|modelopt --out DIR [--gguf FILE] [--recipe LABEL] ...``:
  calibrate a static recipe on a decoder LM and write a Hugging Face folder with NVFP4 ``o_proj``.
"""

from __future__ import annotations

import argparse
import sys


def positive_int(text: str) -> int:
    """argparse type: an int > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nvfp4lab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    study = commands.add_parser("study", help="execute every notebook into reports/ and write reports/findings.md")
    speed = study.add_mutually_exclusive_group()
    speed.add_argument("--fast", dest="fast", action="store_true", default=True, help="small shapes, CPU (default)")
    speed.add_argument("--full", dest="fast", action="store_false", help="the real shapes; the GPU when there is one")
    study.add_argument("--out", default="reports", help="output folder (default reports)")
    study.add_argument("--data", default="data/generated/minilm", help="captured real-model tensors (made if missing)")
    demo = commands.add_parser("demo", help="error table of a V4-Flash-shaped NVFP4 wo_a layer")
    demo.add_argument("--tokens", type=positive_int, default=128, help="tokens to evaluate (default 128)")
    demo.add_argument("--spread", type=float, default=2.0, help="decades of per-head magnitude spread (default 2)")
    demo.add_argument("--seed", type=int, default=0)
    capture = commands.add_parser("capture", help="capture real attention outputs from all-MiniLM-L6-v2 into data/")
    capture.add_argument("--out", default="data/generated/minilm", help="output folder (default data/generated/minilm)")
    capture.add_argument("--groups", type=positive_int, default=4, help="head groups (divides 12; default 4)")
    calibrate = commands.add_parser(
        "calibrate", help="run every calibration recipe and mode on your tensors",
        description="Run every calibration recipe (max, headroom, percentiles, MSE searches) in every global "
                    "activation-scale mode (shared / per-group, static / dynamic) on your activations: the first "
                    "75 % of tokens calibrate, the last 25 % are held out; report the SQNR of z = x·W on the "
                    "held-out tokens and recommend one recipe. Without --weights, random Gaussian stand-in weights "
                    "are used (a warning says so). Writes calibration.md, .json, .png and .svg into --out; "
                    "relative paths start from the current folder.")
    calibrate.add_argument("--activations", required=True, help="safetensors file with activations (T, H, D) or (T, G, K)")
    calibrate.add_argument("--activations-key", default=None, help="tensor name (default: the only one)")
    calibrate.add_argument("--weights", default=None, help="safetensors file with weights (G, K, N) or (G*N, K)")
    calibrate.add_argument("--weights-key", default=None, help="tensor name in the weights file (default: the only one)")
    calibrate.add_argument("--groups", type=positive_int, required=True, help="G, the number of groups")
    calibrate.add_argument("--out", default="calibration-report",
                           help="output folder, created on success (default calibration-report in the current folder)")
    calibrate.add_argument("--force", action="store_true",
                           help="overwrite the calibration.* files of a previous report in --out (refused otherwise)")
    calibrate.add_argument("--device", default="auto",
                           help="where to compute: auto (cuda when there is a GPU, else cpu), cpu, cuda, cuda:N")
    calibrate.add_argument("--transforms", action="store_true",
                           help="also evaluate Hadamard rotations (16, head, 128), SmoothQuant and the weight "
                                "recipes (mse weights, four-over-six weights, 16x16 weights, gptq), each with max "
                                "shared static and dynamic per_group dynamic scales; a transform is recommended only "
                                "when it beats every cheaper row by a margin")
    calibrate.add_argument("--head-dim", type=int, default=None, metavar="D",
                           help="with --transforms: the head dimension D of (T, G, K) activations (taken from the "
                                "shape of (T, H, D) ones); without it the rotations that need D are skipped")
    model = commands.add_parser("calibrate-model", help="every recipe on a real decoder LM (GGUF): perplexity, KL, top-1")
    model.add_argument("--gguf", default=None, help="GGUF file (Llama, Qwen2, Gemma 3; default: the packaged SmolLM2-135M)")
    model.add_argument("--text", default=None, help="UTF-8 text: first half calibrates, second half is held out "
                                                     "(default: the packaged King James Bible, chapters alternating)")
    model.add_argument("--groups", type=positive_int, default=None,
                       help="head groups G (divides the heads; default 3 heads a group when they divide the heads, "
                            "else 2, else 1: SmolLM2 9 heads -> 3 groups, Qwen2.5-0.5B 14 heads -> 7)")
    model.add_argument("--tokens", type=positive_int, default=None,
                       help="held-out tokens (and as many to calibrate); default 1024, which resolves KL differences "
                            "of about 10 %% between recipes (95 %% intervals over windows of 64 tokens)")
    model.add_argument("--out", default="model-calibration-report", help="output folder (default model-calibration-report)")
    model.add_argument("--export", default=None, metavar="DIR",
                       help="also write the recommended recipe as a serving checkpoint into DIR (a new or empty folder; "
                            "see nvfp4lab export)")
    model.add_argument("--format", default="compressed-tensors", choices=("compressed-tensors", "modelopt"),
                       help="the checkpoint format of --export (default compressed-tensors)")
    model.add_argument("--transforms", action="store_true",
                       help="also evaluate rotations, smoothing and weight recipes (GPTQ, four-over-six weights, MSE "
                            "weights, 16x16 scales) with static shared and per-group dynamic scales")
    _add_export_parser(commands)
    return parser


def _add_export_parser(commands) -> None:
    from nvfp4lab.export.command import DEFAULT_RECIPE, DEFAULT_TOKENS

    export = commands.add_parser("export", help="calibrate a static recipe on a decoder LM and write a Hugging Face "
                                                "folder with NVFP4 o_proj (compressed-tensors or ModelOpt)")
    export.add_argument("--format", required=True, choices=("compressed-tensors", "modelopt"),
                        help="compressed-tensors nvfp4-pack-quantized (vLLM, transformers) or ModelOpt's HF export "
                             "(TensorRT-LLM, vLLM modelopt_fp4, SGLang)")
    export.add_argument("--out", required=True, help="a new or empty folder")
    export.add_argument("--gguf", default=None, help="GGUF file (Llama or Qwen2; default: the packaged SmolLM2-135M)")
    export.add_argument("--recipe", default=DEFAULT_RECIPE,
                        help=f"a static NVFP4 W4A4 recipe label of calibrate-model (default {DEFAULT_RECIPE!r})")
    export.add_argument("--activation-scale", default="shared", choices=("shared", "per_group"),
                        help="shared: one input global scale per o_proj, the max over the groups (what serving "
                             "stacks run); per_group is refused (o_proj is one nn.Linear)")
    export.add_argument("--groups", type=positive_int, default=None, help="head groups G for calibration "
                                                                           "(default as calibrate-model)")
    export.add_argument("--tokens", type=positive_int, default=DEFAULT_TOKENS,
                        help=f"calibration tokens (default {DEFAULT_TOKENS})")
    export.add_argument("--text", default=None, help="UTF-8 calibration text (default: the packaged corpus's "
                                                     "calibration chapters)")
    export.add_argument("--weight-global-scale", default="amax", choices=("amax", "pow2"),
                        help="amax: amax/2688 as the lab evaluated (default); pow2: rounded up to a power of two, "
                             "so every library dequantizes to nvfp4lab's bits")
    export.add_argument("--weight-block-rule", default="max6", choices=("max6", "four_over_six"),
                        help="weight block scales: max6 (default) or four_over_six (global scale amax/1536)")
    export.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="dtype of the unquantized tensors (float32: the lab's decoder exactly; default)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "study":
        from nvfp4lab.study import run as study_run

        try:
            return study_run.run(args.fast, args.out, args.data)
        except (ValueError, RuntimeError) as error:
            print(f"nvfp4lab study: error: {error}", file=sys.stderr)
            return 2
    if args.command == "demo":
        from nvfp4lab.demo import format_table, run_demo

        print("DeepSeek-V4-Flash wo_a (G=8, K=4096, N=1024), NVFP4 W4A4 vs unquantized, "
              f"T={args.tokens}, head spread {args.spread} decades")
        print(format_table(run_demo(args.tokens, args.spread, args.seed)))
    elif args.command == "capture":
        from nvfp4lab.data import minilm

        try:
            print(f"wrote {minilm.capture(args.out, args.groups)}")
        except (ValueError, RuntimeError, OSError) as error:
            print(f"nvfp4lab capture: error: {error}", file=sys.stderr)
            return 2
    elif args.command == "calibrate":
        from nvfp4lab import calibrate_command

        try:
            return calibrate_command.run(args.activations, args.groups, args.weights, args.out,
                                         args.activations_key, args.weights_key, args.device, force=args.force,
                                         transforms=args.transforms, head_dim=args.head_dim)
        except (ValueError, TypeError) as error:
            print(f"nvfp4lab calibrate: error: {error}", file=sys.stderr)
            return 2
    elif args.command == "calibrate-model":
        from nvfp4lab.models import command

        try:
            return command.run(args.gguf, args.text, args.groups, args.tokens or command.DEFAULT_TOKENS, args.out,
                               args.export, args.format, args.transforms)
        except (ValueError, RuntimeError, OSError) as error:
            print(f"nvfp4lab calibrate-model: error: {error}", file=sys.stderr)
            return 2
    elif args.command == "export":
        from nvfp4lab.export import command as export_command

        try:
            return export_command.run(args.gguf, args.format, args.out, args.recipe, args.activation_scale,
                                      args.groups, args.tokens, args.text, args.weight_global_scale,
                                      args.weight_block_rule, args.dtype)
        except (ValueError, RuntimeError, OSError) as error:
            print(f"nvfp4lab export: error: {error}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
