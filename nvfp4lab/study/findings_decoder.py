"""Findings measured on real decoder language models (SmolLM2, Gemma 3); see notebook 07."""

from __future__ import annotations

from nvfp4lab.study.finding import Finding

DECODER_FINDINGS: list[Finding] = []
