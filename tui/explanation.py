"""An explanation (`ftw explain … --json`) as Rich text: the words shaded by their attribution,
green towards the class and red against (sign markers instead under NO_COLOR), then the method
with its convergence delta, the strongest words and the faithfulness line. The words and lines
come from engine.core.render, as `ftw explain` prints them."""

from __future__ import annotations

import os
from typing import Any

from rich.text import Text

from engine.core import render

BACKGROUNDS = {1: ("#d7ffd7", "#afffaf", "#87d787", "#00af00"), -1: ("#ffd7d7", "#ffafaf", "#ff8787", "#ff0000")}


def attributed(explanation: dict[str, Any], segment: int = 0, colour: bool | None = None) -> Text:
    colour = not os.environ.get("NO_COLOR") if colour is None else colour
    if not colour:
        return Text(render.attributed_text(explanation, colour=False, segment=segment))
    peak = render.peak_attribution(explanation)
    text = Text()
    for piece, word in render.attribution_spans(explanation, segment):
        sign, level = render.shade(word["attribution"], peak) if word else (0, 0)
        text.append(piece, style=f"black on {BACKGROUNDS[sign][level - 1]}" if level else "")
    return text


def explanation_text(explanation: dict[str, Any], colour: bool | None = None) -> Text:
    parts = [Text(render.method_line(explanation), style="dim"), attributed(explanation, colour=colour)]
    if explanation.get("text_pair") is not None:
        parts.append(Text("pair: ") + attributed(explanation, segment=1, colour=colour))
    parts += [Text(render.leaning_line(explanation)), faithfulness(explanation)]
    if explanation.get("truncated"):
        parts.append(Text("(the text was cut at train.max_length tokens: words past it were not seen)", style="dim"))
    return Text("\n").join(parts)


def faithfulness(explanation: dict[str, Any]) -> Text:
    verdict = (explanation.get("faithfulness") or {}).get("verdict", "")
    style = {"faithful": "bold green", "partly faithful": "bold yellow", "not faithful": "bold red"}.get(verdict, "")
    line = render.faithfulness_line(explanation)
    text = Text(line)
    start = line.find(verdict) if verdict else -1
    if start >= 0 and style:
        text.stylize(style, start, start + len(verdict))
    return text
