"""Next-token cross-entropy with a chunked LM head (pretraining and SFT), key ``causal_lm``."""

from __future__ import annotations

import torch
from pydantic import Field

from conan_core.losses.base import LMLoss, LossInputError, LossOutput
from conan_core.registry import ComponentConfig


class CausalLMLoss(LMLoss):
    """Mean next-token cross-entropy, never materialising all tokens x vocab logits.

    ``forward(hidden [B, L, H], weight [V, H], labels LongTensor[B, L]) -> LossOutput``.

    ``hidden`` are the final (normed) hidden states, ``weight`` the LM head / tied embedding matrix.
    ``labels`` are aligned with the input ids: position t predicts ``labels[:, t + 1]`` (the shift
    happens here); ``ignore_index`` (-100) labels are not counted. SFT masks its prompt this way:
    the collator sets the instruction and input tokens' labels to -100, so only the output is
    learned. The loss is the mean over counted tokens (0, with zero gradients, when none counts).

    Only counted positions are gathered, then processed ``chunk_size`` tokens at a time by a custom
    autograd Function that computes each chunk's logits, log-sum-exp (in place) and, when gradients
    are needed, the gradients wrt the chunk's hidden states and the head right away (softmax -
    one-hot), then frees the chunk: the forward holds one ``[chunk_size, V]`` logits block, and the
    backward only scales the stored gradients (``[T, H]`` and ``[V, H]``), so no chunk's logits are
    kept. Peak extra memory is about ``chunk_size * V`` floats plus the two gradients.

    Dtypes: matmuls run in the autocast dtype inside an autocast region (else the promoted dtype of
    hidden and weight); logits, log-sum-exp and softmax are float32 (float64 for float64 inputs);
    the head gradient accumulates in that float dtype. Metrics: ``tokens`` (counted tokens).
    """

    class Config(ComponentConfig):
        chunk_size: int = Field(4096, gt=0, description="tokens per logits block (peak memory chunk_size x vocab)")
        ignore_index: int = Field(-100, description="label value that is not counted (prompt, padding)")

    def __init__(self, config: Config, **runtime):
        super().__init__(config, **runtime)

    def forward(self, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        if not (isinstance(hidden, torch.Tensor) and hidden.is_floating_point() and hidden.dim() == 3):
            raise LossInputError("causal_lm: hidden must be a float tensor [B, L, H], "
                                 f"got {getattr(hidden, 'shape', hidden)}")
        b, length, h = hidden.shape
        if not (isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[1] == h):
            raise LossInputError(f"causal_lm: weight must be [V, {h}] (vocab x hidden), "
                                 f"got {tuple(getattr(weight, 'shape', ()))}")
        if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or tuple(labels.shape) != (b, length):
            raise LossInputError(f"causal_lm: labels must be an integer tensor [{b}, {length}] aligned with the "
                                 f"input ids, got {tuple(getattr(labels, 'shape', ()))}")
        targets = labels[:, 1:].to(hidden.device)
        counted = targets != self.config.ignore_index
        vocab = weight.shape[0]
        bad = counted & ((targets < 0) | (targets >= vocab))
        if bool(bad.any()):
            raise LossInputError(f"causal_lm: labels outside [0, {vocab}) that are not ignore_index "
                                 f"({self.config.ignore_index}): {targets[bad][:5].tolist()}")

        if torch.is_autocast_enabled(hidden.device.type):
            mm_dtype = torch.get_autocast_dtype(hidden.device.type)
        else:
            mm_dtype = torch.promote_types(hidden.dtype, weight.dtype)
        acc_dtype = torch.float64 if mm_dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            rows = hidden[:, :-1][counted].to(mm_dtype)  # [T, H], only the counted positions
            total = _ChunkedLinearCE.apply(rows, weight.to(mm_dtype), targets[counted],
                                           self.config.chunk_size, acc_dtype,
                                           torch.is_grad_enabled() and hidden.requires_grad,
                                           torch.is_grad_enabled() and weight.requires_grad)
            n_tokens = rows.shape[0]
            loss = total / max(n_tokens, 1)
        return LossOutput(loss=loss, neg_scores=None, metrics={"tokens": float(n_tokens)})


class _ChunkedLinearCE(torch.autograd.Function):
    """Sum over rows of ``logsumexp(x W^T) - (x W^T)[target]`` with gradients computed in forward.

    Inputs: rows [T, H] and weight [V, H] in the same (matmul) dtype, targets LongTensor[T] all valid.
    Output: 0-dim tensor in ``acc_dtype``.
    """

    @staticmethod
    def forward(ctx, rows, weight, targets, chunk_size, acc_dtype, need_rows_grad, need_weight_grad):
        t = rows.shape[0]
        total = torch.zeros((), dtype=acc_dtype, device=rows.device)
        grad_rows = torch.empty_like(rows) if need_rows_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) if need_weight_grad else None
        for start in range(0, t, chunk_size):
            x = rows[start:start + chunk_size]
            y = targets[start:start + chunk_size]
            logits = (x @ weight.T).to(acc_dtype)  # [c, V], the only block of this size alive
            picked = logits.gather(1, y[:, None]).squeeze(1)
            # log-sum-exp in place (torch.logsumexp would allocate a second [c, V] block)
            top = logits.amax(1, keepdim=True)
            probs = logits.sub_(top).exp_()
            norm = probs.sum(1, keepdim=True)
            total += (top + norm.log()).sum() - picked.sum()
            if grad_rows is not None or grad_weight is not None:
                # d(lse - picked)/d logits = softmax - one_hot
                probs.div_(norm)
                probs[torch.arange(len(y), device=y.device), y] -= 1
                g = probs.to(rows.dtype)
                if grad_rows is not None:
                    torch.matmul(g, weight, out=grad_rows[start:start + chunk_size])
                if grad_weight is not None:
                    if g.dtype == acc_dtype:
                        grad_weight.addmm_(g.T, x)
                    else:
                        grad_weight += (g.T @ x).to(acc_dtype)
                del g
            # free this block before the next matmul allocates its own: one [c, V] block alive at a time
            del logits, probs
        ctx.save_for_backward(*(v for v in (grad_rows, grad_weight) if v is not None))
        ctx.has = (grad_rows is not None, grad_weight is not None)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        saved = iter(ctx.saved_tensors)
        has_rows, has_weight = ctx.has
        grad_rows = next(saved) * grad_total if has_rows else None  # keeps the rows' dtype
        grad_weight = (next(saved) * grad_total).to(ctx.weight_dtype) if has_weight else None
        return grad_rows, grad_weight, None, None, None, None, None
