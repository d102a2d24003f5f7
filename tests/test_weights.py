"""Pretrained weights (backbone.weights) and init_from: files, wrappers, key matching, offline errors. No network."""

from __future__ import annotations

import logging
import urllib.error

import pytest
import safetensors.torch
import timm
import timm.layers
import torch
import torchvision
from omegaconf import OmegaConf
from torchvision.models.feature_extraction import create_feature_extractor

from backbones import build_backbone, weights
from backbones.checkpoint_file import CheckpointError
from backbones.hydra_configs import backbone_node
from backbones.weights import PartialWeightsError, WeightsError, hub_cache_path, read_state_dict
from tasks.classification.model import ClassificationModel
from tasks.init_from import init_from

TAPS = {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"}


def _randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    # non-trivial running statistics, so a FrozenBN that kept its defaults would be caught
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _reference(arch: str) -> torch.nn.Module:
    torch.manual_seed(1)
    return _randomise_bn(getattr(torchvision.models, arch)(weights=None)).eval()


def _same_features(net, ref, x) -> None:
    net.eval()
    with torch.no_grad():
        got = net(x)
        want = create_feature_extractor(ref, TAPS)(x)
    for level in TAPS.values():
        torch.testing.assert_close(got[level], want[level], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["resnet18", "resnext50_32x4d"])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_file_weights_give_torchvision_features(tmp_path, arch, fmt):
    ref = _reference(arch)
    path = tmp_path / f"{arch}.{fmt}"
    if fmt == "pth":
        torch.save(ref.state_dict(), path)
    else:
        safetensors.torch.save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    x = torch.randn(1, 3, 64, 64)
    _same_features(build_backbone(arch, weights=str(path)), ref, x)
    frozen = build_backbone(arch, weights=str(path), norm="frozen_bn")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    torch.testing.assert_close(frozen.bn1.running_mean, ref.bn1.running_mean)
    _same_features(frozen, ref, x)


def test_wrappers_and_ckpt_prefixes(tmp_path):
    ref = _reference("resnet18")
    sd = ref.state_dict()
    x = torch.randn(1, 3, 64, 64)
    files = {
        "wrapped.pth": {"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},  # DataParallel
        "plain.ckpt": {"state_dict": {f"model.body.{k}": v for k, v in sd.items()},
                       "hyper_parameters": {"config": {"backbone": {"name": "resnet18"}}, "class_names": ["a"]}},
        "fpn.ckpt": {"state_dict": {**{f"model.body.body.{k}": v for k, v in sd.items()},
                                    "model.body.fpn.layer_blocks.0.0.weight": torch.zeros(8, 8, 3, 3)}},
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        _same_features(build_backbone("resnet18", weights=str(tmp_path / name)), ref, x)


def test_counts_strict_and_shape_mismatch(tmp_path, caplog):
    sd = _reference("resnet18").state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["layer4.1.bn2.bias"]
    sd["layer4.1.conv2.weight"] = torch.zeros(512, 512, 1, 1)
    path = tmp_path / "odd.pth"
    torch.save(sd, path)
    net = build_backbone("resnet18")
    with caplog.at_level(logging.INFO, logger="backbones.weights"):
        # partial: the skipped layer4.1.conv2 alone is 21% of resnet18's elements (refused by default, see below)
        report = weights.load_matching(net, read_state_dict(path), str(path), partial=True, verbose=True)
    assert report.missing == ["layer4.1.bn2.bias"]
    assert sorted(report.unexpected) == ["extra.weight", "fc.bias", "fc.weight"]
    assert list(report.mismatched) == ["layer4.1.conv2.weight"]
    n_model = len([k for k in net.state_dict() if not k.endswith("num_batches_tracked")])
    assert len(report.loaded) == n_model - 2
    assert "1 missing, 3 unexpected, 1 shape-mismatched" in caplog.text and "layer4.1.conv2.weight" in caplog.text
    assert "21.1% of the model's tensor elements not loaded" in caplog.text
    assert net.layer4[1].conv2.weight.abs().sum() > 0  # skipped, not loaded
    with pytest.raises(WeightsError, match=r"layer4\.1\.bn2\.bias(.|\n)*layer4\.1\.conv2\.weight"):
        build_backbone("resnet18", weights=str(path), weights_strict=True)
    # the dropped classifier alone is not a reason to fail, even when strict
    good = tmp_path / "good.pth"
    torch.save(_reference("resnet18").state_dict(), good)
    build_backbone("resnet18", weights=str(good), weights_strict=True)


def test_in_chans_adapts_first_conv(tmp_path):
    ref = _reference("resnet18")
    torch.save(ref.state_dict(), tmp_path / "r.pth")
    net = build_backbone("resnet18", in_chans=1, weights=str(tmp_path / "r.pth"))
    torch.testing.assert_close(net.conv1.weight, ref.conv1.weight.sum(1, keepdim=True))


def test_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save(Custom(), path)
    with pytest.raises(CheckpointError, match=r"pickled\.pth holds pickled Python objects \(\S*Custom\)"):
        build_backbone("resnet18", weights=str(path))
    torch.save({"epoch": 1, "hparams": {"a": 1}}, tmp_path / "nothing.pth")
    with pytest.raises(WeightsError, match="not a state dict"):
        build_backbone("resnet18", weights=str(tmp_path / "nothing.pth"))
    with pytest.raises(CheckpointError, match=r"backbone.weights=\S*missing.pth does not exist"):
        build_backbone("resnet18", weights=str(tmp_path / "missing.pth"))


class Custom:
    pass


def test_offline_error_names_the_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    expected = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert hub_cache_path(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url) == expected
    with pytest.raises(WeightsError) as err:
        build_backbone("resnet50", weights="IMAGENET1K_V2")
    assert str(expected) in str(err.value) and "without network" in str(err.value).lower()
    # once the file is there, nothing is downloaded
    torch.save(_reference("resnet50").state_dict(), expected)
    build_backbone("resnet50", weights="IMAGENET1K_V2", weights_strict=True)


def test_torchvision_names_resolve_to_their_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(weights, "unreachable", lambda url, timeout=3.0: None)  # the downloads below are faked
    asked = []

    def fake_download(url, dst, *args, **kwargs):
        asked.append(url)
        torch.save(_reference("resnet18").state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    for name in ("DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"):
        build_backbone("resnet18", weights=name)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert asked == [url]  # downloaded once into torch hub's cache, then read from there
    assert hub_cache_path(url).name == "resnet18-f37072fd.pth" and hub_cache_path(url).is_file()
    build_backbone("resnet18", weights="https://example.com/w/my.pth")
    assert asked[-1] == "https://example.com/w/my.pth"
    with pytest.raises(WeightsError, match="IMAGENET1K_V1"):
        build_backbone("resnet18", weights="IMAGENET9K")
    # a cached download goes through the same weights_only reader as a local file
    torch.save(Custom(), hub_cache_path("https://example.com/w/bad.pth"))
    with pytest.raises(CheckpointError, match=r"https://example.com/w/bad.pth, cached as \S*bad.pth holds pickled"):
        build_backbone("resnet18", weights="https://example.com/w/bad.pth")


def test_timm_state_dict_file_and_tag(tmp_path, monkeypatch):
    torch.manual_seed(0)
    ref = _randomise_bn(timm.create_model("resnet26d", pretrained=False)).eval()
    torch.save(ref.state_dict(), tmp_path / "r26d.pth")
    net = build_backbone("timm", model_name="resnet26d", weights=str(tmp_path / "r26d.pth"), weights_strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = ref.forward_intermediates(x, intermediates_only=True)
        got = net.eval()(x)
    for level, feat in zip(["c1", "c2", "c3", "c4", "c5"], want):
        torch.testing.assert_close(got[level], feat, rtol=1e-4, atol=1e-5)
    # timm's flattened feature names (resnetv2: stages.0 -> stages_0) map too
    v2 = timm.create_model("resnetv2_50", pretrained=False)
    torch.save(v2.state_dict(), tmp_path / "v2.pth")
    build_backbone("resnetv2_50", weights=str(tmp_path / "v2.pth"), weights_strict=True)
    # tags resolve through timm's pretrained cfgs to the Hugging Face hub (download faked)
    asked = []
    monkeypatch.setattr(weights, "unreachable", lambda url, timeout=3.0: None)
    monkeypatch.setattr(weights, "_hf_cached", lambda *args: False)
    monkeypatch.setattr(timm.models, "load_state_dict_from_hf", lambda *a, **k: asked.append(a) or ref.state_dict())
    build_backbone("timm", model_name="resnet26d", weights="timm")
    assert asked == [("timm/resnet26d.bt_in1k",)]
    with pytest.raises(WeightsError, match="pretrained tags of resnet26d: resnet26d.bt_in1k"):
        build_backbone("timm", model_name="resnet26d", weights="nope_in1k")


def test_weights_options_in_hydra_group():
    node = backbone_node("resnet50")
    assert node["weights"] is None and node["weights_strict"] is False and node["weights_verbose"] is False
    assert node["weights_partial"] is False


def test_another_architectures_weights_are_refused_unless_partial(tmp_path, caplog):
    ref = _reference("resnet50")
    path = tmp_path / "r50.pth"
    torch.save(ref.state_dict(), path)
    with pytest.raises(PartialWeightsError) as err:
        build_backbone("resnet18", weights=str(path))
    message = str(err.value)
    assert f"{path} would leave 44% of the backbone resnet18 at its random initialisation" in message
    assert "77 tensors loaded, 0 missing, 23 shape-mismatched: layer1.0.conv1.weight" in message
    assert "These weights look like resnet50's (they fill 100% of it): pass backbone=resnet50" in message
    assert "or backbone.weights_partial=true to train from the 56% that fits" in message
    with caplog.at_level(logging.WARNING, logger="backbones.weights"):
        net = build_backbone("resnet18", weights=str(path), weights_partial=True)
    torch.testing.assert_close(net.conv1.weight, ref.conv1.weight)  # what fits is loaded
    assert "23 shape-mismatched" in caplog.text and "43.8% of the model's tensor elements not loaded" in caplog.text
    # a first conv adapted to other input channels counts as loaded: no refusal
    build_backbone("resnet50", in_chans=1, weights=str(path))


def _ckpt(model: torch.nn.Module, path, backbone: str | None = None) -> None:
    config = {"task": {"name": "classification"}, **({"backbone": {"name": backbone}} if backbone else {})}
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"class_names": ["a", "b", "c"], "config": config},
                "pytorch-lightning_version": "2.6.6"}, path)


def test_init_from_other_run(tmp_path, caplog):
    torch.manual_seed(0)
    src = ClassificationModel(build_backbone("resnet18", out_levels=["c5"]), num_classes=3)
    _randomise_bn(src)
    _ckpt(src, tmp_path / "run.ckpt")
    torch.manual_seed(1)
    five = ClassificationModel(build_backbone("resnet18", out_levels=["c5"]), num_classes=5)
    fresh_fc = five.head.fc.weight.clone()
    with caplog.at_level(logging.INFO):
        report = init_from(five, tmp_path / "run.ckpt")
    for k, v in src.body.state_dict().items():
        torch.testing.assert_close(five.body.state_dict()[k], v)
    torch.testing.assert_close(five.head.fc.weight, fresh_fc)  # re-initialised (kept fresh), with a warning
    assert sorted(report.reinitialised) == ["heads.classification.fc.bias", "heads.classification.fc.weight"]
    assert any(r.levelno == logging.WARNING and "fc.weight" in r.getMessage() and "re-initialised" in r.getMessage()
               for r in caplog.records)
    three = ClassificationModel(build_backbone("resnet18", out_levels=["c5"], norm="frozen_bn"), num_classes=3)
    report = init_from(three, tmp_path / "run.ckpt")
    assert report.reinitialised == [] and sorted(report.head.loaded) == ["heads.classification.fc.bias",
                                                                  "heads.classification.fc.weight"]
    torch.testing.assert_close(three.head.fc.weight, src.head.fc.weight)
    torch.testing.assert_close(three.body.bn1.running_var, src.body.bn1.running_var)


def test_init_from_through_build_task_and_a_neck(tmp_path):
    from backbones.hydra_configs import compose_config
    from tasks.build import build_task

    torch.manual_seed(0)
    src = ClassificationModel(build_backbone("resnet18"), num_classes=3)
    _ckpt(src, tmp_path / "run.ckpt")
    cfg = compose_config(["neck=fpn", "neck.out_channels=16", f"init_from={tmp_path / 'run.ckpt'}"], tmp_path)
    module = build_task(cfg, ["a", "b", "c", "d"])
    for k, v in src.body.state_dict().items():
        torch.testing.assert_close(module.model.body.body.state_dict()[k], v)
    assert OmegaConf.select(cfg, "init_from") == str(tmp_path / "run.ckpt")


def test_init_from_another_backbone_is_refused_unless_partial(tmp_path):
    torch.manual_seed(0)
    src = ClassificationModel(build_backbone("resnet18", out_levels=["c5"]), num_classes=3)
    _ckpt(src, tmp_path / "r18.ckpt", backbone="resnet18")
    _ckpt(src, tmp_path / "bare.ckpt")  # no stored backbone: the cause is inferred from the shapes
    r50 = ClassificationModel(build_backbone("resnet50", out_levels=["c5"]), num_classes=3)
    with pytest.raises(PartialWeightsError) as err:
        init_from(r50, tmp_path / "r18.ckpt", backbone_name="resnet50")
    message = str(err.value)
    assert f"init_from={tmp_path / 'r18.ckpt'} would leave 73% of the backbone resnet50" in message
    assert ("The checkpoint's run was trained with backbone=resnet18 (its stored config): pass backbone=resnet18"
            in message)
    assert "or init_from_partial=true to train from the 27% that fits" in message
    with pytest.raises(PartialWeightsError, match="These weights look like resnet18's .*: pass backbone=resnet18"):
        init_from(r50, tmp_path / "bare.ckpt", backbone_name="resnet50")
    report = init_from(r50, tmp_path / "r18.ckpt", partial=True, backbone_name="resnet50")
    torch.testing.assert_close(r50.body.conv1.weight, src.body.conv1.weight)
    assert report.reinitialised == ["heads.classification.fc.weight"]  # 512 -> 2048 features: a fresh head


def test_init_from_reads_the_layout_from_the_stored_run(tmp_path):
    """A Cerberus checkpoint's modules are found by rebuilding its run from the stored config (on the meta device),
    not by guessing prefixes: a detector's backbone sits at model.body.body. (at model.detector.backbone.body. in
    checkpoints of the single-task models before the multi-head one, which load too)."""
    from backbones.hydra_configs import compose_config
    from tasks.build import build_task
    from tasks.init_from import stored_layout

    cfg = compose_config(["task=detection", "backbone=resnet18", "neck.out_channels=16",
                          "task.model.representation_size=16"], tmp_path)
    det = build_task(cfg, ["a", "b"])
    state = {"state_dict": {f"model.{k}": v for k, v in det.model.state_dict().items()},
             "hyper_parameters": dict(det.hparams)}
    torch.save(state, tmp_path / "det.ckpt")
    assert stored_layout(state, "det.ckpt") == ("model.body.body.", "model.")
    assert stored_layout({"state_dict": {}, "hyper_parameters": {"class_names": ["a"], "config": {"task": {}}}},
                         "x") is None  # an incomplete config: inferred from the keys instead
    cls = ClassificationModel(build_backbone("resnet18"), num_classes=3)
    report = init_from(cls, tmp_path / "det.ckpt", backbone_name="resnet18")
    assert not report.backbone.missing and not report.backbone.mismatched
    for k, v in det.model.body.body.state_dict().items():
        torch.testing.assert_close(cls.body.state_dict()[k], v)
    legacy = {"state_dict": {k.replace("model.body.", "model.detector.backbone.", 1)
                             .replace("model.heads.detection.", "model.detector.", 1): v
                             for k, v in state["state_dict"].items()}, "hyper_parameters": state["hyper_parameters"]}
    assert any(k.startswith("model.detector.rpn.") for k in legacy["state_dict"])
    torch.save(legacy, tmp_path / "legacy.ckpt")
    det2 = build_task(cfg, ["a", "b"])
    report = init_from(det2.model, tmp_path / "legacy.ckpt", backbone_name="resnet18")
    assert not report.backbone.missing and not report.head.missing and not report.reinitialised
    for k, v in det.model.state_dict().items():
        torch.testing.assert_close(det2.model.state_dict()[k], v)
