"""Training one LoRA/DoRA adapter from heavy genes, and storing it under its cache key.

Loss counts answer tokens only (prompt and padding are labelled -100). The torch seed and the
data order both derive from the cache key, so whoever asks for a key trains the same adapter.
The adapter is injected into the shared base for the job and removed afterwards.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from coral.benchmark.mutate import families
from coral.benchmark.mutations import mutants
from coral.benchmark.problem import Problem
from coral.benchmark.prompts import PromptStyle, build_prompt, build_target
from coral.config import TrainingConfig
from coral.errors import AdapterError
from coral.evolution.genome import HeavyGenes
from coral.home import Home
from coral.model.adapters import (
    ADAPTER_WEIGHTS,
    TEMP_PREFIX,
    AdapterInfo,
    canonical_genes,
    check_base,
    check_cache_key,
    data_fingerprint,
    find_adapter,
    publish,
    read_adapter,
    sha256_file,
    write_metadata,
)
from coral.model.loading import LoadedModel, quiet_peft_wrap, seeded, strip_adapters
from coral.model.weights import describe_missing, missing_targets, module_paths
from coral.rng import stream, torch_seed

IGNORE = -100  # label value the loss skips
MAX_GRAD_NORM = 1.0  # fixed for every adapter (so not part of any key); guards bf16 spikes
SEED_ROOT = 0  # adapter seeds come from the cache key alone, not from any run's seed
# Base models this large train with gradient checkpointing: a layer's activations are recomputed
# in the backward pass instead of kept (CodeLlama-7B at batch 8 x 1,024 tokens: ~45 GB of
# activations without, ~4 GB with; docs/modal.md "Planning"). The result is the same adapter
# (torch's checkpoint replays the RNG state), so it is not part of any cache key.
CHECKPOINT_PARAMS = 1_000_000_000


def uses_checkpointing(model: torch.nn.Module) -> bool:
    return sum(p.numel() for p in model.parameters()) >= CHECKPOINT_PARAMS


def training_pairs(problems: Sequence[Problem], style: PromptStyle = "base") -> list[tuple[str, str]]:
    """(prompt, target) for each TRAINING-split problem, with the template evaluation uses."""
    return [(build_prompt(p.name, p.buggy_source, style), build_target(p.buggy_source, p.correct_source))
            for p in problems]


MUTANTS_PER_CLASS = 4  # program-mutants: at most this many per (train program, bug class)


def program_mutant_pairs(root: Path, train: Sequence[Problem], style: PromptStyle = "base") -> list[tuple[str, str]]:
    """Up to MUTANTS_PER_CLASS bugs of every class in each TRAIN-side family's reference program
    (`coral bench mutate` keeps 10 a family): more bugs in the same programs, no eval family.
    The sites are drawn from one fixed stream, so every run on this benchmark trains on the same
    pairs (and shares adapters)."""
    rng = stream(0, "training-data/program-mutants")
    family_of = families(root)
    first: dict[str, Problem] = {}  # the first instance of each family stands for its reference
    for problem in sorted(train, key=lambda p: p.name):
        first.setdefault(family_of.get(problem.name, problem.name), problem)
    pairs: list[tuple[str, str]] = []
    for problem in first.values():
        name, reference = problem.name, problem.correct_source
        by_class: dict[str, list[str]] = {}
        for mutant in mutants(reference):
            by_class.setdefault(mutant.bug_class, []).append(mutant.source)
        for bug_class in sorted(by_class):
            sources = by_class[bug_class]
            for index in rng.permutation(len(sources))[:MUTANTS_PER_CLASS]:
                buggy = sources[int(index)]
                pairs.append((build_prompt(name, buggy, style), build_target(buggy, reference)))
    return pairs


def adapter_data(training: TrainingConfig, root: Path, train: Sequence[Problem],
                 style: PromptStyle = "base") -> list[tuple[str, str]]:
    """The (prompt, target) pairs an adapter trains on, as `training.data` chooses."""
    if training.data == "program-mutants":
        return program_mutant_pairs(root, train, style)
    return training_pairs(train, style)


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, target: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + target + EOS (cut at max_length) and how many belong to the prompt.

    The prompt's ids are exactly those generation will feed; the answer is tokenised jointly
    with it when that leaves the prompt's ids unchanged, as a model reading the whole text would.
    """
    prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    joint = list(tokenizer(prompt + target, add_special_tokens=True)["input_ids"])
    if joint[: len(prompt_ids)] == prompt_ids:
        ids = joint
    else:
        ids = prompt_ids + list(tokenizer(target, add_special_tokens=False)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return ids[:max_length], len(prompt_ids)


def collate(examples: Sequence[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels (-100 on prompt and padding)."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return input_ids, mask, labels


def lora_config(genes: HeavyGenes) -> LoraConfig:
    genes = canonical_genes(genes)
    return LoraConfig(
        r=genes.rank,
        lora_alpha=genes.alpha,
        lora_dropout=genes.dropout,
        target_modules=list(genes.target_modules),
        use_dora=genes.adapter_type == "dora",
        bias="none",
        task_type="CAUSAL_LM",
    )


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> list[list[int]]:
    """Example indices per step: shuffled epochs, reshuffled each time one runs out."""
    order: list[int] = []
    out = []
    for _ in range(steps):
        batch: list[int] = []
        while len(batch) < batch_size:
            if not order:
                order = torch.randperm(n, generator=generator).tolist()
            batch.append(order.pop())
        out.append(batch)
    return out


def train_adapter(
    base: LoadedModel,
    genes: HeavyGenes,
    pairs: Sequence[tuple[str, str]],
    training: TrainingConfig,
    home: Home,
    cache_key: str,
) -> AdapterInfo:
    """Train (or find) the adapter for `cache_key` and return its metadata; path is set.

    The caller computes `cache_key` with adapter_cache_key(genes, base.fingerprint,
    data_fingerprint(pairs), training); it names the folder and seeds everything random.
    """
    target = home.adapter_dir(cache_key)
    existing = find_adapter(target)
    if existing is not None:
        check_base(existing, base.fingerprint)
        return existing
    tokenizer = base.tokenizer
    encoded = [encode_pair(tokenizer, p, t, training.max_length) for p, t in pairs]
    examples = [(ids, n) for ids, n in encoded if len(ids) > n]
    if not examples:
        raise AdapterError(
            f"adapter {cache_key}: no training pair has an answer token within "
            f"training.max_length={training.max_length} ({len(pairs)} pairs given)"
        )
    seed = torch_seed(SEED_ROOT, "adapter-train", cache_key)
    order = torch.Generator().manual_seed(torch_seed(SEED_ROOT, "adapter-data-order", cache_key))
    plan = _batches(len(examples), training.batch_size, training.steps, order)

    home.adapters.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{cache_key}-", dir=home.adapters))
    try:
        with base.lock:
            losses, tokens, wall = _fit(base, genes, examples, plan, training, seed, temp)
        info = AdapterInfo(
            cache_key=cache_key,
            genes=canonical_genes(genes),
            base_fingerprint=base.fingerprint,
            data_fingerprint=data_fingerprint(pairs),
            training=training,
            seed=seed,
            pairs_used=len(examples),
            pairs_dropped=len(pairs) - len(examples),
            train_tokens=tokens,
            loss_curve=losses,
            wall_seconds=wall,
            weights_sha256=sha256_file(temp / ADAPTER_WEIGHTS),
            versions={
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
            },
        )
        write_metadata(temp, info)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if publish(temp, target):
        return info.model_copy(update={"path": target})
    # Another writer published the same key first: theirs is the adapter from now on.
    winner = read_adapter(target)
    check_cache_key(target, winner.cache_key)
    check_base(winner, base.fingerprint)
    return winner.model_copy(update={"cache_hit": True})


def check_targets(base: LoadedModel, targets: Sequence[str]) -> None:
    """Every target names a module of the base. peft wraps the ones that exist and drops the rest
    silently (an error only when none is left): an adapter for [q_proj, gate_proj] on a model
    without gate_proj would be a q_proj adapter filed under the other's key."""
    shapes = {name: param.shape for name, param in base.model.named_parameters(remove_duplicate=False)}
    paths = module_paths(shapes)
    missing = missing_targets(targets, paths)
    if missing:
        kind = type(base.model).__name__
        raise AdapterError(describe_missing(missing, f"{base.name} ({kind})", paths))


def _fit(
    base: LoadedModel,
    genes: HeavyGenes,
    examples: list[tuple[list[int], int]],
    plan: list[list[int]],
    training: TrainingConfig,
    seed: int,
    out: Path,
) -> tuple[list[float], int, float]:
    """Inject, train, save to `out`, remove. Returns (loss per step, tokens seen, wall seconds)."""
    pad_id = base.tokenizer.pad_token_id
    started = time.perf_counter()
    losses: list[float] = []
    tokens = 0
    check_targets(base, genes.target_modules)
    with seeded(base.device, seed):  # LoRA init and dropout draw from here
        try:
            with quiet_peft_wrap():
                model = get_peft_model(base.model, lora_config(genes))
        except ValueError as exc:
            strip_adapters(base.model)
            modules = list(genes.target_modules)
            raise AdapterError(f"genes.target_modules {modules}: {str(exc).splitlines()[0]}") from None
        checkpointing = uses_checkpointing(base.model)
        try:
            if checkpointing:  # non-reentrant: frozen inputs need no requires_grad hook
                base.model.activation_checkpointing_enable(
                    activation_checkpointing_kwargs={"use_reentrant": False})
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=training.learning_rate, weight_decay=0.0)
            for batch in plan:
                input_ids, mask, labels = collate([examples[i] for i in batch], pad_id)
                result = model(
                    input_ids=input_ids.to(base.device),
                    attention_mask=mask.to(base.device),
                    labels=labels.to(base.device),
                    use_cache=False,
                )
                optimizer.zero_grad(set_to_none=True)
                result.loss.backward()
                torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
                optimizer.step()
                loss = float(result.loss.detach())
                if not math.isfinite(loss):
                    # NaN weights would fail every generation from them, and a loss curve holding
                    # NaN cannot be written as JSON: the job fails here, saying why.
                    raise AdapterError(
                        f"adapter training diverged at step {len(losses) + 1} of {len(plan)} (loss {loss}) "
                        f"with {genes.adapter_type} rank {genes.rank} alpha {genes.alpha}: lower "
                        "training.learning_rate or the genes' alpha/rank, or check the base model's weights")
                losses.append(loss)
                tokens += int(mask.sum())
            model.save_pretrained(str(out), safe_serialization=True)
        finally:
            if checkpointing:
                base.model.activation_checkpointing_disable()
            model.unload()
            strip_adapters(base.model)
            base.model.eval()
            base.model.requires_grad_(False)
    if base.device.type == "cuda":
        torch.cuda.synchronize(base.device)
    return losses, tokens, time.perf_counter() - started
