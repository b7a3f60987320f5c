"""What a model is trained and scored on. One object per kind of model owns the input ids built from token blocks,
the targets, and the summed loss, so the masked-LM-versus-causal-LM branch is taken once, in `objective_for`.

- `MaskedLM` (BERT, RoBERTa): [CLS] + block + [SEP]; BERT's 15% masking (reuse.data.mask_tokens); the loss over the
  masked positions only.
- `CausalLM` (GPT-2): the block itself; every next token is predicted.

`predicted` (the number of tokens a batch predicts) is a 0-d tensor on the batch's device, so the training step
never waits on the device to learn it.
"""

from __future__ import annotations

import torch

from reuse.data import IGNORE_INDEX, add_special_tokens, mask_tokens, special_ids
from reuse.model import causal_lm_loss, is_causal, masked_lm_loss


class MaskedLM:
    causal = False

    def __init__(self, tokenizer, mlm_probability: float = 0.15, fused_head: bool = False):
        self.cls_id, self.sep_id, self.mask_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.special = special_ids(tokenizer)
        self.mlm_probability = mlm_probability
        self.fused_head = fused_head  # set by reuse.train.use_speed_paths: CPU fp32 training only

    def seq_len(self, block_size: int) -> int:
        return block_size + 2

    def input_ids(self, blocks: torch.Tensor) -> torch.Tensor:
        return add_special_tokens(blocks, self.cls_id, self.sep_id)

    def targets(self, input_ids: torch.Tensor, generator: torch.Generator | None = None):
        """(inputs, labels, predicted): masks drawn on input_ids' device, from `generator` (the global one if None)."""
        special = self.special.to(input_ids.device)
        inputs, labels = mask_tokens(input_ids, special, self.mask_id, self.vocab_size, self.mlm_probability,
                                     generator=generator)
        return inputs, labels, (labels != IGNORE_INDEX).sum()

    def loss_sum(self, model, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return masked_lm_loss(model, inputs, labels, fused=self.fused_head)


class CausalLM:
    causal = True
    fused_head = False

    def seq_len(self, block_size: int) -> int:
        return block_size

    def input_ids(self, blocks: torch.Tensor) -> torch.Tensor:
        return blocks.long()

    def targets(self, input_ids: torch.Tensor, generator: torch.Generator | None = None):
        predicted = torch.tensor(input_ids.shape[0] * (input_ids.shape[1] - 1), device=input_ids.device)
        return input_ids, input_ids, predicted

    def loss_sum(self, model, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return causal_lm_loss(model, inputs)


def objective_for(config, tokenizer, mlm_probability: float = 0.15) -> MaskedLM | CausalLM:
    return CausalLM() if is_causal(config) else MaskedLM(tokenizer, mlm_probability)


class LossModule(torch.nn.Module):
    """The summed loss as a module, so that DDP (which reduces gradients through its wrapper's forward) and
    torch.compile see the whole computation."""

    def __init__(self, model, objective: MaskedLM | CausalLM):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, inputs, labels):
        return self.objective.loss_sum(self.model, inputs, labels)
