"""Multi-task loss weighting: each method against a hand computation in plain floats (float32 tensors: rel 1e-6)."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.multitask import (
    DynamicWeightAverage,
    EqualWeighting,
    UncertaintyWeighting,
    build_weighting,
)

HEADS = ("detection", "segmentation", "classification")


def _losses(**values: float) -> dict[str, torch.Tensor]:
    """0-dim leaf losses that require grad, so a test can read d total / d loss."""
    return {head: torch.tensor(value, requires_grad=True) for head, value in values.items()}


def _f(tensor: torch.Tensor) -> float:
    return tensor.detach().item()


def _approx(value: float):
    return pytest.approx(value, rel=1e-6, abs=1e-7)


# --- equal -------------------------------------------------------------------------------------------------------


def test_equal_default_sums_the_present_heads():
    losses = _losses(detection=1.5, segmentation=2.0)  # classification unlabelled in this batch
    total, weights = EqualWeighting(HEADS)(losses)
    assert total.dim() == 0
    assert _f(total) == _approx(1.5 + 2.0)
    assert set(weights) == {"detection", "segmentation"}  # absent head: no weight reported
    assert all(_f(w) == 1.0 and not w.requires_grad for w in weights.values())
    total.backward()  # the graph is kept: d total / d L_i = w_i
    assert _f(losses["detection"].grad) == 1.0 and _f(losses["segmentation"].grad) == 1.0


def test_equal_custom_weights_unlisted_heads_keep_1():
    module = EqualWeighting(HEADS, weights={"detection": 2.0, "classification": 0.5})
    total, weights = module(_losses(detection=1.5, segmentation=2.0, classification=4.0))
    assert _f(total) == _approx(2.0 * 1.5 + 1.0 * 2.0 + 0.5 * 4.0)
    assert {h: _f(w) for h, w in weights.items()} == {"detection": 2.0, "segmentation": 1.0, "classification": 0.5}

    losses = _losses(detection=1.5, classification=4.0)  # segmentation absent: left out of the sum
    total, weights = module(losses)
    assert _f(total) == _approx(2.0 * 1.5 + 0.5 * 4.0)
    assert set(weights) == {"detection", "classification"}
    total.backward()
    assert _f(losses["detection"].grad) == 2.0 and _f(losses["classification"].grad) == 0.5


def test_equal_rejects_bad_weights():
    with pytest.raises(KeyError, match="known heads"):
        EqualWeighting(HEADS, weights={"depth": 1.0})
    with pytest.raises(ValueError, match="detection"):
        EqualWeighting(HEADS, weights={"detection": -1.0})


# --- uncertainty -------------------------------------------------------------------------------------------------


def _uncertainty(s: dict[str, float]) -> UncertaintyWeighting:
    module = UncertaintyWeighting(HEADS)
    with torch.no_grad():
        for head, value in s.items():
            module.log_vars[head].fill_(value)
    return module


def test_uncertainty_total_and_gradients_match_the_hand_formula():
    s = {"detection": 0.3, "segmentation": -0.7, "classification": 1.1}
    module = _uncertainty(s)
    losses = _losses(detection=2.0, segmentation=0.5)  # classification absent
    total, weights = module(losses)

    # sum over present heads of 0.5 * exp(-s) * L + 0.5 * s
    hand = 0.5 * math.exp(-0.3) * 2.0 + 0.5 * 0.3 + 0.5 * math.exp(0.7) * 0.5 + 0.5 * -0.7
    assert _f(total) == _approx(hand)
    assert _f(weights["detection"]) == _approx(0.5 * math.exp(-0.3))
    assert _f(weights["segmentation"]) == _approx(0.5 * math.exp(0.7))
    assert "classification" not in weights

    total.backward()
    # d/ds [0.5 e^{-s} L + 0.5 s] = 0.5 - 0.5 e^{-s} L ; d/dL = 0.5 e^{-s}
    assert _f(module.log_vars["detection"].grad) == _approx(0.5 - 0.5 * math.exp(-0.3) * 2.0)
    assert _f(module.log_vars["segmentation"].grad) == _approx(0.5 - 0.5 * math.exp(0.7) * 0.5)
    assert _f(losses["detection"].grad) == _approx(0.5 * math.exp(-0.3))
    assert _f(losses["segmentation"].grad) == _approx(0.5 * math.exp(0.7))
    # the absent head's s is in the graph (DDP sees it used) with gradient exactly 0
    absent = module.log_vars["classification"].grad
    assert absent is not None and _f(absent) == 0.0


def test_uncertainty_init_and_checkpoint_keys():
    module = UncertaintyWeighting(HEADS, init=1.0)
    assert [_f(module.log_vars[h]) for h in HEADS] == [1.0, 1.0, 1.0]
    assert sorted(module.state_dict()) == sorted(f"log_vars.{h}" for h in HEADS)
    assert len(list(module.parameters())) == len(HEADS)


def test_uncertainty_sgd_step_moves_s_towards_log_loss():
    module = UncertaintyWeighting(("a", "b"))  # s = 0 for both
    total, _ = module({"a": torch.tensor(4.0), "b": torch.tensor(0.25)})
    total.backward()
    # plain SGD (no momentum) written out: torch.optim's first step imports torch._dynamo, seconds in a fresh process
    with torch.no_grad():
        for s in module.parameters():
            s -= 0.1 * s.grad
    # s1 = s0 - lr * (0.5 - 0.5 * e^{-s0} * L), s0 = 0
    s_a, s_b = 0.0 - 0.1 * (0.5 - 0.5 * 4.0), 0.0 - 0.1 * (0.5 - 0.5 * 0.25)
    assert _f(module.log_vars["a"]) == _approx(s_a)
    assert _f(module.log_vars["b"]) == _approx(s_b)
    # the optimum is s = log L: both moved closer to it (a up, b down)
    assert abs(s_a - math.log(4.0)) < abs(0.0 - math.log(4.0))
    assert abs(s_b - math.log(0.25)) < abs(0.0 - math.log(0.25))


# --- DWA ---------------------------------------------------------------------------------------------------------


def _dwa_hand(ratios: list[float], temperature: float = 2.0) -> list[float]:
    """K * softmax(r / T) in plain floats."""
    exps = [math.exp(r / temperature) for r in ratios]
    return [len(ratios) * e / sum(exps) for e in exps]


def _weights(module: DynamicWeightAverage) -> list[float]:
    return [_f(w) for w in module.weights]


def test_dwa_weights_1_for_two_epochs_then_softmax_of_ratios():
    module = DynamicWeightAverage(("a", "b"))
    assert _weights(module) == [1.0, 1.0]  # epoch 0
    module.epoch_end({"a": 2.0, "b": 4.0})
    assert _weights(module) == [1.0, 1.0]  # epoch 1: one mean is no trend yet
    module.epoch_end({"a": 1.0, "b": 3.0})

    # epoch 2: r = (1/2, 3/4)
    hand = [
        2 * math.exp(0.5 / 2) / (math.exp(0.5 / 2) + math.exp(0.75 / 2)),
        2 * math.exp(0.75 / 2) / (math.exp(0.5 / 2) + math.exp(0.75 / 2)),
    ]
    assert _weights(module) == [_approx(w) for w in hand]
    assert hand[1] > 1.0 > hand[0]  # the head whose loss fell more slowly gets more weight

    losses = _losses(a=0.8, b=2.5)
    total, weights = module(losses)
    assert _f(total) == _approx(hand[0] * 0.8 + hand[1] * 2.5)
    assert [_f(weights["a"]), _f(weights["b"])] == [_approx(w) for w in hand]
    total.backward()
    assert _f(losses["b"].grad) == _approx(hand[1])


def test_dwa_temperature():
    module = DynamicWeightAverage(("a", "b"), temperature=0.5)
    module.epoch_end({"a": 2.0, "b": 4.0})
    module.epoch_end({"a": 1.0, "b": 3.0})
    e_a, e_b = math.exp(0.5 / 0.5), math.exp(0.75 / 0.5)
    assert _weights(module) == [_approx(2 * e_a / (e_a + e_b)), _approx(2 * e_b / (e_a + e_b))]


def test_dwa_head_without_a_mean_keeps_ratio_1():
    module = DynamicWeightAverage(("a", "b", "c"))
    module.epoch_end({"a": 2.0, "b": 4.0, "c": 1.0})
    module.epoch_end({"a": 1.0, "b": 3.0})  # c had no labelled batch this epoch
    assert _weights(module) == [_approx(w) for w in _dwa_hand([0.5, 0.75, 1.0])]
    assert all(math.isfinite(w) for w in _weights(module))
    # next epoch c is back, but its previous mean is missing: still ratio 1
    module.epoch_end({"a": 0.5, "b": 1.5, "c": 2.0})
    assert _weights(module) == [_approx(w) for w in _dwa_hand([0.5, 0.5, 1.0])]


def test_dwa_state_round_trips_into_a_fresh_module():
    module = DynamicWeightAverage(("a", "b"))
    module.epoch_end({"a": 2.0, "b": 4.0})
    module.epoch_end({"a": 1.0, "b": 3.0})
    state = module.state_dict()
    assert {"history", "epochs_recorded", "weights"} <= set(state)

    resumed = DynamicWeightAverage(("a", "b"))
    resumed.load_state_dict(state)
    assert _weights(resumed) == [_approx(w) for w in _dwa_hand([0.5, 0.75])]
    # the recorded means came along too: the next epoch's ratios use epoch 1's means
    resumed.epoch_end({"a": 0.9, "b": 1.5})
    assert _weights(resumed) == [_approx(w) for w in _dwa_hand([0.9 / 1.0, 1.5 / 3.0])]


# --- shared edge cases and the factory ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["equal", "uncertainty", "dwa"])
def test_empty_losses_give_a_zero_that_backpropagates(method):
    module = build_weighting(method, HEADS)
    total, weights = module({})
    assert weights == {}
    assert total.dim() == 0 and math.isfinite(_f(total)) and _f(total) == 0.0
    total.backward()
    for p in module.parameters():  # uncertainty: every s in the graph with gradient 0
        assert p.grad is not None and _f(p.grad) == 0.0


@pytest.mark.parametrize("method", ["equal", "uncertainty", "dwa"])
def test_unknown_head_raises_key_error_naming_the_known_ones(method):
    module = build_weighting(method, HEADS)
    with pytest.raises(KeyError, match="known heads.*detection.*segmentation.*classification"):
        module(_losses(detection=1.0, depth=2.0))


def test_dwa_epoch_end_unknown_head_and_non_scalar_loss():
    module = DynamicWeightAverage(HEADS)
    with pytest.raises(KeyError, match="depth"):
        module.epoch_end({"depth": 1.0})
    with pytest.raises(ValueError, match="0-dim"):
        module({"detection": torch.ones(4)})


def test_build_weighting_methods_and_options():
    assert isinstance(build_weighting("equal", HEADS, weights={"detection": 2.0}), EqualWeighting)
    assert _f(build_weighting("uncertainty", HEADS, init=0.5).log_vars["detection"]) == 0.5
    assert build_weighting("dwa", HEADS, temperature=3.0).temperature == 3.0


def test_build_weighting_errors():
    with pytest.raises(ValueError, match="'gradvac'.*dwa.*equal.*gradnorm.*pcgrad.*uncertainty"):
        build_weighting("gradvac", HEADS)
    with pytest.raises(ValueError, match="temperature.*'equal'"):
        build_weighting("equal", HEADS, temperature=2.0)
    with pytest.raises(ValueError, match="init.*'dwa'"):
        build_weighting("dwa", HEADS, init=0.0)
