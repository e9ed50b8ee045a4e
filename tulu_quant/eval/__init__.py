"""Validation of artifacts against the full-precision reference (the `validate` stage's machinery).

Read in this order: ``stats`` (intervals, paired tests, pass@k), ``perplexity`` (windows, NLL, KL divergence),
``text_metrics`` (answer extraction and scoring), ``prompts`` (open-instruct's prompts), ``decode`` (prompt -> answer on
any backend), ``sandbox`` (running generated code), ``benchmarks`` (one loop per benchmark), ``judge`` (pairwise
judging over HTTP), ``items`` (drawing each benchmark's items), ``results`` (metrics and paired deltas), ``suite`` (a
suite as jobs), ``runner`` (jobs on one artifact, cached), ``report`` and ``chart`` (gates, report.json/.md, PNG).
Metric functions take plain Python/numpy data; only ``suite`` calls the data loaders.
"""
