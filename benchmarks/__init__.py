"""kizuna's benchmark suite: ``python -m benchmarks [--quick] [--only NAME,...] [--out BENCHMARKS.md]``.

Sections (one module each): ``tokenizer``, ``encode``, ``utilization``, ``train_step``, ``train_throughput``,
``dataloading``, ``eval_throughput``, ``profile``, ``gpu_train_step`` (only where CUDA is available). Shared timing rules are in :mod:`benchmarks.common`.
"""
