"""One batched generation call per genome, with its adapter merged into the weights.

Per-step overhead dominates decoding, so a genome's evaluation problems x samples go through in
as few forward passes as GenerationConfig.batch_size allows, on plain (merged) weights. The
layers the adapter touches are copied first and copied back afterwards, bit for bit: the shared
base never carries one genome's adapter into the next job.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import DynamicCache, PreTrainedTokenizerBase
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from coral.benchmark.prompts import END_OF_ANSWER
from coral.config import GenerationConfig
from coral.errors import AdapterError, CoralError
from coral.evolution.genome import Knobs
from coral.model.adapters import AdapterInfo, check_base, read_adapter
from coral.model.loading import LoadedModel, quiet_peft_wrap, strip_adapters
from coral.rng import torch_seed


@contextmanager
def merged_adapter(base: LoadedModel, adapter_dir: Path | None) -> Iterator[AdapterInfo | None]:
    """Within the block, base.model's weights include the adapter; afterwards they are restored."""
    if adapter_dir is None:
        yield None
        return
    info = read_adapter(Path(adapter_dir))  # whole and intact, or AdapterError naming the file
    check_base(info, base.fingerprint)
    try:
        with quiet_peft_wrap():
            wrapped = PeftModel.from_pretrained(base.model, str(adapter_dir), is_trainable=False)
    except (ValueError, RuntimeError, OSError, KeyError) as exc:
        strip_adapters(base.model)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AdapterError(f"adapter {adapter_dir}: cannot apply to this base ({first})") from None
    originals = [
        (layer.get_base_layer(), _weight(layer.get_base_layer()).detach().clone())
        for layer in wrapped.modules()
        if isinstance(layer, BaseTunerLayer)
    ]
    try:
        wrapped.merge_and_unload()
        yield info
    finally:
        strip_adapters(base.model)
        with torch.no_grad():
            for layer, weight in originals:
                _weight(layer).copy_(weight)


def _weight(layer: torch.nn.Module) -> torch.Tensor:
    weight = layer.weight
    if not isinstance(weight, torch.Tensor):
        raise AdapterError(f"adapted layer {type(layer).__name__} has no weight tensor")
    return weight


def generate_for_genome(
    base: LoadedModel,
    adapter_dir: Path | None,
    prompts: Sequence[str],
    knobs: Knobs,
    seed: int,
    generation: GenerationConfig,
    *,
    greedy: bool = False,
    ignore_eos: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """The text generated after each prompt, cut after the end-of-answer marker.

    `progress(done, total)` is called after each batch of rows (`coral bench eval` reports it).

    The caller repeats each prompt `samples` times. Sampling follows the knobs, seeded from
    `seed` (same seed, same text); greedy=True decodes by argmax (baselines, tests).
    ignore_eos=True always generates knobs.max_new_tokens tokens (throughput benchmarks).
    """
    if not prompts:
        return []
    encoded = encode_prompts(base, prompts, generation.max_prompt_length)
    # Rows sorted by prompt length (stable), so a batch pads to similar lengths; the answers go
    # back to the caller's order at the end.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    texts: dict[int, str] = {}
    with base.lock, merged_adapter(base, adapter_dir), torch.inference_mode():
        for index, start in enumerate(range(0, len(order), generation.batch_size)):
            rows = order[start : start + generation.batch_size]
            chunk_seed = torch_seed(seed, "generate", f"chunk-{index}")
            answers = _generate_chunk(base, [encoded[i] for i in rows], knobs, chunk_seed, greedy, ignore_eos)
            texts.update(zip(rows, answers, strict=True))
            if progress is not None:
                progress(len(texts), len(encoded))
    return [texts[i] for i in range(len(encoded))]


def encode_prompts(base: LoadedModel, prompts: Sequence[str], max_length: int) -> list[list[int]]:
    out = []
    for number, prompt in enumerate(prompts):
        ids = list(base.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        if len(ids) > max_length:
            raise CoralError(
                f"prompt {number} is {len(ids)} tokens, over generation.max_prompt_length="
                f"{max_length}; raise that limit"
            )
        out.append(ids)
    return out


def _left_pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left padding: every row's last prompt token sits in the last column, where decoding goes on."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids, mask


def knob_warpers(knobs: Knobs, greedy: bool) -> LogitsProcessorList:
    """The knobs as transformers' own logits processors, in the order `generate` applies them."""
    steps = LogitsProcessorList()
    if knobs.repetition_penalty != 1.0:
        steps.append(RepetitionPenaltyLogitsProcessor(knobs.repetition_penalty))
    if not greedy:
        if knobs.temperature != 1.0:
            steps.append(TemperatureLogitsWarper(knobs.temperature))
        if knobs.top_k > 0:
            steps.append(TopKLogitsWarper(knobs.top_k))
        if knobs.top_p < 1.0:
            steps.append(TopPLogitsWarper(knobs.top_p))
    return steps


def _generate_chunk(
    base: LoadedModel,
    rows: Sequence[list[int]],
    knobs: Knobs,
    seed: int,
    greedy: bool,
    ignore_eos: bool,
) -> list[str]:
    """Decode one batch: each distinct prompt is read once (the samples of a prompt share its
    key/value cache), then every row samples token by token until it ends.

    A row ends at end-of-sequence, after the end-of-answer marker, when it repeats itself (see
    `_looping`) or at max_new_tokens. Ended rows leave the batch (in halvings), so an answer
    stuck in a loop costs its own steps, not its whole batch's.
    """
    model, tokenizer, device = base.model, base.tokenizer, base.device
    distinct: dict[tuple[int, ...], int] = {}
    source = torch.tensor([distinct.setdefault(tuple(r), len(distinct)) for r in rows], device=device)
    ids, mask = (t.to(device) for t in _left_pad([list(r) for r in distinct], tokenizer.pad_token_id))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                use_cache=True, logits_to_keep=1)  # fmt: skip
    cache.batch_select_indices(source)
    logits = out.logits[source, -1].float()
    seen, mask, position = ids[source], mask[source], positions[source, -1:] + 1
    warpers = knob_warpers(knobs, greedy)
    stops = end_ids(base)
    generator = torch.Generator(device=device).manual_seed(seed)
    live = list(range(len(rows)))  # batch row -> row of the chunk
    answers: list[list[int]] = [[] for _ in rows]
    ended = [False] * len(rows)
    for step in range(knobs.max_new_tokens):
        scores = warpers(seen, logits)  # type: ignore[arg-type]  # token ids (int64); annotated as legacy LongTensor
        if ignore_eos:  # as transformers' min_new_tokens: end-of-sequence is never chosen
            scores[:, stops] = -math.inf
        if greedy:
            token = scores.argmax(-1)
        else:
            token = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)
        for row, value in zip(live, token.tolist(), strict=True):
            if not ended[row]:
                answers[row].append(value)
                ended[row] = not ignore_eos and _ended(tokenizer, stops, answers[row])
        keep = [batch_row for batch_row, row in enumerate(live) if not ended[row]]
        if not keep or step + 1 == knobs.max_new_tokens:
            break
        # Ended rows leave once they are half the batch: selecting rows copies the whole cache
        # (gigabytes for a 7B model), so it happens log2(batch) times at most, not once a row.
        if len(keep) <= len(live) // 2:
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            live = [live[i] for i in keep]
            token, seen, mask, position = token[index], seen[index], mask[index], position[index]
        seen = torch.cat([seen, token[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position,
                    cache=cache, use_cache=True)  # fmt: skip
        logits, position = out.logits[:, -1].float(), position + 1
    # No "clean-up" of spaces: it would rewrite code (e.g. "f(a , b)" -> "f(a, b)").
    decode = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}
    return [cut_at_end(tokenizer.decode(_before_eos(answer, stops), **decode))  # type: ignore[arg-type]  # one id list decodes to one str
            for answer in answers]


# An answer whose last LOOP_NGRAM tokens already occurred LOOP_REPEATS times before is stuck
# (a small model's failure: the same phrase over and over), never a real edit, and would
# otherwise run to max_new_tokens.
LOOP_NGRAM = 12
LOOP_REPEATS = 2


def end_ids(base: LoadedModel) -> list[int]:
    """The tokens that end an answer, as `generate` reads them: the tokenizer's EOS and every
    eos_token_id of the model's generation config (Llama-3-Instruct ends a turn with <|eot_id|>,
    Qwen2-Instruct with <|im_end|>, while the tokenizer's EOS is another token)."""
    configured = getattr(base.model.generation_config, "eos_token_id", None)
    listed = configured if isinstance(configured, list) else [configured]
    ids = [base.tokenizer.eos_token_id, *listed]
    return list(dict.fromkeys(i for i in ids if isinstance(i, int)))


def _ended(tokenizer: PreTrainedTokenizerBase, stops: Sequence[int], answer: list[int]) -> bool:
    """End-of-sequence, the end-of-answer marker just written, or a loop."""
    if answer[-1] in stops:
        return True
    if END_OF_ANSWER in tokenizer.decode(answer[-6:], skip_special_tokens=True):
        return True
    return _looping(answer)


def _looping(answer: list[int]) -> bool:
    n = LOOP_NGRAM
    if len(answer) < n * (LOOP_REPEATS + 1):
        return False
    tail = answer[-n:]
    return sum(answer[i : i + n] == tail for i in range(len(answer) - n)) >= LOOP_REPEATS


def _before_eos(row: list[int], stops: Sequence[int]) -> list[int]:
    ends = [i for i, token in enumerate(row) if token in stops]
    return row[: ends[0]] if ends else row


def cut_at_end(text: str) -> str:
    """Keep the answer up to and including the first end-of-answer marker."""
    at = text.find(END_OF_ANSWER)
    return text if at < 0 else text[: at + len(END_OF_ANSWER)]
