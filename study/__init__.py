"""The Ray layer of the WBC study: Ray Train workers, Tune + Optuna per cell, Parquet results.

Sub-packages: ``tune`` (the study on Ray Tune), ``train`` (Ray Train runs), ``results`` (the
row schema and the results folder), ``report`` (tables and figures), ``cli`` (the commands);
modules: ``spec`` and ``space`` (what a study is and searches), ``runner`` (one study run, end to
end) with ``data``, ``pretraining``, ``accounting``, ``record`` and ``provenance``.
"""

from __future__ import annotations

__all__: list[str] = []
