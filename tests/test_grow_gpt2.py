"""GPT-2 growth (reuse.grow_gpt2): lemon is exact at every ratio and depth, the result is a plain checkpoint."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from reuse import grow_gpt2
from reuse.grow import GrowthError
from reuse.model import build_model, causal_lm_loss

LADDER = [64, 128, 192, 256, 320, 384, 448, 512, 576, 640]


def config(hidden, layers=2, **changes):
    fields = json.load(open("configs/demo/gpt2-4L-64H.json"))
    fields.update(n_embd=hidden, n_head=hidden // 64, n_inner=4 * hidden, n_layer=layers, vocab_size=2048)
    fields.update(changes)
    return AutoConfig.for_model(**fields)


def tokens(seed=0):
    return torch.randint(0, 2048, (2, 24), generator=torch.Generator().manual_seed(seed))


def trained(hidden, layers=2):
    torch.manual_seed(hidden)
    model = build_model(config(hidden, layers))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(4):  # a few large steps: LayerNorm gains leave their uniform initial values
        causal_lm_loss(model, tokens(step)).backward()
        opt.step()
        opt.zero_grad()
    assert model.transformer.h[0].ln_2.weight.std() > 1e-3
    return model.eval()


@torch.no_grad()
def logits(model, ids):
    return model.eval()(input_ids=ids).logits


@pytest.mark.parametrize("small_h,big_h", list(zip(LADDER, LADDER[1:])))
def test_lemon_is_exact_at_every_ladder_ratio(small_h, big_h):
    small = trained(small_h)
    big, report = grow_gpt2.grow_model(small, config(big_h))
    assert report["layer_norm_epsilon"] == pytest.approx(1e-5 * small_h / big_h)
    torch.testing.assert_close(logits(big, tokens(9)), logits(small, tokens(9)), atol=1e-4, rtol=0)


@pytest.mark.parametrize("depth_method", ["stack", "interleave"])
def test_lemon_is_exact_in_depth_and_the_result_loads_plainly(depth_method, tmp_path):
    small = trained(128)
    big, report = grow_gpt2.grow_model(small, config(192, layers=5), depth_method=depth_method)
    assert report["layers"] == ([0, 1, 0, 1, 0] if depth_method == "stack" else [0, 0, 0, 1, 1])
    torch.testing.assert_close(logits(big, tokens(3)), logits(small, tokens(3)), atol=1e-4, rtol=0)
    big.save_pretrained(tmp_path / "grown")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "grown")
    assert loaded.config.layer_norm_epsilon == report["layer_norm_epsilon"]
    torch.testing.assert_close(logits(loaded, tokens(3)), logits(small, tokens(3)), atol=1e-4, rtol=0)
    # The zero output projections of new layers and units learn at the first step; what they read only then.
    loaded.train()
    causal_lm_loss(loaded, tokens(4)).backward()
    assert loaded.transformer.h[4].attn.c_proj.weight.grad.abs().max() > 0
    assert loaded.transformer.h[0].mlp.c_proj.weight.grad[512:].abs().max() > 0
    assert not loaded.transformer.h[4].attn.c_attn.weight.grad.any()


def test_random_growth_is_the_inexact_baseline():
    small = trained(128)
    big, _ = grow_gpt2.grow_model(small, config(192), method="random")
    assert (logits(big, tokens(1)) - logits(small, tokens(1))).abs().max() > 1e-2


@pytest.mark.parametrize("target,message", [
    (dict(hidden=64), "cannot shrink n_embd"), (dict(hidden=128, layers=1), "cannot shrink n_layer"),
    (dict(hidden=192, n_head=2), "head size must be 64"), (dict(hidden=192, n_positions=64), "n_positions differs")])
def test_impossible_gpt2_growth_is_refused(target, message):
    small = build_model(config(128))
    with pytest.raises(GrowthError, match=message):
        grow_gpt2.grow(small.state_dict(), small.config, config(**target))
    with pytest.raises(GrowthError, match="unknown GPT-2 growth method 'net2net'"):
        grow_gpt2.grow(small.state_dict(), small.config, config(192), "net2net")
    bert = AutoConfig.for_model(**json.load(open("configs/bert-2L-64H.json")))
    with pytest.raises(GrowthError, match="not bert into gpt2"):
        grow_gpt2.grow({}, bert, config(192))
