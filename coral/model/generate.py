"""One batched generation call per genome, with its adapter merged into the weights.

Per-step overhead dominates decoding, so a genome's evaluation problems x samples go through in
as few forward passes as GenerationConfig.batch_size allows, on plain (merged) weights. The
layers the adapter touches are copied first and copied back afterwards, bit for bit: the shared
base never carries one genome's adapter into the next job.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import GenerationConfig as HFGenerationConfig

from coral.benchmark.prompts import END_OF_ANSWER
from coral.config import GenerationConfig
from coral.errors import AdapterError, CoralError
from coral.evolution.genome import Knobs
from coral.model.adapters import AdapterInfo, check_base, read_adapter
from coral.model.loading import LoadedModel, quiet_peft_wrap, seeded, strip_adapters
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
        (layer.get_base_layer(), layer.get_base_layer().weight.detach().clone())
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
                layer.weight.copy_(weight)


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
) -> list[str]:
    """The text generated after each prompt, cut after the end-of-answer marker.

    The caller repeats each prompt `samples` times. Sampling follows the knobs, seeded from
    `seed` (same seed, same text); greedy=True decodes by argmax (baselines, tests).
    ignore_eos=True always generates knobs.max_new_tokens tokens (throughput benchmarks).
    """
    if not prompts:
        return []
    encoded = encode_prompts(base, prompts, generation.max_prompt_length)
    texts: list[str] = []
    with base.lock, merged_adapter(base, adapter_dir), torch.inference_mode():
        for index, start in enumerate(range(0, len(encoded), generation.batch_size)):
            chunk = encoded[start : start + generation.batch_size]
            chunk_seed = torch_seed(seed, "generate", f"chunk-{index}")
            texts.extend(_generate_chunk(base, chunk, knobs, chunk_seed, greedy, ignore_eos))
    return texts


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


def _generate_chunk(
    base: LoadedModel,
    rows: Sequence[list[int]],
    knobs: Knobs,
    seed: int,
    greedy: bool,
    ignore_eos: bool,
) -> list[str]:
    tokenizer = base.tokenizer
    ids, mask = _left_pad(rows, tokenizer.pad_token_id)
    settings = {
        "max_new_tokens": knobs.max_new_tokens,
        "repetition_penalty": knobs.repetition_penalty,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "do_sample": not greedy,
    }
    if not greedy:
        settings |= {"temperature": knobs.temperature, "top_p": knobs.top_p, "top_k": knobs.top_k}
    if ignore_eos:
        settings["min_new_tokens"] = knobs.max_new_tokens
    else:
        settings["stop_strings"] = [END_OF_ANSWER]
    with seeded(base.device, seed):
        out = base.model.generate(
            input_ids=ids.to(base.device),
            attention_mask=mask.to(base.device),
            generation_config=HFGenerationConfig(**settings),
            tokenizer=tokenizer,
        )
    new = out[:, ids.shape[1] :].cpu()
    # No "clean-up" of spaces: it would rewrite code (e.g. "f(a , b)" -> "f(a, b)").
    decode = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}
    return [cut_at_end(tokenizer.decode(row, **decode)) for row in new]


def cut_at_end(text: str) -> str:
    """Keep the answer up to and including the first end-of-answer marker."""
    at = text.find(END_OF_ANSWER)
    return text if at < 0 else text[: at + len(END_OF_ANSWER)]
