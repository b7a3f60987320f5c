"""reuse.growing: every operator behind one call, and every refusal before any work."""

import json

import pytest
import torch
from transformers import AutoConfig

from reuse.growing import check_growth, grow_model, plan_chain
from reuse.grow import GrowthError
from reuse.model import build_model


def bert(hidden, layers=2, family="bert"):
    fields = json.load(open(f"configs/{family}-12L-{hidden}H.json"))
    fields.update(num_hidden_layers=layers, vocab_size=2048)
    return AutoConfig.for_model(**fields)


def gpt2(hidden, layers=2):
    fields = json.load(open("configs/demo/gpt2-4L-64H.json"))
    fields.update(n_embd=hidden, n_head=hidden // 64, n_inner=4 * hidden, n_layer=layers, vocab_size=2048)
    return AutoConfig.for_model(**fields)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    for name, cfg in (("bert-128", bert(128)), ("gpt2-128", gpt2(128))):
        build_model(cfg).save_pretrained(root / name)
    return root


@pytest.mark.parametrize("method,max_drift", [("msg", 1e-4), ("net2net", None)])
def test_at_a_non_integer_ratio_msg_keeps_the_function_and_net2net_does_not(checkpoints, method, max_drift):
    grown = grow_model(checkpoints / "bert-128", bert(192), method, ramp_steps=10)
    drift = grown.report["drift"]["max_abs_logit_diff"]
    assert (drift < max_drift) if max_drift else (drift > 1e-4)
    assert (grown.transition is not None) == (method == "msg")


def test_gpt2_grows_exactly_with_lemon(checkpoints):
    grown = grow_model(checkpoints / "gpt2-128", gpt2(192, layers=3), "lemon")
    assert grown.report["drift"]["max_abs_logit_diff"] < 1e-4 and grown.model.config.n_layer == 3


def test_ligo_through_the_entry_counts_its_flops(checkpoints):
    inputs = torch.randint(5, 2048, (4, 16), generator=torch.Generator().manual_seed(0))
    grown = grow_model(checkpoints / "bert-128", bert(192), "ligo", batches=[(inputs, inputs.clone())], ligo_steps=2)
    assert len(grown.report["ligo_losses"]) == 2 and grown.report["ligo_flops"] > 0
    with pytest.raises(GrowthError, match="needs training data"):
        grow_model(checkpoints / "bert-128", bert(192), "ligo")


@pytest.mark.parametrize("src,dst,kwargs,message", [
    (AutoConfig.for_model("t5"), AutoConfig.for_model("t5"), dict(method="net2net"), "model family 't5'"),
    (gpt2(128), gpt2(192), dict(method="net2net"), "gpt2 grows with lemon, random, not 'net2net'"),
    (bert(128), bert(192), dict(method="lemon"), "bert grows with net2net"),
    (bert(128), gpt2(192), dict(method="msg"), "cannot grow a bert into a gpt2"),
    (bert(192), bert(128), dict(method="msg", ramp_steps=5), "cannot shrink hidden_size"),
    (bert(128), bert(192, layers=1), dict(method="ligo"), "cannot shrink num_hidden_layers"),
    (gpt2(192), gpt2(128), dict(method="lemon"), "cannot shrink n_embd"),
    (bert(128), bert(192), dict(method="msg", ramp_steps=0), "msg needs a ramp"),
    (bert(128), bert(192), dict(method="msg", ramp_steps=5, mapping="random"), "makes none"),
    (bert(128), bert(192), dict(method="ligo", carry_from="x"), "optimizer carry-over follows index maps"),
])
def test_growth_that_cannot_be_done_is_refused(src, dst, kwargs, message):
    with pytest.raises(GrowthError, match=message):
        check_growth(src, dst, **kwargs)


def test_carry_over_from_a_checkpoint_without_trainer_state_names_the_file(checkpoints):
    with pytest.raises(GrowthError, match=r"bert-128/trainer_state\.pt is missing"):
        check_growth(bert(128), bert(192), "net2net", carry_from=checkpoints / "bert-128")


def test_plan_chain_checks_gpt2_and_bert_ladders():
    gpt2_ladder = [f"configs/gpt2-6L-{h}H.json" for h in (128, 256, 384)]
    assert len(plan_chain(gpt2_ladder)) == 2
    with pytest.raises(GrowthError, match="cannot shrink n_embd"):
        plan_chain(gpt2_ladder[::-1])
    with pytest.raises(GrowthError, match="cannot shrink hidden_size"):
        plan_chain(["configs/bert-12L-192H.json", "configs/bert-12L-128H.json"])
