"""Training losses. Legend: B batch, T' model output frames, C classes, L tokens.

Hard-label cross-entropy, the CTC loss on token sequences (``ctc``), and the KD losses of
``learn --targets`` on sparse teacher targets (``sparse_kd``, ``sampled_kd``,
``multitask``) with a dense reference (``dense_kd``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # label value that never contributes to a loss (padding)


def align_frame_labels(
    y: torch.Tensor, subsampling: int, out_lengths: torch.Tensor, out_frames: int
) -> torch.Tensor:
    """Frame labels (B, T) at the model's output rate (B, T'); frames past a length -> IGNORE.

    Output frame ``j`` of a model that subsamples by ``s`` is trained on input frame
    ``j * s`` (see ``batching.subsample_labels``).
    """
    y = y[:, ::subsampling][:, :out_frames]  # (B, <=T')
    if y.shape[1] < out_frames:  # a model may emit one more frame than ceil(T / s) rounding
        pad = y.new_full((y.shape[0], out_frames - y.shape[1]), IGNORE)
        y = torch.cat([y, pad], dim=1)  # (B, T')
    valid = torch.arange(out_frames, device=y.device)[None, :] < out_lengths[:, None]  # (B, T')
    return y.masked_fill(~valid, IGNORE)


def hard_ce(
    logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, int, int]:
    """Mean cross-entropy to hard labels, plus (correct, counted) for accuracy.

    ``logits`` (B, T', C) with ``y`` (B, T') (IGNORE = skip), or (B, C) with ``y`` (B,).
    """
    flat = logits.reshape(-1, logits.shape[-1])  # (B*T', C) or (B, C)
    target = y.reshape(-1)  # (B*T',) or (B,)
    keep = target != IGNORE
    n = int(keep.sum())
    if n == 0:
        return logits.sum() * 0.0, 0, 0
    loss = F.cross_entropy(
        flat[keep], target[keep], label_smoothing=label_smoothing
    )  # mean over counted frames
    correct = int((flat[keep].argmax(-1) == target[keep]).sum())
    return loss, correct, n


def ctc_min_frames(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B,) the fewest output frames a CTC path for each (B, L) token row needs: its L_b
    tokens plus one blank between each pair of equal neighbours (Graves et al. 2006)."""
    valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None]
    repeats = (tokens[:, 1:] == tokens[:, :-1]) & valid[:, 1:]  # (B, L - 1)
    return lengths + repeats.sum(1)


def ctc(
    logits: torch.Tensor,
    out_lengths: torch.Tensor,
    tokens: torch.Tensor,
    token_lengths: torch.Tensor,
    blank: int = 0,
) -> torch.Tensor:
    """(B,) CTC loss per utterance: -log sum over the alignments of ``tokens`` of the path
    probability (Graves, Fernandez, Gomez and Schmidhuber, "Connectionist temporal
    classification", ICML 2006), computed by ``torch.nn.functional.ctc_loss``.

    ``logits`` (B, T', C), ``out_lengths`` (B,), ``tokens`` (B, L) label indices (IGNORE or
    anything past ``token_lengths``), ``token_lengths`` (B,). Callers check that every
    utterance has ``ctc_min_frames`` output frames (an impossible one would be inf).
    """
    logp = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T', B, C)
    targets = tokens.clamp(min=0)  # (B, L): padding read as class 0, past the lengths
    return F.ctc_loss(
        logp, targets, out_lengths, token_lengths, blank=blank, reduction="none",
        zero_infinity=False,
    )  # fmt: skip


# -- knowledge distillation on sparse targets ----------------------------------------------
#
# Sparse targets, N rows (frames or clips) of a batch, K kept entries per row at most:
#   idx  (N, K) int64 class indices (any value in empty slots),
#   logp (N, K) float teacher log-probabilities at T = 1 (-inf marks an empty slot),
#   tail (N,)   float log of the teacher mass not kept (-inf: nothing left).
# Student ``logits`` are (N, C). Every function returns a per-row loss (N,); callers mask
# and average. Nothing of shape (N, C) is built from the targets: the kept classes are
# gathered from the student's log-softmax, and the tail enters through sums over all C.

TAIL_RULES = ("renorm", "uniform")


def _xlogy_rows(p: torch.Tensor, logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """sum_k p_k (logp_k - logq_k) over the last axis, treating p_k = 0 as contributing 0."""
    term = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))
    return term.sum(-1)


def sparse_kd(
    logits: torch.Tensor,
    idx: torch.Tensor,
    logp: torch.Tensor,
    tail: torch.Tensor,
    temperature: float = 1.0,
    tail_rule: str = "renorm",
) -> torch.Tensor:
    """Per-row T^2 * KL(p_T || q_T) between sparse teacher targets and the student.

    Formula (Hinton, Vinyals & Dean, "Distilling the knowledge in a neural network",
    2015): q_T = softmax(z / T) for student logits z; the teacher's stored log-probs
    (T = 1) are re-tempered as p_T,i ∝ exp(log p_i / T) = p_i^(1/T); the loss is
    T^2 * sum_i p_T,i (log p_T,i - log q_T,i), whose gradient T * (q_T - p_T) keeps the
    same magnitude as the hard-label gradient whatever T (Hinton et al., section 2). KL
    equals the soft cross-entropy -sum p_T log q_T minus the teacher entropy (a constant),
    so the gradients are those of the soft cross-entropy of Li et al., Interspeech 2014.

    The mass not kept (the tail, m = exp(tail)) follows ``tail_rule``:

    - ``renorm``: dropped; p is renormalised over the kept classes (p_i / sum_kept p),
      as top-k KD does (Parthasarathi & Strom, ICASSP 2019);
    - ``uniform``: spread evenly over the r = C - K_row classes not kept, each getting
      m / r at T = 1, then re-tempered like the rest: the rest terms are
      sum_{j not kept} p_T,rest (log p_T,rest - log q_T,j), where sum_{j not kept} log q_j
      = sum_all log q_j - sum_kept log q_j (no (N, C) target is built).

    Shapes: logits (N, C), idx (N, K), logp (N, K) with -inf in empty slots, tail (N,);
    returns (N,).
    """
    if tail_rule not in TAIL_RULES:
        raise ValueError(f"tail rule must be one of {TAIL_RULES}, got {tail_rule!r}")
    t = float(temperature)
    logq = F.log_softmax(logits.float() / t, dim=-1)  # (N, C)
    lq = logq.gather(1, idx)  # (N, K) student log-probs of the kept classes
    valid = torch.isfinite(logp)  # (N, K)
    a = logp.float() / t  # (N, K) untempered-then-tempered log weights, -inf in empty slots
    if tail_rule == "renorm":
        log_z = torch.logsumexp(a, dim=1, keepdim=True)  # (N, 1)
        lpt = a - log_z  # (N, K)
        return t * t * _xlogy_rows(lpt.exp(), lpt, lq)
    c = logits.shape[-1]
    rest = (c - valid.sum(1)).to(a.dtype)  # (N,) classes not kept
    has_rest = (rest > 0) & torch.isfinite(tail)  # (N,)
    safe_rest = rest.clamp(min=1)
    per = torch.where(has_rest, (tail.float() - safe_rest.log()) / t, -torch.inf)  # (N,)
    rest_total = torch.where(has_rest, safe_rest.log() + per, -torch.inf)  # (N,) log mass
    log_z = torch.logsumexp(torch.cat([a, rest_total[:, None]], dim=1), dim=1)  # (N,)
    lpt = a - log_z[:, None]  # (N, K)
    kept = _xlogy_rows(lpt.exp(), lpt, lq)  # (N,)
    lp_rest = per - log_z  # (N,) log p_T of each class not kept
    sum_rest_logq = logq.sum(1) - torch.where(valid, lq, torch.zeros_like(lq)).sum(1)  # (N,)
    p_rest = torch.where(has_rest, lp_rest.exp(), torch.zeros_like(lp_rest))  # (N,)
    rest_term = torch.where(
        has_rest, p_rest * (rest * lp_rest - sum_rest_logq), torch.zeros_like(p_rest)
    )
    return t * t * (kept + rest_term)


def dense_kd(logits: torch.Tensor, probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Dense reference: per-row T^2 * KL(p_T || q_T) with the full (N, C) teacher ``probs``.

    Same formula as ``sparse_kd`` (Hinton et al. 2015), p_T ∝ p^(1/T), over all C classes.
    Used to check the sparse losses and as the "dense KD" baseline of the benchmarks.
    Shapes: logits (N, C), probs (N, C) (rows need not sum to 1); returns (N,).
    """
    t = float(temperature)
    with torch.no_grad():
        lp = torch.log(probs.float()) / t  # (N, C), -inf where p = 0
        lpt = lp - torch.logsumexp(lp, dim=1, keepdim=True)  # (N, C)
    logq = F.log_softmax(logits.float() / t, dim=-1)  # (N, C)
    return t * t * _xlogy_rows(lpt.exp(), lpt, logq)


def sampled_kd(logits: torch.Tensor, idx: torch.Tensor, logw: torch.Tensor) -> torch.Tensor:
    """Per-row importance-weighted soft cross-entropy for the ``sample`` essence.

    A ``sample(n)`` row holds the distinct classes of n draws i_1..i_n from the teacher p
    with weight w_i = count_i / n (stored as log w). With proposal π = p the importance
    weight of a draw is p / π = 1, so (Anshumann et al., "Sparse logit sampling", ACL 2025)

        L = -sum_i w_i log q_i = -(1/n) sum_s log q_{i_s},   E[L] = -sum_i p_i log q_i,

    and E[grad_z L] = E[q - w] = q - p: the gradient of the full soft cross-entropy,
    unbiased. Weights are renormalised per row (they sum to 1 before the store's code
    rounding). Only T = 1 is unbiased: re-tempering needs p_i, which a sample does not
    record. Shapes: logits (N, C), idx (N, K), logw (N, K) with -inf in empty slots;
    returns (N,) the cross-entropy (not a KL: the sampled target's entropy is not the
    teacher's).
    """
    logq = F.log_softmax(logits.float(), dim=-1)  # (N, C)
    lq = logq.gather(1, idx)  # (N, K)
    w = torch.softmax(logw.float(), dim=1)  # (N, K) renormalised weights, 0 in empty slots
    return -(torch.where(w > 0, w * lq, torch.zeros_like(lq))).sum(1)


def multitask(soft: torch.Tensor, hard: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * soft + (1 - alpha) * hard: the multitask interpolation of KD (Hinton et al.
    2015, section 2; used with stored essences by Parthasarathi & Strom 2019). alpha = 1 is
    teacher targets only, alpha = 0 hard labels only (the unused term is skipped, not
    multiplied by 0, so a NaN in it cannot leak)."""
    if alpha >= 1.0:
        return soft
    if alpha <= 0.0:
        return hard
    return alpha * soft + (1.0 - alpha) * hard
