"""``calibrate-model``'s default held-out size comes from a power estimate on the fast
evaluation (SmolLM2, KJV): at the default, a KL ratio of 1.10 between two NVFP4 recipes is
resolved (its 95 % interval excludes 1), and at the old default of 256 it was not."""

import statistics

import pytest

from nvfp4lab.bootstrap import tokens_to_resolve
from nvfp4lab.models.command import DEFAULT_TOKENS
from nvfp4lab.models.evaluate import study_evaluations
from nvfp4lab.models.intervals import best_rows, bootstrap


@pytest.mark.slow  # the fast decoder evaluation: minutes of CPU, shared with the D findings
def test_the_default_tokens_resolve_a_ten_percent_kl_difference():
    e = study_evaluations(True)[0]
    kl = bootstrap(e)
    best = best_rows(e)["W4A4"]
    spreads = [kl.log_ratio_spread(i, best) for i, r in enumerate(e.rows) if r.operands == "W4A4" and i != best]
    needed = tokens_to_resolve(1.10, statistics.median(spreads), e.tokens)
    assert needed / 2 <= DEFAULT_TOKENS <= 2 * needed, (needed, DEFAULT_TOKENS)
    assert tokens_to_resolve(1.10, statistics.median(spreads), e.tokens) > 256 * 2
