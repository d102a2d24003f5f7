"""The command line: a user's mistake is one line naming the key or file and the fix, exit status 2, no traceback;
an internal error keeps its traceback; help and config errors import no torch."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY_SYNTHETIC, assert_ok, run_train
from hydra.errors import InstantiationException

from backbones.errors import ConfigError
from data.errors import DataError
from tasks.cli import one_line, user_errors
from tasks.quiet import quiet_libraries

# (arguments, words the one-line error must contain)
MISTAKES = [
    (["trainer.max_epoch=1"], ["trainer.max_epoch", "Did you mean trainer.max_epochs"]),
    (["optim.lrr=1"], ["optim.lrr", "Did you mean optim.lr?"]),
    (["backbone.lr_mult=0.1"], ["task.module.backbone_lr_mult=<value>"]),
    (["+trainer.max_epochs=3"], ["trainer.max_epochs already exists", "(no +)"]),
    (["backbone=resnet1O"], ["backbone=resnet1O", "Did you mean resnet18", "wide_resnet50_2"]),
    (["optim.lr=-0.01"], ["optim.lr=-0.01", "positive"]),
    (["data.batch_size=0"], ["data.batch_size=0", "positive integer"]),
    (["data.image_size=7"], ["data.image_size=7", "32"]),
    (["trainer.accelerator=gpux"], ["trainer.accelerator='gpux'", "cpu"]),
    (["data=coco", "data.root=/x"], ["data=coco", "task=detection"]),
    (["data=masks", "data.root=/x"], ["data=masks", "task=segmentation"]),
    (["task=detection", "data=masks", "data.root=/x"], ["data=masks", "boxes"]),
    (["data.root=/my", "path"], ["'path' is not a key=value override", "quoted"]),
    (["data=imagefolder", "data.root=/no/such/dir"], ["/no/such/dir"]),
]


@pytest.mark.parametrize("args, words", MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_a_user_mistake_is_one_line_and_exit_2(tmp_path, args, words):
    proc = run_train(*args, cwd=tmp_path, env={"HYDRA_FULL_ERROR": ""})
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]


def test_config_errors_leave_no_run_directory(tmp_path):
    run_train("optim.lr=0", cwd=tmp_path)
    assert not (tmp_path / "outputs").exists()


def test_user_errors_unwraps_hydra_and_keeps_internal_tracebacks(capsys):
    @user_errors
    def wrapped(err: Exception) -> None:
        raise err

    try:  # as hydra.utils.instantiate wraps an error raised in a constructor
        try:
            raise DataError("images/x.png is not an image: delete it")
        except DataError as inner:
            raise InstantiationException("Error in call to target 'data.X'") from inner
    except InstantiationException as outer:
        with pytest.raises(SystemExit) as exit_info:
            wrapped(outer)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: images/x.png is not an image: delete it\n"
    with pytest.raises(KeyError):  # not a user error: the traceback stays
        wrapped(KeyError("internal"))


def test_one_line_drops_a_dataloader_workers_traceback():
    err = ConfigError('Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n'
                      '  File "x.py", line 1, in <module>\ndata.errors.DataError: masks/a.png holds value 7: fix it')
    assert one_line(err) == "masks/a.png holds value 7: fix it"


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"], ["optim.lr=0"]])
def test_help_and_config_errors_import_no_torch(tmp_path, args):
    proc = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "train.py"), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    heavy = {"torch", "torchvision", "timm", "lightning"}
    assert proc.returncode in (0, 2) and not imported & heavy, proc.stderr[-2000:]


def test_a_redirected_run_logs_progress_quietly_and_tidily(tmp_path):
    """stdout to a file (a cluster job, nohup, CI): step and epoch lines on stdout and in train.log, no library
    noise, a slim best checkpoint beside the full last.ckpt, the run filed under the timm model's own name."""
    proc = run_train(*TINY_SYNTHETIC, "data.image_size=32", "data.batch_size=8", "data.num_workers=0",
                     "backbone=timm", "backbone.model_name=resnet26d", "trainer.max_epochs=2", "logger=csv",
                     "callbacks.progress_log.every_n_steps=2", cwd=tmp_path)
    assert_ok(proc)
    (run,) = (tmp_path / "outputs" / "classification" / "resnet26d").iterdir()
    log = (run / "train.log").read_text()
    for text in (proc.stdout, log):
        steps = re.findall(r"epoch (\d)/2  step (\d+)/6 \(\d+%\)  loss [\d.]+  lr [\d.e+-]+  [\d.]+ img/s  ETA \S+",
                           text)
        assert [int(s) for _, s in steps] == [1, 2, 4, 6], text[-3000:]
        assert len(re.findall(r"epoch \d/2 done in \S+: .*val/acc1 [\d.]+.*\(best val/acc1 [\d.]+, epoch \d\)",
                              text)) == 2, text[-3000:]
        for noise in ("GPU available", "TPU available", "litlogger", "already configured with model summary"):
            assert noise not in text
    best = torch.load(next((run / "checkpoints").glob("best-*.ckpt")), map_location="cpu", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert "optimizer_states" not in best and "lr_schedulers" not in best and best["hyper_parameters"]["config"]
    assert last["optimizer_states"] and last["lr_schedulers"]
    assert not (run / "FAILED").exists()


def test_a_failed_run_is_marked(tmp_path):
    proc = run_train("data=imagefolder", f"data.root={tmp_path}/none", cwd=tmp_path)
    assert proc.returncode == 2
    (run,) = (tmp_path / "outputs" / "classification" / "resnet18").iterdir()
    assert f"{tmp_path}/none" in (run / "FAILED").read_text()


def test_quiet_filters_library_noise_unless_verbose(caplog):
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    try:
        for verbose in (False, True):
            quiet_libraries(verbose)
            caplog.clear()
            with caplog.at_level(logging.INFO, logger=logger.name):
                logger.info("GPU available: False, used: False")
                logger.info("`Trainer.fit` stopped: `max_epochs=2` reached.")
            messages = [r.getMessage() for r in caplog.records]
            assert ("GPU available: False, used: False" in messages) is verbose
            assert "`Trainer.fit` stopped: `max_epochs=2` reached." in messages
    finally:
        quiet_libraries(True)


def test_offline_weights_fail_at_once_without_retries(monkeypatch):
    import timm.models

    from backbones import weights

    def never(*args, **kwargs):
        raise AssertionError("the download was attempted although the host is unreachable")

    monkeypatch.setattr(weights, "unreachable", lambda url, timeout=3.0: "huggingface.co unreachable: no network")
    monkeypatch.setattr(weights, "_hf_cached", lambda *args: False)
    monkeypatch.setattr(timm.models, "load_state_dict_from_hf", never)
    monkeypatch.setattr(torch.hub, "download_url_to_file", never)
    with pytest.raises(weights.WeightsError, match="unreachable: no network.*hf download"):
        weights.timm_state_dict("resnet50d", "timm")
    with pytest.raises(weights.WeightsError, match="unreachable: no network.*backbone.weights=/path/to/file.pth"):
        weights.download_state_dict("https://download.pytorch.org/models/not-cached-here.pth")


def test_unreachable_makes_one_short_attempt(monkeypatch):
    from backbones.weights import PROXY_VARIABLES, unreachable

    for var in PROXY_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as s:  # a port nobody listens on: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert "127.0.0.1 unreachable" in unreachable(f"http://127.0.0.1:{port}/w.pth", timeout=1)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")  # through a proxy the library decides
    assert unreachable(f"http://127.0.0.1:{port}/w.pth", timeout=1) is None


def test_unknown_torchvision_weights_list_each_tag_once():
    from backbones.weights import WeightsError, torchvision_weights

    with pytest.raises(WeightsError) as info:
        torchvision_weights("resnet50", "IMAGENET")
    assert str(info.value).count("DEFAULT") == 1 and "IMAGENET1K_V2" in str(info.value)


def test_file_and_device_mistakes_are_one_line(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    truncated = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    cases = [
        ([str(ROOT / "train.py"), f"ckpt_path={text}"], str(text)),
        ([str(ROOT / "train.py"), f"ckpt_path={truncated}"], str(truncated)),
        ([str(ROOT / "predict.py"), f"ckpt={text}", f"input={image}"], str(text)),
        ([str(ROOT / "predict.py"), f"ckpt={text}", f"input={image}", "device=cuda:7"], "device=cuda:7"),
    ]
    for args, named in cases:
        proc = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, (args, proc.stderr[-2000:])
        assert named in errors[0], errors[0]
