"""AdamW moments across growth (reuse.carry): mapped like the weights, scaled so the first update is consistent."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoConfig

from reuse import carry, msg
from reuse.grow import GrowthError, grow, rule_for
from reuse.model import build_model, masked_lm_loss

BETAS = (0.9, 0.98)


def config(hidden, layers=2):
    fields = json.load(open(f"configs/bert-12L-{hidden}H.json"))
    fields.update(num_hidden_layers=layers, vocab_size=2048, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)  # no dropout: gradients are a function of the weights
    return AutoConfig.for_model(**fields)


def adamw(model, weight_decay, eps):
    """The trainer's grouping: matrices decay, vectors do not."""
    params = list(model.named_parameters())
    return torch.optim.AdamW([{"params": [p for _, p in params if p.ndim >= 2], "weight_decay": weight_decay},
                              {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0}],
                             lr=1e-3, betas=BETAS, eps=eps, fused=True)


def batch(seed):
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randint(5, 2048, (4, 24), generator=gen)
    labels = torch.full_like(inputs, -100)
    chosen = torch.rand(inputs.shape, generator=gen) < 0.3
    labels[chosen] = inputs[chosen]
    return inputs, labels


def step(model, optimizer, seed):
    model.train()
    masked_lm_loss(model, *batch(seed)).backward()
    optimizer.step()
    optimizer.zero_grad()


def trained_small(weight_decay=0.01, eps=1e-6, steps=3):
    torch.manual_seed(0)
    model = build_model(config(64))
    optimizer = adamw(model, weight_decay, eps)
    for s in range(steps):
        step(model, optimizer, s)
    return model, optimizer


def grown(small, optimizer, target, method="net2net", weight_decay=0.01, eps=1e-6):
    state, report = grow(small.state_dict(), small.config, target, method)
    big = build_model(target)
    big.load_state_dict(state, strict=False)
    big.tie_weights()
    moments = carry.carry_optimizer_state(optimizer.state_dict(), carry.optimizer_names(small, optimizer), report,
                                          small.config, target)
    big_optimizer = adamw(big, weight_decay, eps)
    carry.load_moments(big_optimizer, big, moments)
    return big, big_optimizer, report, moments


def copied(tensor, key, report):
    """Index the small tensor as the grown weight copies it: unit j of each grown axis comes from unit g(j)."""
    maps = {"r": np.array(report["maps"]["residual"]), "f": np.array(report["maps"]["ffn"]),
            "a": (np.array(report["maps"]["heads"])[:, None] * 64 + np.arange(64)).reshape(-1)}
    spaces = rule_for(key.split(".", 1)[1]) if key.startswith("bert.") else rule_for(key)
    out = tensor
    for axis, space in enumerate(spaces):
        if space != "-":
            out = torch.index_select(out, axis, torch.from_numpy(maps[space.lower()]))
    return out


def test_first_update_after_integer_growth_is_the_small_models_update_of_what_each_weight_copies():
    """64 -> 128 with Net2Net keeps the function, so the grown gradients are the mapped small gradients (divided by
    the copy count along writing axes); with the moments scaled the same way (m / c, v / c^2) AdamW's first update
    of every grown weight is the small model's update of its source. Weight decay off and eps negligible: AdamW's
    update is then invariant to the scale of the gradient, which is what the scaling keeps consistent."""
    small, optimizer = trained_small(weight_decay=0.0, eps=1e-12)
    big, big_optimizer, report, _ = grown(small, optimizer, config(128), weight_decay=0.0, eps=1e-12)
    before_small = {k: v.detach().clone() for k, v in small.named_parameters()}
    before_big = {k: v.detach().clone() for k, v in big.named_parameters()}
    step(small, optimizer, 10)
    step(big, big_optimizer, 10)
    for key, value in big.named_parameters():
        if key.endswith("attention.self.key.bias"):  # its gradient is 0 (softmax ignores a shift): rounding only
            continue
        update_small = small.get_parameter(key).detach() - before_small[key]
        update_big = value.detach() - before_big[key]
        assert update_small.abs().max() > 0
        torch.testing.assert_close(update_big, copied(update_small, key, report), atol=2e-7, rtol=1e-3, msg=key)


def test_the_first_update_is_adamw_of_the_mapped_moments_by_hand():
    small, optimizer = trained_small()
    big, big_optimizer, report, moments = grown(small, optimizer, config(192, layers=3))
    saved = carry.named_moments(optimizer.state_dict(), carry.optimizer_names(small, optimizer))
    # The map itself, by hand, for a weight writing the FFN and reading the residual (128 -> 192 is not 64 -> 128:
    # here 64 -> 192, so every unit has 3 copies), and for the head's LayerNorm, read by the tied decoder.
    key = "bert.encoder.layer.1.intermediate.dense.weight"
    g_f, g_r = np.arange(768) % 256, np.arange(192) % 64
    torch.testing.assert_close(moments[key]["exp_avg"], saved[key]["exp_avg"][g_f][:, g_r] / 3)
    torch.testing.assert_close(moments[key]["exp_avg_sq"], saved[key]["exp_avg_sq"][g_f][:, g_r] / 9)
    torch.testing.assert_close(moments["bert.encoder.layer.2.intermediate.dense.weight"]["exp_avg"],
                               moments["bert.encoder.layer.0.intermediate.dense.weight"]["exp_avg"])  # stacked
    key = "cls.predictions.transform.LayerNorm.weight"
    torch.testing.assert_close(moments[key]["exp_avg"], saved[key]["exp_avg"][g_r])
    # The optimizer's step from those moments, by hand (AdamW with bias correction, decoupled weight decay).
    before = {k: v.detach().clone() for k, v in big.named_parameters()}
    big.train()
    masked_lm_loss(big, *batch(10)).backward()
    grads = {k: v.grad.clone() for k, v in big.named_parameters()}
    big_optimizer.step()
    decay = {id(p): g["weight_decay"] for g in big_optimizer.param_groups for p in g["params"]}
    for key, value in big.named_parameters():
        t = float(moments[key]["step"]) + 1
        m = BETAS[0] * moments[key]["exp_avg"] + (1 - BETAS[0]) * grads[key]
        v = BETAS[1] * moments[key]["exp_avg_sq"] + (1 - BETAS[1]) * grads[key] ** 2
        expected = before[key] * (1 - 1e-3 * decay[id(value)]) - 1e-3 * (m / (1 - BETAS[0] ** t)) / (
            (v / (1 - BETAS[1] ** t)).sqrt() + 1e-6)
        torch.testing.assert_close(value.detach(), expected, atol=1e-6, rtol=1e-5, msg=key)


def test_msg_keeps_old_moments_and_starts_new_entries_and_layers_at_zero():
    small, optimizer = trained_small()
    transition = msg.start(small, config(192, layers=3), ramp_steps=5)
    moments = carry.carry_optimizer_state(optimizer.state_dict(), carry.optimizer_names(small, optimizer),
                                          transition.report, small.config, config(192, layers=3))
    saved = carry.named_moments(optimizer.state_dict(), carry.optimizer_names(small, optimizer))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    m = moments[key]["exp_avg"]
    assert torch.equal(m[:64, :64], saved[key]["exp_avg"]) and not m[64:].any() and not m[:, 64:].any()
    assert not moments["bert.encoder.layer.2.attention.self.query.weight"]["exp_avg"].any()  # a new layer
    big_optimizer = adamw(transition.model, 0.01, 1e-6)
    carry.load_moments(big_optimizer, transition.model, moments)  # every parameter has its moments


def test_carry_over_refuses_a_checkpoint_without_trainer_state_and_ligo(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(GrowthError, match=r"plain/trainer_state\.pt is missing"):
        carry.trainer_state_file(tmp_path / "plain")
    best = tmp_path / "run" / "best"
    best.mkdir(parents=True)
    (best / "checkpoint.json").write_text(json.dumps({"step": 40}))
    with pytest.raises(GrowthError, match=r"nor .*checkpoints/step-0000040/trainer_state\.pt"):
        carry.trainer_state_file(best)
    kept = tmp_path / "run" / "checkpoints" / "step-0000040"
    kept.mkdir(parents=True)
    (kept / "trainer_state.pt").write_bytes(b"")
    assert carry.trainer_state_file(best) == kept / "trainer_state.pt"
    small, optimizer = trained_small(steps=1)
    with pytest.raises(GrowthError, match="LiGO's operator is dense"):
        carry.carry_optimizer_state(optimizer.state_dict(), carry.optimizer_names(small, optimizer),
                                    {"method": "ligo"}, small.config, config(128))
