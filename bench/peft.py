"""Adapters beside freezing: full fine-tuning, top-2 freezing, LoRA r=8 on every block, LoRA on the top 2.

Each run trains the engine in-process (engine.setup.build + engine.train.train, as a worker does) on
the packaged binary data (builtin:rotten-tomatoes, fresh / rotten) with the same step budget, and
scores the test split. Contenders alternate within each seed (the seed also draws the splits), so
drift in this busy machine's speed hits all alike. Per contender and seed:
  trainable        parameters that receive gradients (peft's own count for the adapters)
  grad+opt bytes   4 bytes of fp32 gradient + 8 of AdamW moments per trainable parameter (what
                   AdamW holds: tests/test_adapters.py::test_gradient_and_optimizer_bytes_are_what_adamw_holds)
  peak RSS         the most resident memory sampled (every 50 ms) while the run trained and tested,
                   above the RSS before it: one process, so later runs reuse freed memory
  samples/s        the last progress event's training speed
  accuracy, F1     on the test split
Learning rates: full fine-tuning and freezing the session's (5e-5); LoRA 4e-4 (the LoRA paper's
RoBERTa-base recipe range, 4e-4–5e-4).
"""

from __future__ import annotations

import statistics
import threading
from typing import Any

from bench import common

NAME = "peft"
LORA_LR = 4e-4
CONTENDERS: dict[str, dict[str, Any]] = {
    "full": {},
    "freeze top-2": {"freeze.preset": "top-k", "freeze.top_k": 2},
    "LoRA r=8 every block": {"adapter.method": "lora", "adapter.r": 8, "train.learning_rate": LORA_LR},
    "LoRA r=8 top 2": {"adapter.method": "lora", "adapter.r": 8, "adapter.blocks": "top-k", "adapter.top_k": 2,
                       "train.learning_rate": LORA_LR},
}


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """The most resident memory seen while inside `with`, above what it was on entry."""

    def __enter__(self):
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())
        return False

    @property
    def above_start(self) -> int:
        return self.peak - self.start


def one_run(cfg: common.Config, contender: str, seed: int, steps: int) -> dict[str, Any]:
    overrides = {"data.source": "builtin:rotten-tomatoes", "data.label_column": "category", "freeze.preset": "none",
                 "train.seed": seed, "train.max_steps": steps, "train.eval_strategy": "no",
                 "train.save_strategy": "no", **CONTENDERS[contender]}
    session = cfg.session_with(**overrides)
    folder = cfg.scratch(f"peft-runs/{contender.replace(' ', '_')}-{seed}")
    with PeakRss() as rss:
        setup, outcome, samples_per_s, train_s = common.train_in_process(session, folder)
    test = outcome.test or {}
    return {"trainable": setup.trainable, "total": setup.total, "grad_opt_bytes": 12 * setup.trainable,
            "peak_rss_bytes": rss.above_start, "samples_per_s": samples_per_s,
            "accuracy": test.get("accuracy"), "macro_f1": test.get("macro_f1"), "train_s": train_s,
            "steps": outcome.step, "precision": setup.precision, "learning_rate": session.train.learning_rate}


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    quick = cfg.quick or cfg.smoke
    seeds = [int(s) for s in cfg.extra.get("seeds") or ((0, 1) if quick else (0, 1, 2))]
    steps = cfg.steps or (150 if quick else 300)
    runs: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
    for seed in seeds:
        for name in CONTENDERS:  # contenders alternate within a seed
            row = one_run(cfg, name, seed, steps)
            runs[name].append(row)
            print(f"  {name} seed {seed}: accuracy {row['accuracy']:.3f} macro F1 {row['macro_f1']:.3f} "
                  f"{row['samples_per_s']} samples/s ({row['train_s']} s)", flush=True)
    summary = {name: _stats(items) for name, items in runs.items()}
    full = summary["full"]
    for row in summary.values():
        row["trainable_share"] = row["trainable"] / row["total"]
        row["grad_opt_vs_full"] = row["grad_opt_bytes"] / full["grad_opt_bytes"]
        row["accuracy_vs_full"] = round(row["accuracy"] - full["accuracy"], 4)
        row["speed_vs_full"] = common.ratio(row["samples_per_s"], full["samples_per_s"])
    return {"model": cfg.session_with().model.source, "steps": steps, "seeds": seeds,
            "batch_size": cfg.session_with().train.batch_size, "contenders": summary}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return round(statistics.fmean(values), 4), round(statistics.stdev(values), 4) if len(values) > 1 else 0.0


def _stats(items: list[dict]) -> dict[str, Any]:
    accuracy, accuracy_sd = _mean_sd([item["accuracy"] for item in items])
    f1, f1_sd = _mean_sd([item["macro_f1"] for item in items])
    speeds = [item["samples_per_s"] for item in items if item["samples_per_s"]]
    speed, speed_sd = _mean_sd(speeds) if speeds else (None, None)
    rss, rss_sd = _mean_sd([item["peak_rss_bytes"] for item in items])
    return {"n": len(items), "trainable": items[0]["trainable"], "total": items[0]["total"],
            "grad_opt_bytes": items[0]["grad_opt_bytes"], "accuracy": accuracy, "accuracy_sd": accuracy_sd,
            "macro_f1": f1, "macro_f1_sd": f1_sd, "samples_per_s": speed, "samples_per_s_sd": speed_sd,
            "peak_rss_bytes": rss, "peak_rss_sd": rss_sd, "precision": items[0]["precision"],
            "learning_rate": items[0]["learning_rate"], "runs": items}


def render(result: dict[str, Any]) -> str:
    mb = 1024 * 1024
    rows = []
    for name, r in result["contenders"].items():
        rows.append([name, f"{r['trainable']:,} ({r['trainable_share']:.2%})",
                     f"{r['grad_opt_bytes'] / mb:.1f} MB ({r['grad_opt_vs_full']:.1%})",
                     f"{r['peak_rss_bytes'] / mb:.0f} ± {r['peak_rss_sd'] / mb:.0f} MB",
                     f"{r['samples_per_s']} ± {r['samples_per_s_sd']}", common.fmt(r["speed_vs_full"]),
                     f"{r['accuracy']:.3f} ± {r['accuracy_sd']:.3f}", f"{r['accuracy_vs_full']:+.3f}",
                     f"{r['macro_f1']:.3f} ± {r['macro_f1_sd']:.3f}", r["learning_rate"]])
    note = (f"{result['steps']} steps of batch {result['batch_size']}, seeds {result['seeds']} (mean ± sd); "
            "grad+opt = 12 bytes per trainable parameter; peak RSS above the RSS before each run")
    return common.table(f"peft: {result['model']} on builtin:rotten-tomatoes",
                        ["contender", "trainable", "grad+opt", "peak RSS", "samples/s", "x full", "test acc",
                         "vs full", "macro F1", "lr"], rows, note)
