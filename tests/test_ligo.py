"""LiGO (reuse.ligo): the learned operator starts at Net2Net, its loss falls, its result is a plain checkpoint."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForMaskedLM

from reuse import ligo
from reuse.grow import GrowthError, grow
from reuse.model import build_model, flops_per_step


def config(family, hidden, layers=2):
    fields = json.load(open(f"configs/{family}-12L-{hidden}H.json"))
    fields.update(num_hidden_layers=layers, vocab_size=2048)  # small vocabulary: seconds per test
    return AutoConfig.for_model(**fields)


def batches(n=4, size=8, length=32, vocab=2048):
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        inputs = torch.randint(5, vocab, (size, length), generator=gen)
        labels = torch.full_like(inputs, -100)
        chosen = torch.rand(inputs.shape, generator=gen) < 0.3
        labels[chosen] = inputs[chosen]
        out.append((inputs, labels))
    return out


def test_the_operator_starts_as_net2net():
    src, dst = config("bert", 64), config("bert", 192, layers=3)
    torch.manual_seed(0)
    state = build_model(src).state_dict()
    expected, _ = grow(state, src, dst, "net2net", depth_method="stack")
    with torch.no_grad():
        start = ligo.Operator(state, src, dst, "stack")()
    assert start.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(start[key], expected[key], atol=1e-6, rtol=0, msg=key)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_ligo_loss_falls_and_its_result_loads_plainly(family, tmp_path):
    torch.manual_seed(0)
    small = build_model(config(family, 128))
    before = {k: v.clone() for k, v in small.state_dict().items()}
    data = batches()
    big, report = ligo.grow(small, config(family, 192, layers=3), data, steps=24, lr=1e-2)
    losses = report["ligo_losses"]
    assert len(losses) == 24
    first_pass, last_pass = sum(losses[:4]) / 4, sum(losses[-4:]) / 4  # the same 4 batches, cycled
    assert last_pass < first_pass - 0.2
    assert all(torch.equal(v, small.state_dict()[k]) for k, v in before.items())  # the small model is untouched
    expected_flops = sum(flops_per_step(big.config, 8, 32, float((l != -100).sum())) for _, l in data) * 6
    assert report["ligo_model_flops"] == pytest.approx(expected_flops)  # 6 passes over 4 batches
    assert report["ligo_operator_flops"] > 0
    assert report["ligo_flops"] == pytest.approx(report["ligo_model_flops"] + report["ligo_operator_flops"])
    big.save_pretrained(tmp_path / "grown")
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "grown").eval()
    assert loaded.config.hidden_size == 192 and loaded.config.num_hidden_layers == 3
    inputs = data[0][0]
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=inputs).logits, big(input_ids=inputs).logits, atol=1e-5, rtol=0)


def test_ligo_refuses_bad_input_before_any_work():
    small = build_model(config("bert", 64))
    for data, message in [(None, "needs training data"), ([], "list of batches is empty"),
                          (iter([]), "batches given are empty")]:
        with pytest.raises(GrowthError, match=message):
            ligo.grow(small, config("bert", 128), data, steps=5)
    with pytest.raises(GrowthError, match="ran out after 2 of 5 steps"):
        ligo.grow(small, config("bert", 128), iter(batches(2)), steps=5)
    with pytest.raises(GrowthError, match="cannot shrink hidden_size"):
        ligo.grow(build_model(config("bert", 128)), config("bert", 64), batches(), steps=5)
    with pytest.raises(GrowthError, match=">= 1 training steps"):
        ligo.grow(small, config("bert", 128), batches(), steps=0)
    gpt2 = build_model(AutoConfig.for_model(**json.load(open("configs/demo/gpt2-4L-64H.json"))))
    with pytest.raises(GrowthError, match="not for model family 'gpt2'"):
        ligo.grow(gpt2, config("bert", 128), batches(), steps=5)
