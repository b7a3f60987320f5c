"""The hand-written CPU training paths (reuse.dropout, reuse.model.LinearCrossEntropy) against the library paths
they replace: same values and gradients where nothing is random, the same statistics where something is."""

import pytest
import torch
import torch.nn.functional as F

import reuse.dropout as dropout
from reuse.model import LinearCrossEntropy, build_model, load_config, masked_lm_loss

CONFIGS = ["configs/bert-2L-64H.json", "configs/roberta-2L-64H.json", "configs/gpt2-2L-64H.json"]


@pytest.mark.parametrize("path", CONFIGS[:2])
def test_fused_head_loss_and_gradients_equal_the_full_logits_path(path, monkeypatch):
    # 42 masked rows: two full chunks and a shorter last one
    monkeypatch.setattr(LinearCrossEntropy, "chunk_rows", lambda width: 16)
    torch.manual_seed(0)
    model = build_model(load_config(path)).eval()  # eval: no dropout, so both passes see the same network
    ids = torch.randint(1000, 5000, (3, 40))
    labels = torch.full_like(ids, -100)
    labels[:, ::3] = torch.randint(0, model.config.vocab_size, labels[:, ::3].shape)

    fused = masked_lm_loss(model, ids, labels, fused=True)
    fused_grads = torch.autograd.grad(fused, list(model.parameters()))
    logits = model(input_ids=ids).logits
    reference = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum")
    reference_grads = torch.autograd.grad(reference, list(model.parameters()))

    assert fused.grad_fn.name().startswith("LinearCrossEntropy")  # the fused path did run
    assert fused.item() == pytest.approx(reference.item(), rel=1e-5)
    # Relative to each tensor's largest entry: the two paths sum the same terms in other orders, so an entry near
    # zero in a tensor whose entries reach ~5 (the tied embeddings) carries fp32 rounding of up to ~1e-5 (seen: 9e-6).
    # The absolute floor is for gradients that are zero in exact arithmetic (attention key biases: ~1e-10).
    for (name, _), a, b in zip(model.named_parameters(), fused_grads, reference_grads):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-8, name


def test_fused_loss_scales_its_gradients_by_the_incoming_gradient():
    torch.manual_seed(0)
    x, w, b = torch.randn(5, 8, requires_grad=True), torch.randn(11, 8, requires_grad=True), torch.zeros(11)
    y = torch.randint(11, (5,))
    (3.0 * LinearCrossEntropy.apply(x, w, b, y)).backward()
    expected = torch.autograd.grad(3.0 * F.cross_entropy(x @ w.t() + b, y, reduction="sum"), [x, w])
    assert torch.allclose(x.grad, expected[0], atol=1e-5) and torch.allclose(w.grad, expected[1], atol=1e-5)


def test_evaluation_keeps_the_library_cross_entropy(monkeypatch):
    """The fused function computes gradients in its forward: under no_grad (evaluation) that is wasted work."""
    model = build_model(load_config(CONFIGS[0])).eval()
    ids = torch.randint(1000, 5000, (2, 10))
    with torch.no_grad():
        expected = F.cross_entropy(model(input_ids=ids).logits.reshape(-1, model.config.vocab_size), ids.reshape(-1),
                                   reduction="sum")
    monkeypatch.setattr(LinearCrossEntropy, "apply", lambda *a: pytest.fail("fused path used without gradients"))
    with torch.no_grad():
        loss = masked_lm_loss(model, ids, ids, fused=True)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_cpu_dropout_drops_at_rate_p_and_keeps_the_expectation(p):
    torch.manual_seed(0)
    out = dropout.cpu_dropout(torch.ones(1_000_000), p)
    # 1M Bernoulli draws: the standard error of the rate is below 5e-4, so 3e-3 is a 6-sigma band.
    assert (out == 0).float().mean().item() == pytest.approx(p, abs=3e-3)
    assert out.mean().item() == pytest.approx(1.0, abs=3e-3 / (1 - p))
    dropped, kept = out.unique().tolist()
    assert dropped == 0.0 and kept == pytest.approx(1 / (1 - p), rel=1e-4)


def test_cpu_dropout_gradient_is_the_forwards_mask_and_scale():
    torch.manual_seed(0)
    x = torch.randn(10_000, dtype=torch.float64, requires_grad=True)
    out = dropout.cpu_dropout(x, 0.25)
    upstream = torch.randn_like(x)
    out.backward(upstream)
    factor = out.detach() / x.detach()  # 0 where dropped, 1 / 0.75 where kept
    kept = factor != 0
    assert out.dtype == torch.float64 and 0.2 < 1 - kept.double().mean() < 0.3
    assert torch.allclose(factor[kept], torch.full_like(factor[kept], 4 / 3))
    assert torch.allclose(x.grad, upstream * factor)


def test_cpu_dropout_masks_are_fresh_and_follow_the_global_seed():
    torch.manual_seed(1)
    a, b = dropout.cpu_dropout(torch.ones(4096), 0.3), dropout.cpu_dropout(torch.ones(4096), 0.3)
    torch.manual_seed(1)
    assert torch.equal(a, dropout.cpu_dropout(torch.ones(4096), 0.3)) and not torch.equal(a, b)


@pytest.mark.parametrize("path", CONFIGS)
def test_cpu_dropout_model_computes_what_the_sdpa_model_computes(path, tmp_path):
    """With a drop probability that rounds to zero, the swapped model runs its own attention and dropout code in
    training mode and must give the standard model's outputs; its checkpoint stays a plain one."""
    config = load_config(path)
    torch.manual_seed(0)
    standard = build_model(config).eval()
    swapped = build_model(config)
    swapped.load_state_dict(standard.state_dict())
    dropout.use_cpu_dropout(swapped).train()
    calls = []
    original = dropout.attention
    for module in swapped.modules():
        if isinstance(module, torch.nn.Dropout):
            assert type(module) is dropout.CPUDropout
            module.p = 1e-9
    dropout.AttentionInterface.register(dropout.ATTENTION, lambda *a, **k: calls.append(1) or original(*a, **k))
    try:
        ids = torch.randint(3, 5000, (2, 30))
        assert torch.allclose(swapped(input_ids=ids).logits, standard(input_ids=ids).logits, atol=1e-5)
    finally:
        dropout.AttentionInterface.register(dropout.ATTENTION, original)
    assert len(calls) == config.num_hidden_layers
    swapped.save_pretrained(tmp_path)
    assert dropout.ATTENTION not in (tmp_path / "config.json").read_text()


def test_speed_paths_are_chosen_once_for_cpu_fp32_masked_lm_training():
    from reuse.objective import objective_for
    from reuse.tokenize import load_tokenizer
    from reuse.train import use_speed_paths

    tokenizer = load_tokenizer("bert-base-uncased")
    mlm = build_model(load_config(CONFIGS[0]))
    objective = objective_for(mlm.config, tokenizer)
    use_speed_paths(mlm, objective, torch.device("cpu"), None)
    assert objective.fused_head
    assert not any(type(m) is torch.nn.Dropout for m in mlm.modules())  # swapped for the cheaper CPU dropout
    assert any(isinstance(m, dropout.CPUDropout) for m in mlm.modules())
    use_speed_paths(mlm, objective, torch.device("cpu"), torch.bfloat16)
    assert not objective.fused_head  # the fused kernel is fp32 only
    compiled = build_model(load_config(CONFIGS[0]))
    use_speed_paths(compiled, objective, torch.device("cpu"), None, compiled=True)
    assert not objective.fused_head and not any(isinstance(m, dropout.CPUDropout) for m in compiled.modules())
    assert compiled.config._attn_implementation != dropout.ATTENTION  # dynamo gets the library's graph whole
    gpt2 = build_model(load_config("configs/gpt2-2L-64H.json"))
    causal = objective_for(gpt2.config, tokenizer)
    use_speed_paths(gpt2, causal, torch.device("cpu"), None)
    assert not causal.fused_head


def test_the_trainers_fused_adamw_steps_as_the_plain_one():
    """make_optimizer asks for the fused AdamW (one kernel over all tensors, on CPU as on CUDA): same updates."""
    from reuse.config import TrainConfig
    from reuse.train import make_optimizer

    torch.manual_seed(0)
    fused_model = build_model(load_config(CONFIGS[0]))
    plain_model = build_model(load_config(CONFIGS[0]))
    plain_model.load_state_dict(fused_model.state_dict())
    cfg = TrainConfig(lr=1e-3, weight_decay=0.01)
    fused = make_optimizer(fused_model, cfg)
    assert fused.defaults["fused"]
    plain = torch.optim.AdamW([{"params": [p for p in plain_model.parameters() if p.ndim >= 2], "weight_decay": 0.01},
                               {"params": [p for p in plain_model.parameters() if p.ndim < 2], "weight_decay": 0.0}],
                              lr=1e-3, betas=(0.9, cfg.adam_beta2), eps=cfg.adam_eps, foreach=False)
    ids = torch.randint(1000, 5000, (2, 12))
    for _ in range(3):
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            masked_lm_loss(model.eval(), ids, ids).backward()
            optimizer.step()
            optimizer.zero_grad()
    for (name, a), b in zip(fused_model.named_parameters(), plain_model.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), name
