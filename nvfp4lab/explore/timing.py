"""How long one explorer update takes, per control (``python -m nvfp4lab.explore.timing``).

For each control the UI's :meth:`~nvfp4lab.explore.ui.ExplorerUI.update` (compute, draw,
PNG) is timed after setting the widget to values it has not had (``cold``: the caches
for that value are empty, e.g. a new spread recomputes the reference and baselines) and
then back and forth between two values it has had (``warm``). Medians in seconds of
wall time and of this process's CPU time (on a machine shared with other work, the CPU
time is what one free core would take).
"""

from __future__ import annotations

import statistics
import time

#: per control: fresh values to visit (cold), then the two to alternate between (warm)
CHANGES = {
    "octaves": ([-2.0, 3.0, 8.0], [0.0, -1.0]),
    "sharing": ([], ["shared", "per_group"]),
    "scale_source": ([], ["dynamic", "static"]),
    "recipe": (["headroom x4", "percentile 99.99", "percentile 99.9 of blocks"], ["max", "headroom x4"]),
    "block_rule": ([], ["four_over_six", "max6"]),
    "spread_decades": ([1.0, 2.0, 3.0], [0.0, 1.0]),
    "groups": ([2, 8, 1], [4, 8]),
    "source": (["synthetic sketch"], ["synthetic V4-Flash", "synthetic sketch"]),
}


def _timed(ui, name, value) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    ui.controls[name].value = value  # fires ui.update()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if ui.last_error:
        raise RuntimeError(f"{name}={value!r}: {ui.last_error}")
    return wall, cpu


def _medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
    if not samples:
        return float("nan"), float("nan")
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def time_controls(ui, repeats: int = 5, changes: dict = CHANGES) -> dict[str, dict[str, tuple[float, float]]]:
    """``{control: {"cold": (wall, cpu), "warm": (wall, cpu)}}`` median seconds (nan
    where a control has no cold values) for the UI's controls, each measured from the
    UI's starting state and returned to it afterwards."""
    results = {}
    for name, (fresh, alternate) in changes.items():
        start_value = ui.controls[name].value
        cold = [_timed(ui, name, value) for value in fresh]
        warm = [_timed(ui, name, alternate[i % 2]) for i in range(2 * repeats)]
        ui.controls[name].value = start_value
        results[name] = {"cold": _medians(cold), "warm": _medians(warm)}
    return results


def _positive(text: str) -> int:
    import argparse

    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return int(text)


def main(argv=None) -> int:
    import argparse

    from nvfp4lab.explore.compute import Explorer
    from nvfp4lab.explore.ui import ExplorerUI

    parser = argparse.ArgumentParser(prog="python -m nvfp4lab.explore.timing", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=_positive, default=5, help="revisits per control: 2 × this (default 5)")
    parser.add_argument("--tokens", type=_positive, default=256, help="tokens per split of the synthetic data")
    args = parser.parse_args(argv)
    if args.tokens < 16:
        parser.error(f"--tokens must be at least 16; got {args.tokens}")
    ui = ExplorerUI(Explorer(tokens=args.tokens))
    ui.update()  # warm-up: imports, fonts
    print("| control | new value: wall / CPU (s) | revisited value: wall / CPU (s) |\n|---|---|---|")
    for name, times in time_controls(ui, repeats=args.repeats).items():
        (cold_wall, cold_cpu), (warm_wall, warm_cpu) = times["cold"], times["warm"]
        print(f"| {name} | {cold_wall:.2f} / {cold_cpu:.2f} | {warm_wall:.2f} / {warm_cpu:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
