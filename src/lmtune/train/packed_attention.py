"""Per-document attention for packed rows (CPU training).

A packed row holds several examples back to back. transformers gives SDPA a block-diagonal mask
for it, so every layer computes all row-length x row-length scores and masks most of them away.
TRL's padding-free collator also passes the document boundaries (`cu_seq_lens_q`), so each
document can run its own causal SDPA instead: the same result (a test compares outputs and
gradients), a fraction of the work. Measured on the embedded base (512-token rows of about 3.4
SQL examples): 1.09x the training tokens/s (1.13x in a one-thread profile; benchmarks/README.md).

On GPUs flash-attention kernels already take the boundaries natively, so lmtune enables this only
on CPU, and only for models whose every layer is plain causal attention
(`lmtune.models.use_training_attention`: models with sliding-window or chunked layers keep their
own masks, some of which never reach the attention function). Anything unusual at run time falls
back to transformers' own SDPA path with the mask it built: several rows per batch, a KV cache
(generation), a sliding window shorter than a document, an encoder (non-causal) module, softcapping.
"""

from __future__ import annotations

NAME = "lmtune_packed_sdpa"


def register() -> str:
    """Make NAME a valid `attn_implementation` (idempotent); its masks are SDPA's, for the fallback."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, packed_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def packed_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                is_causal=None, **kwargs):
    """Same signature and output layout ([batch, seq, heads, head_dim], None) as transformers'
    sdpa_attention_forward, which does the work for each document."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = _document_bounds(module, query, key, is_causal, kwargs)
    if bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    parts = [sdpa_attention_forward(module, query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], None,
                                    dropout=dropout, scaling=scaling, is_causal=True)[0]
             for s, e in zip(bounds[:-1], bounds[1:]) if e > s]
    return torch.cat(parts, dim=1), None


def _document_bounds(module, query, key, is_causal, kwargs) -> list[int] | None:
    """Document start offsets plus the row end, or None when per-document SDPA does not apply."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return None        # not one padding-free packed row, or keys from a cache
    if is_causal is False or not getattr(module, "is_causal", True):
        return None
    if kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None:
        return None        # SDPA's own path handles (or refuses) these
    bounds = [int(b) for b in cu.tolist()]
    if bounds[0] != 0 or bounds[-1] != query.shape[2]:
        return None        # boundaries that do not describe this row
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
    if window is not None and max(e - s for s, e in zip(bounds[:-1], bounds[1:])) > window:
        return None        # a causal window shorter than a document needs the model's own mask
    return bounds
