"""ftw benchmarks: side-by-side comparisons measured in one process, reported as ratios.

    python -m bench [NAME ...] [--quick] [--results PATH] [--steps N]

Each benchmark is a module here with
    NAME                      its name on the command line and in bench/results/<NAME>.json
    run(cfg, prior) -> dict   the measurement (JSON-ready); `prior` holds results of benchmarks
                              run earlier in the same invocation (mfu reuses throughput's)
    render(result) -> str     a readable table
REGISTRY maps names to modules, in the order `python -m bench` runs them.
"""

from __future__ import annotations

REGISTRY: dict[str, tuple[str, str]] = {
    # name: (module, one line for --list)
    "throughput": ("bench.throughput", "ftw engine vs plain Trainer vs pad-to-max tutorial loop: samples/s, tokens/s, pad %, val metric"),
    "mfu": ("bench.mfu", "model FLOPs utilisation of each contender against this machine's measured matmul peak"),
    "freezing": ("bench.freezing", "step time with 0..N frozen bottom blocks; proof backward stops at the lowest trainable block"),
    "scaling": ("bench.scaling", "time per epoch-equivalent vs dataset size and max_length; attention share"),
    "preprocess": ("bench.preprocess", "engine.data.tokenize: first run (empty cache) vs cached"),
    "eventlog": ("bench.eventlog", "per-step cost of event logging + command polling vs a training step"),
    "baseline": ("bench.baseline", "TF-IDF + logistic regression vs ftw's fine-tuned MiniLM on the same test split"),
    "ablation": ("bench.ablation", "the engine with one knob changed (fp32, random sampling, fused AdamW, frozen embeddings)"),
    "prefix_cache": ("bench.prefix_cache", "train.prefix_cache: epoch 2 / epoch 1 with 5 of 6 blocks frozen, cache on vs off; validation time"),
    "accuracy": ("bench.accuracy", "test macro / per-class F1 of every speed setting, default vs plain, on 4 data shapes x seeds"),
    "predict": ("bench.predict", "ftw predict (sorted batches, bf16 where fast, streamed) vs transformers pipeline: lines/s, same labels, peak memory"),
    "study": ("bench.study", "search studies: TPE + successive halving vs as many full random trials: steps to within 0.5 points of the best, test metric of the chosen trial"),
    "explain": ("bench.explain", "ftw explain: s/example at 16 integrated-gradients steps (batched, one at a time), gradient x input, and a prediction for scale"),
    "peft": ("bench.peft", "full fine-tuning vs top-2 freezing vs LoRA (every block, top 2): trainable params, grad+optimizer bytes, peak RSS, samples/s, test accuracy / macro F1 over seeds"),
    "augment": ("bench.augment", "studies with and without augmentation (fractions x seeds; test and perturbed accuracy) and class weights on 3-way (plot F1): paired differences"),
    "profile": ("bench.profile_step", "torch.profiler over ~30 engine training steps + one evaluation: where the time goes"),
    # --- TUI benchmarks (7b). They must not import torch (the TUI never does): keep their modules free of engine.train.
    "tui": ("bench.tui", "TUI first paint, key latency while 200 events/s stream in, memory after 1M events"),
}


def load(name: str):
    import importlib

    if name not in REGISTRY:
        raise KeyError(name)
    return importlib.import_module(REGISTRY[name][0])
