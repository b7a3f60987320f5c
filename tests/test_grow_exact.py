"""MSG growth (reuse.msg): exact at growth at every ratio of the paper's ladder, a plain checkpoint after the ramp."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForMaskedLM

from reuse import msg
from reuse.grow import GrowthError
from reuse.model import build_model, masked_lm_loss

LADDER = [64, 128, 192, 256, 320, 384, 448, 512, 576, 640]


def ladder_config(family, hidden, layers=2):
    fields = json.load(open(f"configs/{family}-12L-{hidden}H.json"))  # heads and FFN grow with width there
    # A 2,048-token vocabulary keeps the 40 cases at seconds each; growth never touches the vocabulary axis.
    fields.update(num_hidden_layers=layers, vocab_size=2048)
    return AutoConfig.for_model(**fields)


def random_batch(config, seed=0, batch=2, length=24):
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randint(5, config.vocab_size, (batch, length), generator=gen)
    labels = torch.full_like(inputs, -100)
    chosen = torch.rand(inputs.shape, generator=gen) < 0.3
    labels[chosen] = inputs[chosen]
    return inputs, labels


def small_model(family, hidden, trained):
    torch.manual_seed(hidden)
    model = build_model(ladder_config(family, hidden))
    if trained:  # a few large steps: LayerNorm gains and biases leave their uniform initial values
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for step in range(4):
            inputs, labels = random_batch(model.config, step)
            masked_lm_loss(model, inputs, labels, reduction="mean").backward()
            opt.step()
            opt.zero_grad()
        gain = model.base_model.encoder.layer[0].output.LayerNorm.weight
        assert gain.std() > 1e-3  # the premise: per-unit gains differ, the case LEMON cannot expand post-LN
    return model.eval()


@torch.no_grad()
def logits(model, inputs):
    model.eval()
    return model(input_ids=inputs).logits


@pytest.mark.parametrize("trained", [False, True], ids=["random", "trained"])
@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("small_h,big_h", list(zip(LADDER, LADDER[1:])))
def test_msg_is_exact_at_growth_at_every_ladder_ratio(family, small_h, big_h, trained):
    small = small_model(family, small_h, trained)
    transition = msg.start(small, ladder_config(family, big_h), ramp_steps=10)
    inputs, _ = random_batch(small.config, seed=99)
    assert transition.mask_value == 0.0
    torch.testing.assert_close(logits(transition.model, inputs), logits(small, inputs), atol=1e-4, rtol=0)


def test_msg_is_exact_when_growing_width_and_depth_together():
    small = small_model("bert", 64, trained=True)
    for depth_method in ("stack", "interleave"):
        transition = msg.start(small, ladder_config("bert", 192, layers=5), 10, depth_method=depth_method)
        assert transition.report["new_layers"] == ([2, 3, 4] if depth_method == "stack" else [1, 2, 4])
        inputs, _ = random_batch(small.config, seed=5)
        torch.testing.assert_close(logits(transition.model, inputs), logits(small, inputs), atol=1e-4, rtol=0)


def test_new_weights_get_no_gradient_at_mask_0_and_learn_during_the_ramp():
    small = small_model("bert", 128, trained=False)
    transition = msg.start(small, ladder_config("bert", 192), ramp_steps=4)
    model = transition.model.train()
    inputs, labels = random_batch(small.config)
    query = model.base_model.encoder.layer[0].attention.self.query.weight
    for c, expect_new_gradient in ((0, False), (2, True)):
        transition.step(c)
        model.zero_grad()
        masked_lm_loss(model, inputs, labels).backward()
        assert (query.grad[128:].abs().max() > 0) == expect_new_gradient  # rows of the third (new) head
        assert query.grad[:128].abs().max() > 0


def test_after_the_ramp_the_checkpoint_loads_plainly_with_the_masked_models_logits(tmp_path):
    small = small_model("roberta", 128, trained=True)
    transition = msg.start(small, ladder_config("roberta", 192, layers=3), ramp_steps=3)
    model = transition.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(3):  # train through the ramp, so the new weights are no longer their initial values
        assert transition.step(step) == step / 3
        inputs, labels = random_batch(small.config, step)
        masked_lm_loss(model, inputs, labels).backward()
        opt.step()
        opt.zero_grad()
    with pytest.raises(GrowthError, match="not 1"):
        transition.finish()
    assert transition.step(3) == 1.0
    inputs, _ = random_batch(small.config, seed=42)
    masked = logits(model, inputs)
    plain = transition.finish()
    assert plain is model and not transition.active
    assert "msg_masks" not in dict(plain.named_modules())
    plain.save_pretrained(tmp_path / "grown")
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "grown")
    assert type(loaded).__name__ == "RobertaForMaskedLM" and loaded.config.hidden_size == 192
    torch.testing.assert_close(logits(loaded, inputs), masked, atol=1e-4, rtol=0)
    assert (masked - logits(small, inputs)).abs().max() > 1e-3  # the ramp did change the function


def test_msg_refuses_what_it_cannot_grow():
    small = small_model("bert", 128, trained=False)
    with pytest.raises(GrowthError, match="cannot shrink hidden_size"):
        msg.start(small, ladder_config("bert", 64), 10)
    with pytest.raises(GrowthError, match="ramp must be a number of steps"):
        msg.start(small, ladder_config("bert", 192), -1)
    gpt2 = build_model(AutoConfig.for_model(**json.load(open("configs/demo/gpt2-4L-64H.json"))))
    with pytest.raises(GrowthError, match="not for model family 'gpt2'"):
        msg.start(gpt2, ladder_config("bert", 192), 10)
