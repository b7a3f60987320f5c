"""Models are plain Hugging Face `*ForMaskedLM` (BERT, RoBERTa) or `*ForCausalLM` (GPT-2); this module builds and
loads them and computes their loss fast.

The speed-up over `model(input_ids, labels=labels)` is that the MLM head (dense + LayerNorm + the vocabulary
projection, most of the FLOPs at small widths) runs only on the ~15% masked positions; when training on CPU, the
vocabulary projection and the cross-entropy are also fused (`LinearCrossEntropy`). The model itself stays a
standard `BertForMaskedLM`/`RobertaForMaskedLM`, so checkpoints load anywhere with `AutoModelForMaskedLM`.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel
from transformers.activations import gelu

from reuse.data import IGNORE_INDEX
from reuse.hub import from_pretrained_args, is_local


class ModelError(Exception):
    """Bad model config or checkpoint; the message says what to do."""


def load_config(path: str | Path) -> PretrainedConfig:
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ModelError(f"model config {path} does not exist (see configs/ for the ladder)")
    try:
        with open(path) as f:
            fields = json.load(f)
        if not isinstance(fields, dict):
            raise ValueError("not a JSON object")
        config = AutoConfig.for_model(**fields)
    except StrictDataclassError as e:  # transformers 5 configs check their fields' types: say which, in one line
        raise ModelError(f"{path}: {e.__cause__ or str(e).splitlines()[0]}") from e
    except (json.JSONDecodeError, ValueError, KeyError, TypeError) as e:
        # TypeError: no model_type; ValueError also covers a file that is not UTF-8 text.
        raise ModelError(f"{path} is not a Hugging Face model config with a model_type ({e})") from e
    check_model_config(config, path)
    return config


SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "max_position_embeddings")


def check_model_config(config: PretrainedConfig, source) -> None:
    """Sizes a model can be built with, checked before it is: a negative layer count would train with negative
    FLOPs, and heads that do not divide the width fail deep inside torch."""
    from transformers.activations import ACT2FN

    for name in SIZES + (("intermediate_size",) if hasattr(config, "intermediate_size") else ()):
        value = getattr(config, name, None)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ModelError(f"{source}: {name} must be a positive integer, not {value!r}")
    if config.hidden_size % config.num_attention_heads:
        raise ModelError(f"{source}: hidden_size {config.hidden_size} is not divisible by num_attention_heads "
                         f"{config.num_attention_heads}")
    activation = getattr(config, "hidden_act", None) or getattr(config, "activation_function", None)
    if isinstance(activation, str) and activation not in ACT2FN:
        raise ModelError(f"{source}: unknown activation {activation!r}; use one of gelu, relu, gelu_new, silu")


def check_block(config: PretrainedConfig, block_size: int) -> None:
    """A block the model has positions for: an MLM adds [CLS] and [SEP], and RoBERTa's positions start after its
    padding index."""
    needed = block_size + (0 if is_causal(config) else 2)
    needed += (config.pad_token_id or 0) + 1 if config.model_type == "roberta" else 0
    if needed > config.max_position_embeddings:
        raise ModelError(f"--block-size {block_size} needs {needed} positions but the model has "
                         f"max_position_embeddings {config.max_position_embeddings}: lower --block-size or use a "
                         f"config with more positions")


def is_causal(config: PretrainedConfig) -> bool:
    """Decoder-only models (GPT-2) are trained on next-token loss; encoders (BERT, RoBERTa) on masked tokens."""
    return config.model_type == "gpt2"


def auto_class(config: PretrainedConfig):
    return AutoModelForCausalLM if is_causal(config) else AutoModelForMaskedLM


def build_model(config: PretrainedConfig) -> PreTrainedModel:
    # A copy: the model's layers keep a reference to the config and read settings such as the attention
    # implementation from it, so two models built from one config object would change together.
    return auto_class(config).from_config(copy.deepcopy(config), attn_implementation="sdpa")


def is_checkpoint(folder: str | Path) -> bool:
    """A save_pretrained folder: a config and weights (safetensors, or the older pytorch_model.bin)."""
    folder = Path(folder)
    has_weights = any(folder.glob("*.safetensors")) or (folder / "pytorch_model.bin").is_file()
    return (folder / "config.json").is_file() and has_weights


def checkpoint_config(name_or_folder: str | Path) -> PretrainedConfig:
    """The config of a checkpoint folder or Hub id, without its weights: enough to check a run before any work."""
    folder = Path(name_or_folder)
    if folder.exists() and not is_checkpoint(folder):
        raise ModelError(f"{folder} is not a checkpoint folder: it needs config.json and model.safetensors "
                         f"(a folder written by save_pretrained)")
    if is_local(folder) and not folder.exists():
        raise ModelError(f"{folder} does not exist: give a checkpoint folder or a Hub id (owner/repo[/subfolder])")
    where, kwargs = from_pretrained_args(name_or_folder)
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
    except (OSError, ValueError, StrictDataclassError) as e:
        what = "not a checkpoint folder" if folder.exists() else "neither a local checkpoint folder nor one on the Hub"
        raise ModelError(f"{str(name_or_folder)!r} is {what} ({str(e).splitlines()[0]})") from e
    check_model_config(config, name_or_folder)
    return config


def load_model(name_or_folder: str | Path) -> PreTrainedModel:
    """A checkpoint folder, a Hub id, or a subfolder of a Hub repository (the released checkpoints:
    `peihaowang/data-efficient-scaling/bert-12L-64H-0.001D`)."""
    config = checkpoint_config(name_or_folder)
    where, kwargs = from_pretrained_args(name_or_folder)
    try:
        return auto_class(config).from_pretrained(where, attn_implementation="sdpa", **kwargs)
    except (OSError, ValueError, SafetensorError) as e:
        raise ModelError(f"cannot load checkpoint {str(name_or_folder)!r}: {str(e).splitlines()[0]}; if its weights "
                         f"are truncated or corrupt, copy or download them again") from e


def set_dropout(model, dropout: float | None) -> float:
    """Override the model's dropout (under the config's own names, BERT/RoBERTa or GPT-2, so the saved config.json
    says what was trained); returns the dropout the run trains with."""
    names = [n for n in ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop",
                         "attn_pdrop") if hasattr(model.config, n)]
    if dropout is None:
        return getattr(model.config, names[0])
    for name in names:
        setattr(model.config, name, dropout)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = dropout
    return dropout


def mlm_head(model: PreTrainedModel) -> torch.nn.Module:
    for name in ("cls", "lm_head"):  # BertForMaskedLM, RobertaForMaskedLM
        if hasattr(model, name):
            return getattr(model, name)
    raise ModelError(f"{type(model).__name__} has no MLM head (cls or lm_head)")


def head_features(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """The MLM head up to (not including) its vocabulary projection, as each model's own head computes it."""
    if hasattr(model, "cls"):  # BertForMaskedLM
        return model.cls.predictions.transform(hidden)
    head = model.lm_head  # RobertaForMaskedLM: dense, gelu, LayerNorm, decoder
    return head.layer_norm(gelu(head.dense(hidden)))


class LinearCrossEntropy(torch.autograd.Function):
    """sum(cross_entropy(features @ weight.T + bias, labels)), its gradients computed in the forward, chunk by chunk.

    Why by hand: on CPU the unfused projection + cross-entropy writes and re-reads the logits four times (log-softmax,
    its backward, NLL's zero-filled gradient, the bias broadcast): at bert-12L-64H this was a third of the training
    step. Chunks of rows keep each chunk's logits near the cores from the matmul to the gradient (the Liger-Kernel
    idea; its kernels are GPU-only). Each chunk's logits go into one reused buffer and become the gradient in place,
    with one exp per logit: a fresh multi-megabyte tensor per chunk cost page faults, and torch.logsumexp followed by
    a softmax computed every exp twice. Only for training: the gradients are computed whether or not backward
    follows.
    """

    @staticmethod
    def chunk_rows(width: int) -> int:
        """Every chunk reads the whole weight three times (logits, feature and weight gradients), which costs more as
        the width grows, so wider heads take bigger chunks. Measured with benchmarks/bench_head.py --chunks on 2
        cores (AMD EPYC, 1 MB L2 per core, 32 MB L3; 614 rows): 128-512 rows best at d=64, 512 or more at d=256,
        all 614 at d=640; 32 rows were 1.5x slower than that at d >= 256."""
        return max(128, 2 * width)

    @staticmethod
    def forward(ctx, features, weight, bias, labels):
        grad_features = torch.empty_like(features)
        grad_weight, grad_bias = torch.zeros_like(weight), torch.zeros_like(bias)
        loss = features.new_zeros(())
        chunk = LinearCrossEntropy.chunk_rows(weight.shape[1])
        buffer = features.new_empty(min(chunk, len(features)), len(weight))
        for start in range(0, len(features), chunk):
            rows = slice(start, start + chunk)
            x, y = features[rows], labels[rows]
            logits = torch.addmm(bias, x, weight.t(), out=buffer[:len(x)])
            logits.sub_(logits.amax(1, keepdim=True))  # shifted: exp cannot overflow
            target = logits.gather(1, y[:, None]).squeeze(1)
            grad_logits = logits.exp_()
            total = grad_logits.sum(1)
            loss += (total.log() - target).sum()
            grad_logits.div_(total[:, None])[torch.arange(len(y)), y] -= 1.0  # softmax - one_hot(y)
            torch.mm(grad_logits, weight, out=grad_features[rows])
            grad_weight.addmm_(grad_logits.t(), x)
            grad_bias += grad_logits.sum(0)
        ctx.save_for_backward(grad_features, grad_weight, grad_bias)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_features, grad_weight, grad_bias = ctx.saved_tensors
        return grad_features * grad_loss, grad_weight * grad_loss, grad_bias * grad_loss, None


def masked_lm_loss(model: PreTrainedModel, input_ids: torch.Tensor, labels: torch.Tensor,
                   reduction: str = "sum", fused: bool = False) -> torch.Tensor:
    """Cross-entropy over masked positions, with the head computed on those positions only.

    No attention mask: every block has the same length, so nothing is padded. `fused` (chosen by
    reuse.train.use_speed_paths: CPU fp32 training) computes the vocabulary projection and the loss in one step while
    gradients are on; evaluation, and anything without gradients, keeps the library's cross-entropy.
    """
    hidden = model.base_model(input_ids=input_ids).last_hidden_state
    selected = labels != IGNORE_INDEX
    if fused and reduction == "sum" and torch.is_grad_enabled():
        decoder = model.get_output_embeddings()
        return LinearCrossEntropy.apply(head_features(model, hidden[selected]), decoder.weight, decoder.bias,
                                        labels[selected])
    logits = mlm_head(model)(hidden[selected])
    return F.cross_entropy(logits.float(), labels[selected], reduction=reduction)


def causal_lm_loss(model: PreTrainedModel, input_ids: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Next-token cross-entropy over every position but the last of each block."""
    logits = model(input_ids=input_ids).logits[:, :-1]
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1),
                           reduction=reduction)


def count_parameters(model: PreTrainedModel) -> int:
    """Parameters with the tied decoder counted once, as the paper's x-axis."""
    return sum(p.numel() for p in model.parameters())


def flops_per_step(config: PretrainedConfig, sequences: int, seq_len: int, masked_tokens: float) -> float:
    """Training FLOPs (forward + backward = 3x forward) of one step, counting matmuls only.

    Per layer and token: 2 * 12 d^2 for the projections and FFN (with intermediate 4d; the actual size is used),
    and 2 * 2 * seq_len * d for attention scores and values. The head adds 2 * (d^2 + d V) per predicted token
    (masked tokens for MLM; every token for a causal LM, whose head has no d^2 transform: counted all the same).
    """
    d, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    inter = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d
    tokens = sequences * seq_len
    per_token = layers * (2 * (4 * d * d + 2 * d * inter) + 4 * seq_len * d)
    head = 2 * (d * d + d * vocab)
    return 3.0 * (tokens * per_token + masked_tokens * head)


@functools.lru_cache(maxsize=None)
def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None, reps: int = 10,
                budget_s: float = 0.5, clock=None) -> float:
    """The machine's measured matmul throughput (FLOP/s) for the MFU denominator: a spec-sheet peak would flatter
    nothing and is unknown for CPUs. Products of n x n matrices (default 2048 on CPU, 8192 on a GPU, which a smaller
    product does not fill); at most `reps`, stopping once `budget_s` is spent: on 1 CPU thread one 2048^3 product
    takes ~0.3 s, and every training run measures this at start. The fastest product counts, not the mean: a peak
    measured in a slow spell of a shared machine gave MFUs above 100% (benchmarks/bench_train.py, 640H, 2 cores,
    whose steps are timed best-of-rounds too). `clock`: time.perf_counter by default;
    time.process_time measures CPU seconds, for a benchmark on a shared machine that times its steps in CPU seconds
    too."""
    import time

    clock = clock or time.perf_counter
    n = n or (8192 if device.type == "cuda" else 2048)

    # A private generator: drawing from the global one would shift a resumed run's dropout stream.
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, done, fastest = clock(), 0, math.inf
    while done < reps and (done == 0 or clock() - start < budget_s):
        product_start = clock()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        fastest = min(fastest, clock() - product_start)
        done += 1
    return 2 * n ** 3 / fastest
