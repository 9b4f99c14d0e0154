"""The chance that one sampled answer is exactly a problem's reference fix, computed, not sampled.

One teacher-forced forward pass over prompt + reference answer (the line edit and the closing
fence, as adapters are trained to write it) gives the model's distribution at every answer
token. Warped by the genome's knobs with the same logits processors sampling uses
(coral.model.generate), the product of the reference tokens' probabilities is the probability
that sampling writes the reference answer, token for token, up to the end-of-answer marker where
generation stops. One generate call of a run's budget holds about one full repair per genome
(docs/objectives.md, "repair"); this number is that rate's exact expectation for the reference
fix, and moves with every token of every instance, with the heavy genes and the knobs.

It is a lower bound on the chance of a repair: an answer that fixes the bug another way, or
spells the reference with other tokens, is not counted. Deterministic for a given base, adapter,
device type and thread count (no random draw is involved).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers.generation.logits_process import LogitsProcessorList

from coral.benchmark.prompts import END_OF_ANSWER
from coral.config import GenerationConfig
from coral.evolution.genome import Knobs
from coral.model.generate import knob_warpers, merged_adapter
from coral.model.loading import LoadedModel
from coral.model.train import encode_pair


def answer_tokens(base: LoadedModel, prompt: str, answer: str, max_length: int) -> tuple[list[int], int, int]:
    """(ids, prompt length, answer tokens scored): prompt + answer as training tokenises it, the
    answer scored up to the token that completes the end-of-answer marker (generation stops
    there). An answer that does not fit in max_length tokens has 0 tokens scored: no chance."""
    ids, n_prompt = encode_pair(base.tokenizer, prompt, answer, 1 << 30)
    tail = ids[n_prompt:]
    n_answer = next((j + 1 for j in range(len(tail))
                     if END_OF_ANSWER in base.tokenizer.decode(tail[: j + 1], skip_special_tokens=True)),
                    len(tail))
    ids = ids[: n_prompt + n_answer]
    return (ids, n_prompt, n_answer) if len(ids) <= max_length else (ids, n_prompt, 0)


def reference_logprobs(base: LoadedModel, adapter_dir: Path | None, pairs: Sequence[tuple[str, str]],
                       knobs: Knobs, *, max_length: int, batch_size: int,
                       greedy: bool = False) -> list[float]:  # fmt: skip
    """log P(one answer sampled at `knobs` is exactly `answer`) for each (prompt, answer), in order.

    -inf where sampling cannot write it: a token top-k or top-p cuts, an answer longer than
    knobs.max_new_tokens, or prompt + answer longer than max_length. With greedy=True, 0 where
    argmax decoding writes the answer, else -inf.
    """
    encoded = [answer_tokens(base, prompt, answer, max_length) for prompt, answer in pairs]
    out = {i: -math.inf for i, (_, _, n) in enumerate(encoded) if n == 0 or n > knobs.max_new_tokens}
    scored = sorted((i for i in range(len(encoded)) if i not in out), key=lambda i: len(encoded[i][0]))
    warpers = knob_warpers(knobs, greedy)
    with base.lock, merged_adapter(base, adapter_dir), torch.inference_mode():
        for start in range(0, len(scored), batch_size):  # rows of like length share a batch
            rows = scored[start:start + batch_size]
            # Left padding, as generation pads: every answer ends in the last column, so only the
            # last (longest answer + 1) positions' logits are computed, not the prompt's.
            width = max(len(encoded[i][0]) for i in rows)
            ids = torch.full((len(rows), width), base.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, width - len(encoded[i][0]):] = torch.tensor(encoded[i][0])
                mask[r, width - len(encoded[i][0]):] = 1
            keep = max(encoded[i][2] for i in rows) + 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = base.model(input_ids=ids.to(base.device), attention_mask=mask.to(base.device),
                                position_ids=positions.to(base.device), logits_to_keep=keep).logits.float()
            for r, i in enumerate(rows):
                n_answer = encoded[i][2]
                # the logits at the answer's positions, each predicting the next token
                out[i] = _answer_logprob(encoded[i], logits[r, keep - 1 - n_answer: keep - 1], warpers, greedy)
    return [out[i] for i in range(len(encoded))]


def _answer_logprob(encoded: tuple[list[int], int, int], steps: torch.Tensor,
                    warpers: LogitsProcessorList, greedy: bool) -> float:  # fmt: skip
    ids, n_prompt, n_answer = encoded
    # Each step sees the tokens before it, as generation's `seen` does (the repetition penalty
    # reads them); shorter prefixes are filled with their own first token, which the penalty,
    # a set operation, counts once.
    row = torch.tensor(ids, device=steps.device)
    seen = torch.stack([torch.cat([row[:p], row[:1].expand(len(ids) - 1 - p)])
                        for p in range(n_prompt, n_prompt + n_answer)])
    scores = warpers(seen, steps)  # type: ignore[arg-type]  # token ids (int64); annotated as legacy LongTensor
    target = row[n_prompt:]
    if greedy:
        return 0.0 if bool((scores.argmax(-1) == target).all()) else -math.inf
    logp = torch.log_softmax(scores, dim=-1).gather(-1, target[:, None]).squeeze(-1)
    return float(logp.double().sum())


def chance_within(logprob: float, k: int) -> float:
    """The chance that k independent answers include one with log-probability `logprob`."""
    if logprob == -math.inf:
        return 0.0
    p = math.exp(logprob)
    if p >= 1.0:
        return 1.0
    return -math.expm1(k * math.log1p(-p))  # 1 - (1 - p)^k, exact for tiny p too


def fix_chances(base: LoadedModel, adapter_dir: Path | None, prompts: Sequence[str], answers: Sequence[str],
                knobs: Knobs, generation: GenerationConfig, k: int, *, greedy: bool = False) -> list[float]:
    """Each prompt's fix_chance objective (docs/objectives.md): the chance that k answers sampled
    at `knobs`, within the generation config's prompt limit, include its reference `answer`."""
    logprobs = reference_logprobs(base, adapter_dir, list(zip(prompts, answers, strict=True)), knobs,
                                  max_length=generation.max_prompt_length + knobs.max_new_tokens,
                                  batch_size=generation.batch_size, greedy=greedy)
    return [chance_within(lp, k) for lp in logprobs]
