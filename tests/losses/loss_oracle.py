"""Direct float64 implementations of the loss formulas, one query / pair at a time (test oracle)."""

from __future__ import annotations

import torch


def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.double(), b.double()
    return (a @ b) / (a.norm() * b.norm())


def info_nce(query, positive, negatives=None, *, temperature=0.05, in_batch=True,
             positive_ids=None, negative_ids=None, query_ids=None, mask=True) -> torch.Tensor:
    """Mean over queries of -log(exp(s_pos / t) / sum over kept candidates exp(s_c / t))."""
    b = query.shape[0]
    n = 0 if negatives is None else negatives.shape[1]
    losses = []
    for i in range(b):
        # (embedding, text id or None, is the target)
        cands = []
        if in_batch:
            for j in range(b):
                cands.append((positive[j], None if positive_ids is None else int(positive_ids[j]), j == i, j))
            for j in range(b):
                for k in range(n):
                    nid = None if negative_ids is None else int(negative_ids[j, k])
                    cands.append((negatives[j, k], nid, False, None))
        else:
            cands.append((positive[i], None if positive_ids is None else int(positive_ids[i]), True, i))
            for k in range(n):
                cands.append((negatives[i, k], None if negative_ids is None else int(negative_ids[i, k]), False, None))
        num = None
        den = torch.zeros((), dtype=torch.float64)
        for emb, cid, target, pos_row in cands:
            s = torch.exp(cos(query[i], emb) / temperature)
            if target:
                num = s
                den = den + s
                continue
            if mask and cid is not None and positive_ids is not None and cid == int(positive_ids[i]):
                continue
            if mask and query_ids is not None:
                if cid is not None and cid == int(query_ids[i]):
                    continue
                if pos_row is not None and int(query_ids[pos_row]) == int(query_ids[i]):
                    continue
            den = den + s
        losses.append(-torch.log(num / den))
    return torch.stack(losses).mean()


def cosent(e1, e2, scores, *, tau=0.05) -> torch.Tensor:
    c = [cos(e1[i], e2[i]) for i in range(e1.shape[0])]
    total = torch.ones((), dtype=torch.float64)
    for i in range(len(c)):
        for j in range(len(c)):
            if scores[i] > scores[j]:
                total = total + torch.exp((c[j] - c[i]) / tau)
    return torch.log(total)
