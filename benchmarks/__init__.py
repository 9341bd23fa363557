"""kizuna's benchmark suite: ``python -m benchmarks [--quick] [--only NAME,...] [--out BENCHMARKS.md]``.

Sections (one module each): ``tokenizer``, ``encode``, ``utilization``, ``train_step``, ``dataloading``,
``profile``. Shared timing rules are in :mod:`benchmarks.common`.
"""
