"""GPU check of the attention backends (run on one H100: ``python benchmarks/gpu/check_attention.py``).

1. parity: every backend (eager, sdpa, flex compiled) x mask (soft alpha=0.3 log_bias and
   prob_scale, soft i_over_l, causal, bidirectional, document) in bf16, GQA, with and without right
   padding, forward and backward, against the float64 reference (max abs error / max abs value
   of the reference, tolerance 2e-2; padding-query outputs get no loss gradient, padded k/v must
   get exactly zero gradient);
2. FlexAttention soft mask at long context (default L = 8192 and 32768; B=1, 32 query / 8 kv heads,
   bf16, fwd+bwd): time and peak memory above the inputs, and a check that the memory does not grow
   like L^2 (the ratio between the two lengths must stay below half of (L2/L1)^2);
3. SDPA fast paths: the no-mask and is_causal paths run under ``sdpa_kernel([FLASH, EFFICIENT])``
   (an error there means SDPA would fall back to the O(L^2) math kernel), and the bias path under
   ``sdpa_kernel([EFFICIENT])``.

Prints one table; exits 1 if any check fails. Needs CUDA; on a machine without it, prints why and
exits 2.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

import torch

from conan_core.masks.base import MaskContext
from conan_core.ops.attention.reference import reference_attention
from conan_core.registries import REGISTRIES

ROWS: list[tuple[str, str, str, str, str]] = []  # (check, status, error, time, memory)
FAILED: list[str] = []

MASKS = {
    "soft0.3": ({"type": "soft"}, 0.3),
    "soft0.3_prob": ({"type": "soft", "apply": "prob_scale"}, 0.3),
    "soft0.7_i/l": ({"type": "soft", "row_scaling": "i_over_l"}, 0.7),
    "causal": ({"type": "causal"}, 0.0),
    "bidirectional": ({"type": "bidirectional"}, 0.0),
    "document": ({"type": "document"}, 0.0),
}


def record(check: str, ok: bool, err: str = "", ms: float | None = None, mib: float | None = None):
    ROWS.append((check, "ok" if ok else "FAIL", err, "" if ms is None else f"{ms:.1f}",
                 "" if mib is None else f"{mib:.0f}"))
    if not ok:
        FAILED.append(check)


def inputs(batch, heads, kv_heads, seq_len, dim, *, padded, alpha, seed=0, dtype=torch.bfloat16):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(batch, heads, seq_len, dim, device="cuda", generator=gen, dtype=dtype)
    k = torch.randn(batch, kv_heads, seq_len, dim, device="cuda", generator=gen, dtype=dtype)
    v = torch.randn(batch, kv_heads, seq_len, dim, device="cuda", generator=gen, dtype=dtype)
    lengths = torch.full((batch,), seq_len, device="cuda")
    if padded:
        lengths[1:] = torch.randint(1, seq_len, (batch - 1,), device="cuda", generator=gen)
    seg = torch.cumsum((torch.rand(batch, seq_len, device="cuda", generator=gen) < 0.01).long(), 1)
    return q, k, v, MaskContext(lengths, seq_len, alpha=alpha, segment_ids=seg)


def fwd_bwd(fn, q, k, v, g):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v)
    (out.to(g.dtype) * g).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


def check_parity(seq_len: int) -> None:
    for mask_name, (spec, alpha) in MASKS.items():
        mask = REGISTRIES["masks"].build(spec)
        for padded in (False, True):
            q, k, v, ctx = inputs(3, 8, 2, seq_len, 64, padded=padded, alpha=alpha, seed=seq_len)
            g = torch.randn(q.shape, device="cuda", dtype=torch.float64)
            for b, length in enumerate(ctx.lengths.tolist()):
                g[b, :, length:] = 0  # losses ignore padding-query outputs (they only read key 0)
            ref = fwd_bwd(lambda a, b, c: reference_attention(a, b, c, mask=mask, ctx=ctx),
                          q.double(), k.double(), v.double(), g)
            for key in ("eager", "sdpa", "flex"):
                name = f"parity {key:5s} {mask_name} L={seq_len}{' pad' if padded else ''}"
                try:
                    backend = REGISTRIES["attention"].build({"type": key})
                    got = fwd_bwd(lambda a, b, c: backend(a, b, c, mask=mask, ctx=ctx), q, k, v, g)
                    # error relative to the tensor's scale: bf16 keeps ~3 significant digits
                    errs = [float((x.double() - y).abs().max() / y.abs().max().clamp_min(1e-6))
                            for x, y in zip(got, ref)]
                    ok = max(errs) < 2e-2 and all(x == x for x in errs)
                    for b, length in enumerate(ctx.lengths.tolist()):  # padded k/v get no gradient
                        ok = ok and bool((got[2][b, :, length:] == 0).all()) and bool((got[3][b, :, length:] == 0).all())
                    record(f"{name} [{backend.last_path}]", ok, f"out {errs[0]:.1e} grad {max(errs[1:]):.1e}")
                except Exception as exc:  # one failing row must not hide the others
                    record(name, False, f"{type(exc).__name__}: {str(exc)[:60]}")
                    traceback.print_exc()


def check_long_flex(lengths: list[int], head_dim: int) -> None:
    mask = REGISTRIES["masks"].build({"type": "soft"})
    backend = REGISTRIES["attention"].build({"type": "flex"})
    peaks = {}
    for seq_len in lengths:
        name = f"flex soft0.3 L={seq_len} B=1 32/8 heads D={head_dim} fwd+bwd"
        try:
            q, k, v, ctx = inputs(1, 32, 8, seq_len, head_dim, padded=False, alpha=0.3)
            q, k, v = (t.requires_grad_() for t in (q, k, v))
            out = backend(q, k, v, mask=mask, ctx=ctx)  # warm-up: compile
            out.sum().backward()
            q.grad = k.grad = v.grad = None
            del out
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            ctx = MaskContext(ctx.lengths, seq_len, alpha=0.3)  # fresh context: block mask rebuilt
            start = time.perf_counter()
            out = backend(q, k, v, mask=mask, ctx=ctx)
            out.sum().backward()
            torch.cuda.synchronize()
            ms = (time.perf_counter() - start) * 1e3
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            peaks[seq_len] = peak
            finite = bool(torch.isfinite(out).all()) and bool(torch.isfinite(q.grad).all())
            record(f"{name} [{backend.last_path}]", finite, "" if finite else "non-finite", ms, peak)
            del q, k, v, out
            torch.cuda.empty_cache()
        except Exception as exc:
            record(name, False, f"{type(exc).__name__}: {str(exc)[:60]}")
            traceback.print_exc()
    if len(peaks) >= 2:
        (l1, m1), (l2, m2) = sorted(peaks.items())[0], sorted(peaks.items())[-1]
        quadratic = (l2 / l1) ** 2
        ratio = m2 / max(m1, 1e-9)
        record(f"flex memory growth L={l1}->{l2}", ratio < quadratic / 2,
               f"x{ratio:.1f} (L^2 would be x{quadratic:.0f})")


def check_sdpa_kernels(seq_len: int) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    sdpa = REGISTRIES["attention"].build({"type": "sdpa"})
    cases = [("none", {"type": "bidirectional"}, 0.0, [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]),
             ("causal", {"type": "causal"}, 0.0, [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]),
             ("causal", {"type": "soft"}, 0.0, [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]),
             ("none", {"type": "soft"}, 1.0, [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]),
             ("bias", {"type": "soft"}, 0.3, [SDPBackend.EFFICIENT_ATTENTION])]
    for path, spec, alpha, kernels in cases:
        for kv_heads in (8, 2):
            name = (f"sdpa path={path} {spec['type']} alpha={alpha} GQA {8 // kv_heads}x "
                    f"under {'+'.join(k.name for k in kernels)}")
            try:
                mask = REGISTRIES["masks"].build(spec)
                q, k, v, ctx = inputs(2, 8, kv_heads, seq_len, 64, padded=False, alpha=alpha)
                q.requires_grad_()
                with sdpa_kernel(kernels):
                    out = sdpa(q, k, v, mask=mask, ctx=ctx)
                    out.sum().backward()
                torch.cuda.synchronize()
                record(name, sdpa.last_path == path, f"took path {sdpa.last_path}")
            except Exception as exc:
                record(name, False, f"{type(exc).__name__}: {str(exc)[:60]}")
                traceback.print_exc()


def print_table() -> None:
    head = ("check", "status", "error / note", "ms", "peak MiB")
    widths = [max(len(str(r[i])) for r in ROWS + [head]) for i in range(5)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    print("\n" + line + "\n" + "-" * len(line))
    for row in ROWS:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    print(f"\n{len(ROWS) - len(FAILED)}/{len(ROWS)} checks passed on {torch.cuda.get_device_name()} "
          f"(torch {torch.__version__})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="8192,32768", help="long-context Flex lengths")
    parser.add_argument("--head-dim", type=int, default=128, help="head dim of the long-context run")
    parser.add_argument("--parity-lengths", default="256,300", help="lengths of the parity checks")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: parity,long,sdpa")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("check_attention.py needs a CUDA GPU; none is available here")
        return 2
    skip = set(filter(None, args.skip.split(",")))
    t0 = time.perf_counter()
    if "parity" not in skip:
        for n in (int(x) for x in args.parity_lengths.split(",")):
            check_parity(n)
    if "sdpa" not in skip:
        check_sdpa_kernels(1024)
    if "long" not in skip:
        check_long_flex([int(x) for x in args.lengths.split(",")], args.head_dim)
    print_table()
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
