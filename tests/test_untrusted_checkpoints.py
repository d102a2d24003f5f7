"""Nothing read from disk runs code: a checkpoint carrying a pickled `os.system` payload is refused on every path
(predict, evaluate, resume, init_from, backbone.weights) and the payload never runs; damaged files name their path;
trusted files convert with `python -m backbones.convert_checkpoint`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_SYNTHETIC, run_train, write_png
from omegaconf import OmegaConf
from test_predict import run_predict

from backbones.checkpoint_file import CheckpointError, read_checkpoint
from backbones.convert_checkpoint import main as convert_main

QUICK = ["experiment=smoke", *TINY_SYNTHETIC]
REFUSED = "holds pickled Python objects (posix.system)"
CONVERTER = "python -m backbones.convert_checkpoint"


class Payload:
    """Unpickling this runs `touch <marker>`: what a malicious checkpoint would do with worse commands."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Opaque:
    """A harmless object with no plain form."""


def evil_checkpoint(path: Path, marker: Path, **save_args) -> Path:
    """A Lightning-shaped checkpoint whose pickle carries the payload."""
    torch.save({"state_dict": {"model.fc.weight": torch.zeros(3, 4)}, "epoch": 0, "payload": Payload(marker),
                "hyper_parameters": {"class_names": ["a", "b", "c"], "config": {"task": {"name": "classification"}}}},
               path, **save_args)
    return path


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    return evil_checkpoint(tmp_path / "evil.ckpt", marker), marker


# ---------------------------------------------------------------- the reader


@pytest.mark.parametrize("legacy", [False, True])
def test_reader_refuses_pickled_code_and_names_it(tmp_path, legacy):
    marker = tmp_path / "PWNED"
    path = evil_checkpoint(tmp_path / "evil.pth", marker, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path, "ckpt_path=")
    message = str(err.value)
    assert f"ckpt_path={path} {REFUSED}" in message
    assert f"{CONVERTER} {path} {tmp_path / 'evil.safe.pth'} --trust" in message
    assert err.value.unsafe_globals == ["posix.system"] and isinstance(err.value, ValueError)
    assert not marker.exists()


def test_damaged_and_foreign_files_name_their_path(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}}, good)
    data = good.read_bytes()
    cases = {
        "truncated.ckpt": (data[: len(data) // 2], "the file is cut short"),
        "notes.ckpt": (b"just some text\n", "it is not a torch.save file (it begins b'just some text"),
        "empty.ckpt": (b"", "the file is empty (0 bytes)"),
        "lfs.ckpt": (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n", "it is a Git LFS pointer"),
    }
    for name, (content, why) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(tmp_path / name)
        assert f"checkpoint {tmp_path / name} is not a readable PyTorch checkpoint: {why}" in str(err.value), name
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.ckpt")
    assert torch.equal(read_checkpoint(good)["state_dict"]["w"], torch.load(good, weights_only=True)["state_dict"]["w"])


# ---------------------------------------------------------------- the converter for trusted files


def test_converter_needs_trust_and_writes_a_safe_file(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    path = evil_checkpoint(tmp_path / "evil.ckpt", marker)
    assert convert_main([str(path)]) == 2  # without --trust nothing is loaded
    assert "adding --trust" in capsys.readouterr().err and not marker.exists()

    # a trusted file of the kind older scripts write: an OmegaConf config, a whole module, a path, NumPy values
    trusted = tmp_path / "trusted.ckpt"
    net = torch.nn.Linear(4, 3)
    torch.save({"state_dict": {"model.fc.weight": torch.ones(3, 4)}, "model": net, "root": Path("/data"),
                "hyper_parameters": OmegaConf.create({"config": {"backbone": {"name": "resnet18"}}, "lr": 0.1}),
                "stats": {"mean": np.array([0.5, 0.5]), "n": np.int64(7)}, "extra": [Opaque(), 1]}, trusted)
    assert convert_main([str(trusted), "--trust"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'trusted.safe.ckpt'}" in out and "left out (no plain form): extra[0]" in out
    safe = read_checkpoint(tmp_path / "trusted.safe.ckpt")
    assert safe["hyper_parameters"] == {"config": {"backbone": {"name": "resnet18"}}, "lr": 0.1}
    assert torch.equal(safe["model"]["weight"], net.weight) and safe["root"] == "/data" and safe["extra"] == [1]
    assert torch.equal(safe["stats"]["mean"], torch.tensor([0.5, 0.5], dtype=torch.float64)) and safe["stats"]["n"] == 7
    assert convert_main([str(tmp_path / "trusted.safe.ckpt")]) == 0  # already safe: nothing to do
    assert "nothing to convert" in capsys.readouterr().out


# ---------------------------------------------------------------- every entry point, as a user runs it


def assert_refused(proc, path: Path, marker: Path) -> None:
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert f"{path} {REFUSED}" in proc.stderr, proc.stderr[-3000:]
    assert CONVERTER in proc.stderr
    assert not marker.exists(), "the checkpoint's pickled payload ran"


def test_predict_refuses(evil, tmp_path):
    path, marker = evil
    image = write_png(tmp_path / "in" / "a.png")
    assert_refused(run_predict(f"ckpt={path}", f"input={image}", cwd=tmp_path), path, marker)


def test_predict_names_a_truncated_checkpoint(tmp_path):
    torch.save({"state_dict": {"w": torch.randn(64, 64)}}, tmp_path / "good.ckpt")
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "good.ckpt").read_bytes()[:3000])
    image = write_png(tmp_path / "in" / "a.png")
    proc = run_predict(f"ckpt={tmp_path / 'cut.ckpt'}", f"input={image}", cwd=tmp_path)
    assert proc.returncode != 0
    assert f"ckpt={tmp_path / 'cut.ckpt'} is not a readable PyTorch checkpoint: the file is cut short" in proc.stderr


def test_evaluate_refuses(evil, tmp_path):
    path, marker = evil
    assert_refused(run_train(*QUICK, "train=false", f"ckpt_path={path}", cwd=tmp_path), path, marker)


def test_resume_refuses(evil, tmp_path):
    path, marker = evil
    assert_refused(run_train(*QUICK, f"ckpt_path={path}", cwd=tmp_path), path, marker)


def test_init_from_refuses(evil, tmp_path):
    path, marker = evil
    assert_refused(run_train(*QUICK, f"init_from={path}", cwd=tmp_path), path, marker)


def test_backbone_weights_refuse(evil, tmp_path):
    path, marker = evil
    assert_refused(run_train(*QUICK, f"backbone.weights={path}", cwd=tmp_path), path, marker)
