"""The Freezing tab's adapters (LoRA, IA³ per block) and the Hyper tab's learning-rate hint: keys
pressed in real Textual, the session TOML read back, the numbers derived from engine.core.adapters."""

from __future__ import annotations

import json
import re

import pytest
from textual.widgets import DataTable, Input, Select

from engine.core import adapters, session as session_format
from engine.core.errors import FtwError
from tests.test_tui_session import on_disk, opened, saved
from tests.test_tui_support import (MINILM_GROUPS, FakeRunner, anyio_backend, make_session, text_of,
                                    wait_for)
from tui import format as fmt
from tui.app import FtwApp
from tui.widgets.error_line import ErrorLine
from tui.widgets.freezing.freeze_pane import FreezePane
from tui.widgets.setting_field import SettingField, field_id

pytestmark = pytest.mark.anyio
assert anyio_backend  # the fixture, imported for pytest

LINEARS = {g["name"]: g["linear_layers"] for g in MINILM_GROUPS}
NAMES = [g["name"] for g in MINILM_GROUPS]


def engine_plan(session: session_format.Session) -> adapters.Plan:
    """What the engine makes of the session on MiniLM (a run refuses what this refuses)."""
    plan = adapters.plan(session.adapter, MINILM_GROUPS, LINEARS)
    assert plan is not None, "the session has an adapter"
    return plan


async def freezing_tab(pilot):
    screen = await opened(pilot, "freeze")
    pane = screen.query_one(FreezePane)
    await wait_for(pilot, lambda: len(pane.groups) == len(MINILM_GROUPS))
    return screen, pane


def totals(screen) -> str:
    return text_of(screen.query_one("#freeze-totals"))


def row(screen, name: str) -> list[str]:
    table = screen.query_one("#freeze-groups", DataTable)
    return [str(cell) for cell in table.get_row(name)]


def field(screen, key: str) -> SettingField:
    return screen.query_one(f"#{field_id(key)}", SettingField)


async def test_a_block_toggled_to_lora_writes_the_adapter_and_keeps_what_trained(sessions_dir):
    """From freeze top-k (k=2): `a` on block.3 turns LoRA on there; what trained in full before
    (block.4, block.5, the pooler) trains in full still, the freeze preset goes back to none, and
    the numbers are the engine's."""
    session = make_session(sessions_dir, **{"freeze.preset": "top-k"})
    async with FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo").run_test(size=(120, 40)) as pilot:
        screen, pane = await freezing_tab(pilot)
        screen.query_one("#freeze-groups", DataTable).move_cursor(row=NAMES.index("block.3"))
        await pilot.press("a")
        await saved(pilot, screen)
        written = on_disk(session)
        assert written.freeze.preset == "none" and written.adapter.method == "lora"
        assert (written.adapter.blocks, written.adapter.custom) == ("custom", ["block.3"])
        assert written.adapter.train_fully == ["block.4", "block.5", "pooler"]
        plan = engine_plan(written)
        assert plan.trainable_by_group["block.3"] == sum(written.adapter.r * (layer["in"] + layer["out"])
                                                         for layer in LINEARS["block.3"] if "attention" in layer["name"])
        assert f"trainable {fmt.count(plan.trainable)} of {fmt.count(plan.total)}" in totals(screen)
        assert f"grads {fmt.size(plan.gradient_bytes)} + Adam {fmt.size(plan.optimizer_bytes)}" in totals(screen)
        assert row(screen, "block.3")[1] == f"LoRA r{written.adapter.r}"
        assert row(screen, "block.3")[-1] == fmt.count(plan.trainable_by_group["block.3"])
        assert [row(screen, name)[1] for name in ("embeddings", "block.0", "block.4", "head")] == [
            "frozen", "frozen", "train", "train"]

        await pilot.press("a")  # the last adapter off: freezing as it was, written as a custom list
        await saved(pilot, screen)
        written = on_disk(session)
        assert written.adapter.method == "none"
        assert (written.freeze.preset, written.freeze.frozen) == ("custom", NAMES[:5])
        trained = sum(g["parameters"] for g in MINILM_GROUPS if g["name"] not in written.freeze.frozen)
        assert f"trainable {fmt.count(trained)} of" in totals(screen)


async def test_adapter_presets_targets_and_k(sessions_dir):
    """l: LoRA on every block, k: on the top k (+/- k), g: attention ↔ every linear layer, m: IA³;
    a freezing preset turns the adapter off. Each is written as the engine accepts it."""
    session = make_session(sessions_dir, **{"freeze.preset": "head-only"})
    async with FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo").run_test(size=(120, 40)) as pilot:
        screen, pane = await freezing_tab(pilot)
        shown = []
        for keys, check in (
                ("l", lambda s: (s.adapter.blocks, engine_plan(s).adapted) == ("all", NAMES[1:7])),
                ("k", lambda s: engine_plan(s).adapted == ["block.4", "block.5"]),
                ("+", lambda s: engine_plan(s).adapted == ["block.3", "block.4", "block.5"]),
                ("g", lambda s: engine_plan(s).targets["block.5"] == [layer["name"] for layer in LINEARS["block.5"]]),
                ("m", lambda s: s.adapter.method == "ia3")):
            await pilot.press(keys)
            await saved(pilot, screen)
            written = on_disk(session)
            assert written.freeze.preset == "none" and check(written), keys
            assert f"trainable {fmt.count(engine_plan(written).trainable)} of" in totals(screen)
            shown.append(engine_plan(written).trainable)
        assert shown[0] > shown[1] < shown[2] < shown[3], "more blocks, more layers: more to train"
        assert row(screen, "block.5")[1] == "IA³"
        await pilot.press("t")
        await saved(pilot, screen)
        written = on_disk(session)
        assert (written.adapter.method, written.freeze.preset) == ("none", "top-k")


async def test_the_adapter_keys_with_no_adapter_on_are_refused_and_write_nothing(sessions_dir):
    """g (attention ↔ every linear layer) and m (LoRA ↔ IA³) change an adapter: with none on, each
    says so and names the keys that turn one on."""
    session = make_session(sessions_dir, **{"freeze.preset": "head-only"})
    before = session.path.read_text()
    async with FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo").run_test(size=(120, 40)) as pilot:
        screen, pane = await freezing_tab(pilot)
        for key in ("g", "m"):
            error = screen.query_one("#freeze-error", ErrorLine)
            error.show("")
            await pilot.press(key)
            assert error.message == ("no adapter is on — turn one on first: l (every block), k (the top k) "
                                     "or a (this block)"), key
        await pilot.pause(0.5)
        assert session.path.read_text() == before and screen.session.adapter.method == "none"


async def test_ranks_per_block_and_the_head_stays_trained(sessions_dir):
    session = make_session(sessions_dir)
    async with FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo").run_test(size=(120, 40)) as pilot:
        screen, pane = await freezing_tab(pilot)
        await pilot.press("k")
        table = screen.query_one("#freeze-groups", DataTable)
        table.move_cursor(row=NAMES.index("block.5"))
        await pilot.press("right_square_bracket", "right_square_bracket")
        await saved(pilot, screen)
        assert on_disk(session).adapter.ranks == {"block.5": 32}
        assert row(screen, "block.5")[1] == "LoRA r32"
        await pilot.press("left_square_bracket", "left_square_bracket")  # back at adapter.r: no override
        await saved(pilot, screen)
        assert on_disk(session).adapter.ranks == {}
        table.move_cursor(row=NAMES.index("head"))
        before = session.path.read_text()
        await pilot.press("space")
        await pilot.pause()
        assert "the head is always trained in full" in screen.query_one("#freeze-error", ErrorLine).message
        await pilot.press("a")
        await pilot.pause()
        assert "head takes no adapter" in screen.query_one("#freeze-error", ErrorLine).message
        await saved(pilot, screen)
        assert session.path.read_text() == before


async def test_an_invalid_rank_or_target_is_an_inline_error_and_writes_nothing(sessions_dir):
    session = make_session(sessions_dir, **{"adapter.method": "lora"})
    before = session.path.read_text()
    async with FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo").run_test(size=(120, 40)) as pilot:
        screen, pane = await freezing_tab(pilot)
        rank = field(screen, "adapter.r")
        rank.query_one(Input).focus()
        await pilot.press("backspace", "0")
        assert "adapter.r = 0 is out of range" in rank.query_one(ErrorLine).message
        assert screen.session.adapter.r == 8
        targets = field(screen, "adapter.targets").query_one(Select)
        targets.value = "custom"
        await pilot.pause()
        assert "target_modules names no layer" in field(screen, "adapter.targets").query_one(ErrorLine).message
        modules = field(screen, "adapter.target_modules")
        assert not modules.display, "shown with targets = custom only"
        await pilot.pause(0.5)
        assert session.path.read_text() == before, "nothing invalid was written"
        await pilot.press("backspace", "1", "6")
        assert rank.query_one(ErrorLine).message == ""
        await saved(pilot, screen)
        assert on_disk(session).adapter.r == 16
        assert f"trainable {fmt.count(engine_plan(on_disk(session)).trainable)}" in totals(screen)


async def test_a_target_the_model_lacks_gets_its_did_you_mean(sessions_dir):
    session = make_session(sessions_dir, **{"adapter.method": "lora", "adapter.targets": "custom",
                                            "adapter.target_modules": ["query"]})
    async with FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo").run_test(size=(120, 40)) as pilot:
        screen, pane = await freezing_tab(pilot)
        modules = field(screen, "adapter.target_modules")
        assert modules.display
        editor = modules.query_one(Input)
        editor.focus()
        await pilot.press("end", *", valeu")
        assert "did you mean 'value'" in modules.query_one(ErrorLine).message
        await pilot.press("backspace", "backspace", *"ue")
        assert modules.query_one(ErrorLine).message == ""
        await saved(pilot, screen)
        assert on_disk(session).adapter.target_modules == ["query", "value"]
        with pytest.raises(FtwError):  # what was refused would have been refused by the engine too
            adapters.plan(on_disk(session).with_value("adapter.target_modules", ["query", "valeu"]).adapter,
                          MINILM_GROUPS, LINEARS)


async def test_the_method_field_turns_the_adapter_on_from_a_freeze_preset(sessions_dir):
    session = make_session(sessions_dir, **{"freeze.preset": "top-k"})
    async with FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo").run_test(size=(120, 40)) as pilot:
        screen, pane = await freezing_tab(pilot)
        assert not field(screen, "adapter.r").display
        field(screen, "adapter.method").query_one(Select).value = "lora"
        await wait_for(pilot, lambda: screen.session.adapter.method == "lora")
        await saved(pilot, screen)
        written = on_disk(session)
        assert written.freeze.preset == "none" and engine_plan(written).adapted == NAMES[1:7]
        assert field(screen, "adapter.r").display
        field(screen, "adapter.method").query_one(Select).value = "none"
        await wait_for(pilot, lambda: screen.session.adapter.method == "none")
        await saved(pilot, screen)
        # what trained in full beside the adapter (the head) trains on; the blocks it adapted are frozen
        assert (on_disk(session).freeze.preset, on_disk(session).freeze.frozen) == ("custom", NAMES[:-1])


async def test_check_groups_keep_the_inspections_linear_layers(sessions_dir):
    """`check` reports groups without linear layers; LoRA's numbers still come out after it."""
    make_session(sessions_dir)
    runner = FakeRunner()
    async with FtwApp(sessions_dir, runner=runner, open_name="demo").run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "run")
        await pilot.press("k")
        await wait_for(pilot, lambda: ["check", str(screen.session.path)] in runner.calls)
        await pilot.pause(0.2)
        screen, pane = await freezing_tab(pilot)
        assert all("linear_layers" not in g for g in runner.answers["check"]["groups"])
        await pilot.press("l")
        await saved(pilot, screen)
        assert f"trainable {fmt.count(engine_plan(screen.session).trainable)} of" in totals(screen)


async def test_the_hyper_tab_hints_at_a_higher_rate_for_an_adapter(sessions_dir):
    session = make_session(sessions_dir)
    async with FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo").run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "hyper")
        hint = screen.query_one("#hyper-lr-hint")
        assert not hint.display
        screen, pane = await freezing_tab(pilot)
        await pilot.press("k")
        screen = await opened(pilot, "hyper")
        assert hint.display and "4e-4" in text_of(hint) and "LoRA" in text_of(hint)
        assert text_of(hint).endswith(adapters.learning_rate_advice("lora", 5e-5))
        rate = field(screen, "train.learning_rate").query_one(Input)
        rate.focus()
        rate.value = ""
        await pilot.press(*"4e-4")
        assert not hint.display
        await saved(pilot, screen)
        assert on_disk(session).train.learning_rate == 4e-4



async def test_lora_on_the_top_blocks_of_a_llama_family_decoder(sessions_dir, tmp_path, capsys):
    """What `inspect-model` says of a real (tiny) LLaMA-family folder: `k` adapts the top blocks'
    q/k/v/o projections, with the engine's numbers."""
    from engine import cli
    from tests.tiny import BLOCKS, tiny_model_dir

    folder = tiny_model_dir(tmp_path, "llama")
    assert cli.main(["inspect-model", str(folder), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    session = make_session(sessions_dir, **{"model.source": str(folder), "adapter.top_k": 1})
    runner = FakeRunner({"inspect-model": answer})
    async with FtwApp(sessions_dir, runner=runner, open_name="demo").run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "freeze")
        pane = screen.query_one(FreezePane)
        await wait_for(pilot, lambda: len(pane.groups) == len(answer["groups"]))
        await pilot.press("k")
        await saved(pilot, screen)
        written = on_disk(session)
        linears = {g["name"]: g["linear_layers"] for g in answer["groups"]}
        plan = adapters.plan(written.adapter, answer["groups"], linears)
        top = f"block.{BLOCKS - 1}"
        assert plan.adapted == [top]
        assert plan.targets[top] == ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
        assert row(screen, top)[-1] == fmt.count(plan.trainable_by_group[top])
        assert f"trainable {fmt.count(plan.trainable)} of {fmt.count(plan.total)}" in totals(screen)
        shown = float(re.search(r"\(([\d.]+)%\) of the model updating", totals(screen)).group(1))
        assert shown == pytest.approx(100 * plan.share, rel=0.05), "a small share keeps its digits, not 0.0%"


async def test_an_outside_edit_of_the_adapter_reaches_the_tab_and_one_the_model_cannot_take_is_named(sessions_dir):
    session = make_session(sessions_dir)
    async with FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo").run_test(size=(120, 40)) as pilot:
        screen, pane = await freezing_tab(pilot)
        edited = on_disk(session).with_value("adapter.method", "lora").with_value("adapter.blocks", "top-k")
        session_format.save(edited.with_value("adapter.top_k", 3).with_value("adapter.r", 4))
        await wait_for(pilot, lambda: row(screen, "block.3")[1] == "LoRA r4", timeout=10)
        assert field(screen, "adapter.r").query_one(Input).value == "4"
        assert f"trainable {fmt.count(engine_plan(on_disk(session)).trainable)} of" in totals(screen)
        session_format.save(on_disk(session).with_value("adapter.top_k", 9))  # MiniLM has 6 blocks
        error = screen.query_one("#freeze-error", ErrorLine)
        await wait_for(pilot, lambda: "adapter.top_k = 9 but the model has 6 blocks" in error.message, timeout=10)
