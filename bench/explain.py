"""Explanations: seconds per example of `ftw explain` (engine.explain) with the session's model
(the packaged MiniLM by default) at 16 integrated-gradients steps, batched and one at a time,
against gradient × input and against a plain prediction of the same texts (so a busy machine's
slowness shows in the ratio, not only in the seconds); the faithfulness score is included in every
explanation's time. Also the median convergence delta as a share of the logit change, and the
verdicts."""

from __future__ import annotations

import os
import time
from typing import Any

from bench import common
from bench.predict import classifier_folder

NAME = "explain"
STEPS = 16
BUDGET_S = 2.0  # the target per example on this 2-core CPU


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    from engine import data
    from engine.explain import Explainer
    from engine.predict import Predictor

    session = cfg.session_with()
    count = 4 if cfg.smoke else (32 if cfg.quick else 64)
    rounds = 1 if (cfg.smoke or cfg.quick) else 2
    model, labels = classifier_folder(cfg, session)
    texts = list(data.prepare(session).splits["test"]["text"])[:count]
    predictor = Predictor(model, session.train.max_length, "fp32")
    explainer = Explainer(predictor)
    lengths = [len(explainer.encode(text).ids) for text in texts]
    contenders = {
        f"explain ig {STEPS} steps, batched": lambda: explainer.explain(texts, steps=STEPS),
        f"explain ig {STEPS} steps, one at a time": lambda: [explainer.explain([t], steps=STEPS)[0] for t in texts],
        "explain gxi, batched": lambda: explainer.explain(texts, method="gxi"),
        "predict (fp32, for scale)": lambda: predictor.logits(texts),
    }
    explainer.explain(texts[:2], steps=STEPS)  # first calls build kernels and caches: not timed
    times: dict[str, list[float]] = {name: [] for name in contenders}
    outputs: dict[str, Any] = {}
    loads = [os.getloadavg()[0]]
    for _ in range(rounds):  # contenders alternate, so drift in the machine's speed hits all alike
        for name, fn in contenders.items():
            started = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - started)
            loads.append(os.getloadavg()[0])
    base = common.median(times["predict (fp32, for scale)"]) / count
    rows = {name: {"s_per_example": common.median(seconds) / count, "seconds": seconds,
                   "x_predict": common.median(seconds) / count / base} for name, seconds in times.items()}
    batched = outputs[f"explain ig {STEPS} steps, batched"]
    shares = sorted(abs(e["delta"]) / abs(e["logit_change"]) for e in batched if e["logit_change"])
    verdicts: dict[str, int] = {}
    for explanation in batched:
        verdict = explanation["faithfulness"]["verdict"]
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
    return {"model": session.model.source, "data": session.data.source, "examples": count, "steps": STEPS,
            "rounds": rounds, "mean_tokens": sum(lengths) / len(lengths), "max_tokens": max(lengths),
            "contenders": rows, "budget_s": BUDGET_S, "cpus": os.cpu_count(), "load_average": loads,
            "median_delta_share": shares[len(shares) // 2] if shares else None, "verdicts": verdicts,
            "labels": labels, "trained_head": False}


def render(result: dict[str, Any]) -> str:
    rows = [[name, r["s_per_example"], r["x_predict"]] for name, r in result["contenders"].items()]
    loads = result["load_average"]
    note = (f"{result['examples']} test reviews of {result['data']} (mean {result['mean_tokens']:.0f} tokens, max "
            f"{result['max_tokens']}), {result['model']} with an untrained head (time does not depend on it), "
            f"median of {result['rounds']} alternating round(s); target <= {result['budget_s']:g} s/example\n"
            f"{result['cpus']} CPUs, load average {min(loads):.1f}-{max(loads):.1f} while measuring "
            f"(other work shares the machine: the x-predict column is the steadier number); "
            f"median |delta| / |logit change| at {result['steps']} steps: {result['median_delta_share']:.3f}; "
            f"verdicts: {result['verdicts']}")
    return common.table("explain: seconds per example", ["contender", "s/example", "x predict"], rows, note)
