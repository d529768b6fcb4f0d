"""A run's saved model damaged on disk (a truncated copy, a bad disk): export, predict and eval
refuse it with one message naming the damaged file, and an export writes nothing."""

from __future__ import annotations

import pytest

from tests.runs_helpers import ftw, ftw_here, new_session, write_reviews_csv


@pytest.fixture
def lora_run(sessions_dir, tmp_path):
    from tests.tiny import tiny_model_dir

    new_session(sessions_dir, "d", (write_reviews_csv(tmp_path / "r.csv", rows=60), tiny_model_dir(tmp_path, "bert")),
                "--set", "adapter.method=lora", "--set", "train.epochs=1", "--set", "train.batch_size=8",
                "--set", "train.precision=fp32", "--set", "train.threads=1")
    trained = ftw("run", "d", sessions=sessions_dir)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    return sessions_dir / "d" / "model"


def refused(result, names: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is damaged" in result.stderr and names in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_damaged_adapter_is_not_exported_and_the_merged_model_still_serves(lora_run, sessions_dir, tmp_path):
    weights = lora_run / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut short
    refused(ftw_here("export", "d", str(tmp_path / "peft"), "--adapter", sessions=sessions_dir),
            "adapter_model.safetensors")
    assert not (tmp_path / "peft").exists()
    (lora_run / "adapter" / "labels.json").unlink()
    refused(ftw_here("export", "d", str(tmp_path / "peft"), "--adapter", sessions=sessions_dir), "labels.json")
    # predict and the merged export read model/ only, which is whole
    assert ftw_here("predict", "d", "great movie", sessions=sessions_dir).returncode == 0
    assert ftw_here("export", "d", str(tmp_path / "merged"), sessions=sessions_dir).returncode == 0


def test_a_truncated_merged_model_is_refused_by_export_predict_and_eval(lora_run, sessions_dir, tmp_path):
    weights = lora_run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size - 100])
    refused(ftw_here("export", "d", str(tmp_path / "merged"), sessions=sessions_dir), "model.safetensors")
    assert not (tmp_path / "merged").exists()
    refused(ftw_here("predict", "d", "great movie", sessions=sessions_dir), "model.safetensors")
    refused(ftw_here("eval", "d", sessions=sessions_dir), "model.safetensors")
