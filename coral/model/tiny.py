"""The offline default model: a small Llama trained from scratch to repair one-line bugs.

Recipe (`coral model build-tiny`): corpus (stdlib functions + training split, coral.model.corpus)
-> byte-level BPE tokenizer -> LlamaForCausalLM trained on
build_prompt(name, buggy) -> build_target(buggy, original) + EOS (a line edit), with loss on the
answer only; the buggy side carries one bug of the classes `coral bench mutate` uses. It opens
with pure copying of random strings (the circuit that copies the fixed line needs it) and mixes
in a little copying and plain next-token LM. Everything is seeded from coral.rng, data order
included, so the same corpus, seed and steps give the same weights on the same device type.
The model folder carries a manifest of every program trained on (name, origin, normalised-body
hash) for the contamination report. docs/tiny_model.md has the why.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from coral.benchmark.bodies import HASH_VERSION, function_hashes
from coral.benchmark.contamination import MANIFEST_FILE
from coral.benchmark.mutate import BUG_CLASSES
from coral.benchmark.prompts import build_prompt, build_target
from coral.errors import CoralError
from coral.hashing import content_hash
from coral.model.corpus import Corpus, build_corpus, inject_bug
from coral.model.tokenizer import SPECIAL_TOKENS, as_transformers, train_tokenizer
from coral.rng import stream, torch_seed

META_FILE = "coral_tiny_meta.json"
IGNORE = -100  # label value the loss skips


@dataclass(frozen=True)
class TinySpec:
    """Architecture and schedule. The defaults build the committed model (data/models/tiny-code)."""

    vocab_size: int = 3072
    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 1024
    # Biases on q/k/v/o let a head attend by relative position alone (RoPE of a constant), the
    # first half of the copying circuit: without them a model this small takes far longer to
    # learn to copy (measured: random-string copying learnt in ~350 steps with, none in 400 without).
    attention_bias: bool = True
    steps: int = 8000
    batch_tokens: int = 2048  # padded tokens per optimiser step
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_example_tokens: int = 640  # longer examples are skipped (prefer short functions)
    problem_bug_share: float = 0.07  # a synthetic bug in a training-split fixed program
    lm_share: float = 0.05  # plain next-token LM on a stdlib function
    # Real training-split bugs are left to the adapters (coral.model.train): a base that had
    # memorised them would leave LoRA nothing to learn from them.
    # First steps: pure copying of random strings, until 10 steps in a row predict at least
    # `copy_learnt` of the copy, at most `copy_steps` steps and half the schedule.
    copy_steps: int = 500
    copy_learnt: float = 0.9
    copy_share: float = 0.05  # and afterwards, this share of the examples stays random copying
    copy_min_length: int = 16
    copy_max_length: int = 64
    # A sample of the corpus is enough to train the tokenizer (and quicker than all of it).
    tokenizer_texts: int = 6000
    # Bug classes (coral.benchmark.mutate.BUG_CLASSES) the base never trains on: a skill left to
    # the adapters, whose data (the train side of data/mutants) keeps every class. The two the
    # base learnt best (docs/tiny_model.md, "Withheld classes"): what it loses is clear to see.
    withheld_classes: tuple[str, ...] = ("negated_condition", "return_value")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.withheld_classes) - set(BUG_CLASSES))
        if unknown:
            raise CoralError(f"unknown bug class to withhold: {', '.join(unknown)} "
                             f"(known: {', '.join(BUG_CLASSES)})")  # fmt: skip
        if set(self.withheld_classes) >= set(BUG_CLASSES):
            raise CoralError("cannot withhold every bug class: the base would learn no repair at all")

    @property
    def trained_classes(self) -> tuple[str, ...]:
        return tuple(c for c in BUG_CLASSES if c not in self.withheld_classes)


@dataclass(frozen=True)
class Example:
    ids: list[int]
    answer_from: int  # index of the first id the loss counts


class ExampleStream:
    """An endless, deterministic stream of encoded training examples."""

    def __init__(self, corpus: Corpus, encode: Callable[[str], list[int]], eos: int,
                 spec: TinySpec, seed: int) -> None:  # fmt: skip
        self.corpus, self.encode, self.eos, self.spec = corpus, encode, eos, spec
        self.rng = stream(seed, "tiny-build/data")
        self.stdlib = [f for f in corpus.functions if not f.origin.startswith("problems/")]
        self.problems = [f for f in corpus.functions if f.origin.startswith("problems/")]
        self.classes = spec.trained_classes
        if not self.stdlib:
            raise CoralError("tiny model corpus is empty: no functions found in the stdlib")

    def __iter__(self) -> Iterator[Example]:
        order: list[int] = []
        spec = self.spec
        while True:
            draw = float(self.rng.random())
            if draw < spec.copy_share:  # keeps rare tokens copyable, not only common code
                length = int(self.rng.integers(spec.copy_min_length, spec.copy_max_length + 1))
                ids = [int(i) for i in self.rng.integers(len(SPECIAL_TOKENS), spec.vocab_size, size=length)]
                yield Example(ids + ids, length)
                continue
            draw -= spec.copy_share
            if draw < spec.problem_bug_share and self.problems:
                function = self.problems[int(self.rng.integers(len(self.problems)))]
                example = self._synthetic(function.name, function.source)
            else:
                if not order:  # epochs of the stdlib functions in a fresh seeded order
                    order = [int(i) for i in self.rng.permutation(len(self.stdlib))][::-1]
                function = self.stdlib[order.pop()]
                draw -= spec.problem_bug_share
                if draw < spec.lm_share:
                    ids = self.encode(function.source.strip("\n") + "\n") + [self.eos]
                    example = Example(ids, 0)
                else:
                    example = self._synthetic(function.name, function.source)
            if example is not None and len(example.ids) <= spec.max_example_tokens:
                yield example

    def _synthetic(self, name: str, source: str) -> Example | None:
        injected = inject_bug(source, self.rng, self.classes)
        return None if injected is None else self._repair(name, injected[0], source)

    def _repair(self, name: str, buggy: str, fixed: str) -> Example:
        prompt = self.encode(build_prompt(name, buggy))
        return Example(prompt + self.encode(build_target(buggy, fixed)) + [self.eos], len(prompt))


def copy_examples(spec: TinySpec, seed: int) -> Iterator[Example]:
    """Random token strings written twice, loss on the second: the purest signal for the
    attention pattern that copies (find the earlier occurrence, emit what followed it)."""
    rng = stream(seed, "tiny-build/copy-data")
    low, high = len(SPECIAL_TOKENS), spec.vocab_size
    while True:
        length = int(rng.integers(spec.copy_min_length, spec.copy_max_length + 1))
        ids = [int(i) for i in rng.integers(low, high, size=length)]
        yield Example(ids + ids, length)


def batches(examples: Iterator[Example], batch_tokens: int, rng: np.random.Generator,
            pool: int = 256) -> Iterator[list[Example]]:  # fmt: skip
    """Length-bucketed batches: sort a pool by length, cut by padded size, shuffle the batches."""
    while True:
        chunk = sorted((next(examples) for _ in range(pool)), key=lambda e: len(e.ids))
        cut: list[list[Example]] = [[]]
        for example in chunk:
            width = max(len(example.ids), *(len(e.ids) for e in cut[-1])) if cut[-1] else 0
            if cut[-1] and width * (len(cut[-1]) + 1) > batch_tokens:
                cut.append([])
            cut[-1].append(example)
        for index in rng.permutation(len(cut)):
            yield cut[int(index)]


def collate(batch: list[Example], pad_id: int) -> tuple[torch.Tensor, ...]:
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.ids)
        ids[row, :n] = torch.tensor(example.ids)
        mask[row, :n] = 1
        labels[row, example.answer_from : n] = ids[row, example.answer_from : n]
    return ids, mask, labels


def answer_loss(model: LlamaForCausalLM, ids: torch.Tensor, mask: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, float]:  # fmt: skip
    """Mean next-token loss over answer tokens, and the share of them predicted exactly.

    Only answer positions are projected onto the vocabulary: the output layer is a third of
    this model's compute and the prompt half of the positions.
    """
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    counted = targets != IGNORE
    logits = model.lm_head(hidden[:, :-1][counted])
    hits = float((logits.detach().argmax(-1) == targets[counted]).float().mean())
    return torch.nn.functional.cross_entropy(logits, targets[counted]), hits


def learning_rate(step: int, spec: TinySpec, steps: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    warmup = min(spec.warmup_steps, max(1, steps // 10))
    if step < warmup:
        return spec.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return spec.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def model_config(spec: TinySpec) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions,
        attention_bias=spec.attention_bias,
        tie_word_embeddings=True,  # half the parameters of an untied head at this size
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def build_tiny(
    out_dir: Path,
    steps: int | None = None,
    seed: int = 0,
    problems_root: Path | None = None,
    split_path: Path | None = None,
    stdlib_root: Path | None = None,
    spec: TinySpec | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Build the model into out_dir (replaced whole at the end) and return its metadata."""
    spec = spec or TinySpec()
    steps = spec.steps if steps is None else steps
    if steps < 1:
        raise CoralError(f"--steps must be at least 1, got {steps}")
    started = time.time()
    corpus = build_corpus(problems_root, split_path, stdlib_root)
    log(f"corpus: {len(corpus.functions)} functions ({len(corpus.pairs)} training programs), "
        f"{len(corpus.files)} files, fingerprint {corpus.fingerprint[:16]} "
        f"({time.time() - started:.0f}s)")  # fmt: skip

    functions = corpus.functions
    picks = stream(seed, "tiny-build/tokenizer").permutation(len(functions))[: spec.tokenizer_texts]
    # Functions as the prompt shows them (numbered lines, the template's words in every one) and
    # as answers write them (plain lines).
    texts = [text for i in sorted(picks) for text in
             (build_prompt(functions[int(i)].name, functions[int(i)].source), functions[int(i)].source)]
    template = [build_prompt(p.name, p.buggy) + build_target(p.buggy, p.fixed) for p in corpus.pairs]
    raw = train_tokenizer(texts + template, spec.vocab_size)
    tokenizer = as_transformers(raw)
    # One thread: the same float reduction order on every machine (so the same weights), and on
    # a shared 2-core machine one thread trained 5x faster than two (docs/tiny_model.md).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(out_dir, corpus, raw, tokenizer, spec, steps, seed, started, log)
    finally:
        torch.set_num_threads(threads)


def _train(out_dir: Path, corpus: Corpus, raw: Tokenizer, tokenizer: PreTrainedTokenizerFast, spec: TinySpec,
           steps: int, seed: int, started: float, log: Callable[[str], None]) -> dict:  # fmt: skip
    eos = tokenizer.eos_token_id

    def encode(text: str) -> list[int]:
        return raw.encode(text).ids

    torch.manual_seed(torch_seed(seed, "tiny-build/init"))
    model = LlamaForCausalLM(model_config(spec))
    parameters = sum(p.numel() for p in model.parameters())
    log(f"model: {parameters / 1e6:.2f}M parameters; training {steps} steps ({time.time() - started:.0f}s)")
    optimiser = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate,
                                  betas=(0.9, 0.98), weight_decay=spec.weight_decay)  # fmt: skip
    examples = iter(ExampleStream(corpus, encode, eos, spec, seed))
    order = batches(examples, spec.batch_tokens, stream(seed, "tiny-build/batches"))
    copies = batches(copy_examples(spec, seed), spec.batch_tokens, stream(seed, "tiny-build/copy"))
    model.train()
    losses: list[float] = []
    accuracy: list[float] = []  # answer tokens predicted exactly: rises as copying is learnt
    answer_tokens = 0
    copying, copy_steps_used = True, min(spec.copy_steps, steps // 2)
    for step in range(steps):
        # Copy first, until copying is learnt (or the cap): a deterministic switch, the same
        # on every run with this seed, since it reads the training accuracy, never the clock.
        copying = copying and step < min(spec.copy_steps, steps // 2)
        ids, mask, labels = collate(next(copies if copying else order), tokenizer.pad_token_id)
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, spec, steps)
        loss, hits = answer_loss(model, ids, mask, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        accuracy.append(hits)
        if copying and len(accuracy) >= 10 and min(accuracy[-10:]) >= spec.copy_learnt:
            copying = False
            copy_steps_used = step + 1
            log(f"copying learnt after {copy_steps_used} steps")
        answer_tokens += int((labels[:, 1:] != IGNORE).sum())
        if step % 50 == 0 or step == steps - 1:
            recent = sum(losses[-50:]) / len(losses[-50:])
            hit = sum(accuracy[-50:]) / len(accuracy[-50:])
            log(f"step {step + 1}/{steps} loss {recent:.3f} token accuracy {hit:.3f} "
                f"({time.time() - started:.0f}s)")

    meta = _metadata(corpus, spec, steps, seed, parameters, losses, accuracy, answer_tokens,
                     time.time() - started)  # fmt: skip
    meta["copy_steps_used"] = copy_steps_used
    _save(out_dir, model, tokenizer, meta, training_manifest(corpus))
    log(f"saved {out_dir} ({meta['build_seconds']:.0f}s)")
    return meta


def _metadata(corpus: Corpus, spec: TinySpec, steps: int, seed: int, parameters: int,
              losses: list[float], accuracy: list[float], answer_tokens: int,
              seconds: float) -> dict:  # fmt: skip
    import tokenizers  # heavy: only when the tiny model is built
    import transformers  # heavy: only when the tiny model is built

    tail = losses[-50:]
    return {
        "recipe": "coral.model.tiny v2 (line edits)",
        "seed": seed,
        "steps": steps,
        "spec": asdict(spec),
        "parameters": parameters,
        "final_loss": sum(tail) / len(tail),
        "final_token_accuracy": sum(accuracy[-50:]) / len(accuracy[-50:]),
        "loss_curve": [round(sum(losses[i : i + 50]) / len(losses[i : i + 50]), 4)
                       for i in range(0, len(losses), 50)],  # means over 50 steps
        "answer_tokens_seen": answer_tokens,
        "corpus_fingerprint": corpus.fingerprint,
        "corpus_functions": len(corpus.functions),
        "train_problems": list(corpus.train_names),
        "eval_problems_excluded": list(corpus.eval_names),
        "excluded_names": sorted(corpus.excluded_names),
        "corpus_files": [list(f) for f in corpus.files],
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "libraries": {"torch": torch.__version__, "transformers": transformers.__version__,
                      "tokenizers": tokenizers.__version__, "numpy": np.__version__},
        "platform": f"{sys.platform}-{platform.machine()}",
        "build_seconds": round(seconds, 1),  # recorded, never used to decide anything
        "config_id": content_hash({"spec": asdict(spec), "steps": steps, "seed": seed,
                                   "corpus": corpus.fingerprint}),
    }  # fmt: skip


def training_manifest(corpus: Corpus) -> dict:
    """Every program the build trains on: name, origin and normalised-body hash
    (coral.benchmark.bodies), for the contamination report."""
    programs = []
    for function in corpus.functions:
        hashes = function_hashes(function.source)
        programs.append({"name": function.name, "origin": function.origin,
                         "hash": hashes.get(function.name, "")})  # fmt: skip
    return {"version": 1, "hash": HASH_VERSION, "corpus_fingerprint": corpus.fingerprint,
            "train_problems": list(corpus.train_names), "programs": programs}  # fmt: skip


def withheld_classes(model_folder: str | Path) -> list[str]:
    """The bug classes a model built here withheld from its training (its META_FILE); [] for a
    model with none withheld or not built by `coral model build`."""
    meta = Path(model_folder) / META_FILE
    try:
        spec = json.loads(meta.read_text(encoding="utf-8")).get("spec") or {}
    except (OSError, ValueError, AttributeError):
        return []
    return [str(c) for c in spec.get("withheld_classes") or []]


def _save(out_dir: Path, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, meta: dict,
          manifest: dict) -> None:
    """Write next to out_dir, then swap it in: a crash never leaves half a model behind."""
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".building")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=1, eos_token_id=2, pad_token_id=0, max_new_tokens=256, do_sample=False
    )
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    (staging / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest) + "\n", encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
