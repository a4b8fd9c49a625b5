"""The Trainer: data → tokenizer → model → AdamW loop with warm-up + cosine, validation, checkpoints.

One loop serves the TUI (on a thread worker) and the headless CLI. It never touches the UI: each
step goes into a Metrics buffer the UI polls, and into the run folder's metrics.jsonl. Stop and
pause are events checked every step (and inside validation), so a stop lands within a step.

Run folder: checkpoints/<stage>-<YYYYmmdd-HHMMSS>/ with metrics.jsonl and checkpoint/ (the
checkpoint directory, replaced atomically on every save). A run saved with its trainer state can be
resumed exactly: the data order is a pure function of (seed, step), the optimizer moments, the
step and the RNG states are restored, so on CPU a resumed run logs the same losses, bit for bit,
as one that was never interrupted.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from studio import checkpoint, data, paths
from studio.batching import Batch, PretrainBatches, SFTBatches, collate, example_rows, pretrain_eval_batches, sft_eval_batches
from studio.lint import conversation_texts
from studio.masking import IGNORE, Example, build_examples
from studio.metrics import FAILED, LOADING, PAUSED, RUNNING, STOPPED, STOPPING, DONE, Metrics, StepRecord
from studio.model import GPT, PRESETS, model_config
from studio.templates import TEMPLATES, get_template
from studio.tokenizer import UNK, train_tokenizer

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

STAGES = ("pretrain", "sft")
DEVICES = ("auto", "cpu", "cuda")
PATH_FIELDS = ("dataset", "corpus", "init_from", "resume", "out_dir")
CUDA_SYNC_EVERY = 10  # on CUDA, reading the loss waits for the GPU: read it every few steps, not every step
METRICS_FILE = "metrics.jsonl"
SHOWN_DROPPED = 5  # dropped examples named one by one in the events; the rest are counted


@dataclass
class TrainConfig:
    """Every field is settable from CLI flags or a --config run.toml (same names)."""

    stage: str = "sft"  # "pretrain" | "sft"
    preset: str = "tiny"  # model shape and tokenizer kind, see model.PRESETS
    dataset: str | None = None  # sft; default paths.DEFAULT_DATASET
    corpus: str | None = None  # pretrain; default paths.DEFAULT_CORPUS
    template: str = "comando"
    init_from: str | None = None  # checkpoint dir to start from: its weights and its tokenizer
    resume: str | None = None  # checkpoint dir to continue exactly (optimizer, RNG, step, data order)
    out_dir: str | None = None  # run folder; default checkpoints/<stage>-<timestamp>
    # Defaults chosen so `studio train` on the bundled data (tiny, CPU) finishes in under 3 minutes
    # and the model answers >= 90 % of the training instructions exactly (docs/PERFORMANCE.md).
    steps: int = 2000  # ~80 epochs of the bundled data; measured exact answers: 98.3 % (lr 3e-3 x 2400 steps: 97.3 %)
    batch_size: int = 16
    lr: float = 6e-3
    warmup_steps: int = 50
    min_lr: float = 3e-4  # the cosine ends here at the last step
    weight_decay: float = 0.0  # memorising a small dataset is the goal; decay only slows it
    grad_clip: float = 1.0  # 0 disables clipping
    context_size: int | None = None  # None: the preset's (or the init_from checkpoint's)
    eval_every: int = 100  # steps between validation losses (and one at the end)
    save_every: int = 500  # steps between checkpoints (and one at the end or stop); 0: only then
    val_fraction: float = 0.05  # share of the examples (sft) or of the corpus tail (pretrain) held out
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool | None = None  # None: on for CUDA and for CPUs with native bf16 (AMX / avx512_bf16)
    train_on_prompt: bool = False
    skip_invalid: bool = False  # train on the valid records of a dataset with bad ones
    threads: int | None = None  # torch CPU threads; the TUI leaves one core to the UI

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "TrainConfig":
        """Build and validate; a wrong key, type or value raises one TrainingError naming source and key."""
        types = {f.name: f.type for f in fields(cls)}
        for key, value in values.items():
            if key not in types:
                raise TrainingError(f"{source}: unknown key {key!r} (known keys: {', '.join(types)})")
            if not _has_type(value, types[key]):
                raise TrainingError(f"{source}: {key} must be {types[key]}, got {value!r}")
        config = cls(**{key: float(v) if types[key] == "float" else v for key, v in values.items()})
        config.validate(source)
        return config

    @classmethod
    def from_toml(cls, path: str | Path) -> "TrainConfig":
        """Flat `key = value` TOML; relative paths in it are relative to the file, not to the shell."""
        path = Path(path)
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise TrainingError(f"{path}: cannot read ({error.strerror})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise TrainingError(f"{path}: invalid TOML ({error})") from None
        for key in PATH_FIELDS:
            if isinstance(values.get(key), str):
                values[key] = str(path.parent / Path(values[key]).expanduser())
        return cls.from_dict(values, str(path))

    def validate(self, source: str = "config") -> None:
        checks = [
            (self.stage in STAGES, f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}"),
            (self.preset in PRESETS, f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}"),
            (self.template in TEMPLATES, f"template must be one of {', '.join(TEMPLATES)}, got {self.template!r}"),
            (self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 <= self.min_lr <= self.lr, f"min_lr must be between 0 and lr ({self.lr}), got {self.min_lr}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}"),
            (self.context_size is None or self.context_size >= 2, f"context_size must be >= 2, got {self.context_size}"),
            (self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}"),
            (self.save_every >= 0, f"save_every must be >= 0, got {self.save_every}"),
            (0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
            (not (self.init_from and self.resume), "init_from and resume exclude each other: resume already has weights"),
        ]
        for ok, problem in checks:
            if not ok:
                raise TrainingError(f"{source}: {problem}")


def _has_type(value, annotation: str) -> bool:
    """isinstance against a field annotation string such as 'int', 'float', 'str | None'."""
    accepted = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),)}
    allowed = tuple(t for name in annotation.split("|") for t in accepted[name.strip()])
    # bool is an int subclass: `steps = true` in a TOML file is a mistake, not 1
    return isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))


class TrainingError(Exception):
    """A run that cannot start or go on; the message is one line for the user."""


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up to lr over warmup_steps, then a cosine down to min_lr at the last step (steps count from 1)."""
    if step <= config.warmup_steps:
        return config.lr * step / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (config.lr - config.min_lr)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise TrainingError(f"CUDA is not available ({why}); use --device cpu or --device auto")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: bf16 matmuls run in hardware (training measured 1.5-2.2x faster than fp32
    on a 2-core EPYC, docs/PERFORMANCE.md); without them bf16 is emulated and slower than fp32."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # not Linux: stay in fp32
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_bf16(setting: bool | None, device: torch.device) -> bool:
    if setting is not None:
        return setting
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Trainer:
    """Prepares and runs one training run. `run()` blocks; the other methods are safe from any thread."""

    def __init__(self, config: TrainConfig, metrics: Metrics | None = None):
        self.config = config
        self.metrics = metrics if metrics is not None else Metrics()
        # set by preparation (the UI waits for `model`, so it is assigned last)
        self.tokenizer = None
        self.template = None
        self.examples: list[Example] = []
        self.val_examples: list[Example] = []
        self.model: GPT | None = None
        self.device = torch.device("cpu")
        self.run_dir: Path | None = None
        self.last_checkpoint: Path | None = None
        self.step = 0
        self._stop = threading.Event()
        self._unpaused = threading.Event()
        self._unpaused.set()
        self._weights_lock = threading.Lock()  # held while the optimizer changes the weights, and while copying them
        self._snapshot: tuple[int, GPT] | None = None  # (step, copy) reused by token_losses
        self._early_events: list[str] = []  # events from before the run folder exists
        self._log = None  # metrics.jsonl, open while running
        self.bf16 = False

    # ------------------------------------------------------------------------------------ control

    def request_stop(self) -> None:
        self._stop.set()
        if self.metrics.status in (RUNNING, PAUSED):
            self.metrics.set_status(STOPPING)

    def pause(self) -> None:
        self._unpaused.clear()

    def resume(self) -> None:
        self._unpaused.set()

    def snapshot_model(self) -> GPT:
        """A copy of the current weights in eval mode, for chatting with the model while it trains."""
        if self.model is None:
            raise TrainingError("the model is not ready yet: training is still preparing")
        with self._weights_lock:
            model = copy.deepcopy(self.model)  # deepcopy keeps the tied embedding tied; grads are not copied
        return model.eval().requires_grad_(False)

    def token_losses(self, example: Example) -> list[float | None]:
        """Loss of each trained token of example under the current weights, None elsewhere (the heat-map).
        Token 0 is never predicted; tokens beyond the context get None."""
        if self.model is None:
            raise TrainingError("the model is not ready yet: training is still preparing")
        cached = self._snapshot
        if cached is None or cached[0] != self.step:
            cached = self._snapshot = (self.step, self.snapshot_model())
        model = cached[1]
        if len(example.tokens) < 2:
            return [None] * len(example.tokens)
        ids, labels = example_rows([example])[0]
        window = model.config.context_size + 1
        batch = collate([(ids[:window], labels[:window])], self.tokenizer.pad_id).to(self.device)
        with torch.no_grad(), self._autocast():
            _, losses = model(batch.inputs, batch.targets, reduction="none")
        trained = (batch.targets[0] != IGNORE).tolist()
        per_token = [loss if is_trained else None for loss, is_trained in zip(losses[0].float().tolist(), trained)]
        return [None] + per_token + [None] * (len(example.tokens) - 1 - len(per_token))

    # ------------------------------------------------------------------------------------ run

    def run(self) -> Path:
        """Prepare, train, save. Returns the checkpoint directory (also after a stop); raises TrainingError."""
        try:
            if self.model is None:
                self.prepare()
            return self._train()
        except TrainingError as error:
            self.metrics.set_status(FAILED, str(error))
            raise
        except torch.cuda.OutOfMemoryError:
            message = f"out of memory on {self.device} with batch_size {self.config.batch_size}; lower it"
            self.metrics.set_status(FAILED, message)
            raise TrainingError(message) from None
        except BaseException as error:
            self.metrics.set_status(FAILED, f"{type(error).__name__}: {error}")
            raise
        finally:
            if self._log is not None:
                self._log.close()

    def prepare(self) -> None:
        """Load the data, the tokenizer and the model, create the run folder; run() calls it if needed."""
        self.metrics.set_status(LOADING)
        config = self.config
        config.validate()
        self.device = resolve_device(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores where bf16 is off
            torch.backends.cudnn.allow_tf32 = True
        source = self._load_source_checkpoint()
        config = self.config  # a resume replaces it with the resumed run's settings
        torch.manual_seed(config.seed)
        self.template = get_template(config.template)
        if config.stage == "sft":
            conversations, data_path = self._load_conversations()
            texts = (text for conversation in conversations for text in conversation_texts(conversation))
        else:
            data_path = Path(config.corpus or paths.DEFAULT_CORPUS)
            try:
                corpus = data.read_corpus(data_path)
            except data.DatasetError as error:
                raise TrainingError(str(error)) from None
            texts = corpus.splitlines()
        preset = PRESETS[config.preset]
        self.tokenizer = source.tokenizer if source else train_tokenizer(preset.tokenizer, texts, preset.bpe_vocab_size)
        if source:
            model = source.model
        else:
            model = GPT(model_config(config.preset, self.tokenizer.vocab_size, context_size=config.context_size))
        context = model.config.context_size
        if config.stage == "sft":
            self._build_sft_data(conversations, context)
        else:
            self._build_pretrain_data(corpus, context)
        self._data_digest = file_digest(data_path)
        model.to(self.device).train()
        self.bf16 = use_bf16(config.bf16, self.device)
        self.optimizer = self._make_optimizer(model)
        self.parent = str(config.init_from) if config.init_from else None
        self.step = 0
        self._elapsed_before = 0.0
        if config.resume:
            self._restore_trainer_state(source)
        self._open_run_dir()
        self.model = model

    def _load_source_checkpoint(self) -> checkpoint.Checkpoint | None:
        """The init_from or resume checkpoint (None from scratch), checked against the config."""
        config = self.config
        path = config.resume or config.init_from
        if not path:
            return None
        try:
            source = checkpoint.load(path, self.device, with_trainer_state=bool(config.resume))
        except checkpoint.CheckpointError as error:
            raise TrainingError(str(error)) from None
        if config.resume:
            if source.trainer_state is None:
                raise TrainingError(f"{source.path}: has no trainer state to resume from; use init_from to start a new run from its weights")
            self.config = config = self._resumed_config(source)
        wanted = PRESETS[config.preset].tokenizer
        if source.tokenizer.kind != wanted:
            raise TrainingError(
                f"{source.path}: has a {source.tokenizer.kind} tokenizer but preset {config.preset} uses {wanted}; "
                f"choose a preset with a {source.tokenizer.kind} tokenizer"
            )
        have = source.model.config.context_size
        if config.context_size not in (None, have):
            raise TrainingError(f"{source.path}: the model has context {have}; context_size {config.context_size} cannot be used with it")
        if config.stage == "sft" and source.config.get("stage") == "sft" and not config.resume:
            self._event(f"note: {source.path} is already fine-tuned; training goes on from its weights")
        count = len(list(source.model.parameters())) + len(list(source.model.buffers()))  # a tied tensor counts once
        self._event(f"loaded {count}/{count} tensors from {source.path} (step {source.config.get('step')}, {source.tokenizer.describe()})")
        return source

    def _resumed_config(self, source: checkpoint.Checkpoint) -> TrainConfig:
        """The resumed run's settings; fields set here to something other than their default win
        (e.g. more steps, another device), with a warning when that changes the trajectory."""
        saved = TrainConfig.from_dict(source.config.get("training", {}), f"{source.path}/config.json training")
        if saved.stage != self.config.stage:
            raise TrainingError(f"{source.path}: is a {saved.stage} run; resume it with `studio {'train' if saved.stage == 'sft' else 'pretrain'} --resume`")
        defaults = TrainConfig()
        overrides = {f.name: getattr(self.config, f.name) for f in fields(TrainConfig)
                     if getattr(self.config, f.name) != getattr(defaults, f.name)}
        # weights come from the resumed checkpoint; its parent is kept from the checkpoint's config
        overrides.update(resume=str(source.path), init_from=None)
        overrides.setdefault("out_dir", None)
        harmless = {"resume", "out_dir", "device", "threads", "eval_every", "save_every", "init_from"}
        changed = sorted(k for k, v in overrides.items() if k not in harmless and getattr(saved, k) != v)
        if changed:
            self._event(f"resuming with changed {', '.join(changed)}: the run will not match an uninterrupted one")
        return TrainConfig.from_dict({**saved.to_dict(), **overrides}, "resume")

    def _load_conversations(self) -> tuple[list[data.Conversation], Path]:
        path = Path(self.config.dataset or paths.DEFAULT_DATASET)
        try:
            result = data.load(path)
        except data.DatasetError as error:
            raise TrainingError(str(error)) from None
        if result.errors:
            if not self.config.skip_invalid:
                raise TrainingError(
                    f"{path}: {len(result.errors)} of {result.records} records are invalid (first: {result.errors[0]}); "
                    f"fix them or skip them (--skip-invalid) (`studio check --dataset {path}` lists them all)"
                )
            self._event(f"skipped {len(result.errors)} invalid records of {result.records} in {path}")
        if not result.conversations:
            raise TrainingError(f"{path}: no valid record left")
        return result.conversations, path

    def _build_sft_data(self, conversations: list[data.Conversation], context: int) -> None:
        config = self.config
        # a row of context + 1 tokens gives `context` inputs and `context` shifted targets
        report = build_examples(conversations, self.template, self.tokenizer, context + 1, config.train_on_prompt)
        if report.truncated:
            no_end = sum(not ex.eos_trained for ex in report.examples)
            self._event(f"{report.truncated} of {len(conversations)} examples are longer than the context ({context}) and were cut"
                        + (f"; {no_end} lose the end token of an answer (the model will not learn to stop there)" if no_end else ""))
        for source, reason in report.dropped[:SHOWN_DROPPED]:
            self._event(f"dropped {source}: {reason}")
        if len(report.dropped) > SHOWN_DROPPED:
            self._event(f"… and {len(report.dropped) - SHOWN_DROPPED} more examples dropped")
        examples = report.examples
        if not examples:
            raise TrainingError(f"no example left to train on: all {len(conversations)} were dropped (context {context})")
        unknown = sum(ex.ids.count(self.tokenizer.special_id(UNK)) for ex in examples)
        if unknown:
            self._event(f"{unknown} characters of the dataset are unknown to the tokenizer and train as {UNK}")
        n_val = min(round(len(examples) * config.val_fraction), len(examples) - 1)
        held_out = set(torch.randperm(len(examples), generator=torch.Generator().manual_seed(config.seed))[:n_val].tolist())
        self.examples = [ex for i, ex in enumerate(examples) if i not in held_out]
        self.val_examples = [ex for i, ex in enumerate(examples) if i in held_out]
        self.batches = SFTBatches(self.examples, config.batch_size, self.tokenizer.pad_id, config.seed, context)
        self.val_batches = sft_eval_batches(self.val_examples, config.batch_size, self.tokenizer.pad_id, context)

    def _build_pretrain_data(self, corpus: str, context: int) -> None:
        tokens = torch.tensor(self.tokenizer.encode(corpus).ids)
        n_val = int(len(tokens) * self.config.val_fraction)
        train, val = (tokens[:-n_val], tokens[-n_val:]) if n_val else (tokens, tokens[:0])
        try:
            self.batches = PretrainBatches(train, context, self.config.batch_size, self.config.seed)
        except ValueError as error:
            raise TrainingError(f"{self.config.corpus or paths.DEFAULT_CORPUS}: {error}") from None
        self.val_batches = pretrain_eval_batches(val, context, self.config.batch_size)
        if n_val and not self.val_batches:
            self._event(f"the held-out corpus tail ({n_val} tokens) is shorter than one window: no validation loss")

    def _make_optimizer(self, model: GPT) -> torch.optim.AdamW:
        # nanoGPT: decay the matmul and embedding weights, not biases and LayerNorm gains
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": self.config.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        try:
            return torch.optim.AdamW(groups, lr=self.config.lr, betas=(0.9, 0.95), fused=True)
        except RuntimeError:  # torch < 2.4 has no fused AdamW on CPU
            return torch.optim.AdamW(groups, lr=self.config.lr, betas=(0.9, 0.95))

    def _restore_trainer_state(self, source: checkpoint.Checkpoint) -> None:
        state = source.trainer_state
        self.optimizer.load_state_dict(state["optimizer"])
        checkpoint.restore_rng(state)
        self.step = int(state["step"])
        extra = state.get("extra", {})
        self._elapsed_before = float(extra.get("elapsed", 0.0))
        self.parent = source.config.get("parent")
        if extra.get("data_sha256") not in (None, self._data_digest):
            self._event("the data file changed since this checkpoint: the resumed run will not match an uninterrupted one")
        if self.step >= self.config.steps:
            raise TrainingError(f"{source.path}: already at step {self.step} of {self.config.steps}; pass more steps to go on")

    def _open_run_dir(self) -> None:
        config = self.config
        if config.out_dir:
            run_dir = Path(config.out_dir)
        elif config.resume and Path(config.resume).name == checkpoint.RUN_CHECKPOINT_DIR:
            run_dir = Path(config.resume).parent  # resuming in place: the same folder, metrics.jsonl goes on
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            run_dir = paths.CHECKPOINTS_DIR / f"{config.stage}-{stamp}"
            suffix = 2
            while run_dir.exists():
                run_dir = paths.CHECKPOINTS_DIR / f"{config.stage}-{stamp}-{suffix}"
                suffix += 1
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self._saved_step = -1
        metrics_path = run_dir / METRICS_FILE
        if config.resume:
            self._keep_metrics_up_to(metrics_path, self.step)
            if Path(config.resume).resolve() == (run_dir / checkpoint.RUN_CHECKPOINT_DIR).resolve():
                self._saved_step = self.step  # that checkpoint is this step already
        elif metrics_path.exists():
            metrics_path.unlink()  # a new run in a reused --out folder starts a new log
        self._log = open(metrics_path, "a", encoding="utf-8")
        for text in self._early_events:
            self._write_log({"step": self.step, "event": text})

    def _keep_metrics_up_to(self, path: Path, step: int) -> None:
        """A run that went on past its last checkpoint logged steps the resume will redo: drop them,
        and show the kept curve when the metrics buffer is new."""
        if not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if entry.get("step", 0) <= step:
                kept.append(entry)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text("".join(json.dumps(entry) + "\n" for entry in kept), encoding="utf-8")
        os.replace(temporary, path)
        if not self.metrics.snapshot().train:
            for entry in kept:
                if "loss" in entry:
                    self.metrics.record_step(StepRecord(**{f.name: entry[f.name] for f in fields(StepRecord)}))
                elif "val_loss" in entry:
                    self.metrics.record_val(entry["step"], entry["val_loss"])

    # ------------------------------------------------------------------------------------ loop

    def _train(self) -> Path:
        config, model, optimizer = self.config, self.model, self.optimizer
        self.metrics.start(config.stage, f"{self.device.type}{' bf16' if self.bf16 else ''}", config.steps, self.step)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        sync_every = 1 if self.device.type == "cpu" else CUDA_SYNC_EVERY
        pending: list[tuple[int, torch.Tensor, torch.Tensor, float, Batch]] = []
        self._clock_start, self._paused_total = time.perf_counter(), 0.0
        self._window_start = self._clock_start
        for step in range(self.step + 1, config.steps + 1):
            if not self._wait_while_paused():
                break
            batch = self.batches.get(step).to(self.device)
            lr = lr_at(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with self._training_precision():
                _, loss = model(batch.inputs, batch.targets)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or math.inf)
            pending.append((step, loss.detach(), grad_norm, lr, batch))
            evaluate = step % config.eval_every == 0 or step == config.steps
            save = (config.save_every and step % config.save_every == 0) or step == config.steps
            if len(pending) >= sync_every or evaluate or save:
                self._flush(pending)  # before the update: a non-finite loss or gradient never reaches the weights
            with self._weights_lock:
                optimizer.step()
                self.step = step
            optimizer.zero_grad(set_to_none=True)
            if evaluate:
                self._evaluate(step)
            if save and not self._stop.is_set():
                self._save()
            if evaluate or save:
                self._window_start = time.perf_counter()  # keep validation and saving out of tokens/s
        if pending:
            self._flush(pending)
        stopped = self._stop.is_set()
        if self.step != self._saved_step:
            self._save()
        status = STOPPED if stopped else DONE
        verb = "stopped at" if stopped else "finished"
        self.metrics.set_status(status, f"{verb} step {self.step}/{config.steps}; checkpoint {self.last_checkpoint}")
        return self.last_checkpoint

    def _wait_while_paused(self) -> bool:
        """Block while paused; False when a stop was requested."""
        if not self._unpaused.is_set() and not self._stop.is_set():
            self.metrics.set_status(PAUSED)
            paused_at = time.perf_counter()
            while not self._unpaused.wait(0.1) and not self._stop.is_set():
                pass
            self._paused_total += time.perf_counter() - paused_at
            self._window_start += time.perf_counter() - paused_at
            if not self._stop.is_set():
                self.metrics.set_status(RUNNING)
        return not self._stop.is_set()

    def _elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._clock_start - self._paused_total

    def _flush(self, pending: list) -> None:
        """Read the pending losses (one GPU sync for all of them), check them, record them."""
        values = torch.stack([torch.stack([loss.float(), norm.float()]) for _, loss, norm, _, _ in pending]).tolist()
        now = time.perf_counter()
        seconds = max(now - self._window_start, 1e-9)
        tokens = sum(batch.tokens for *_, batch in pending)
        trained = sum(batch.trained_tokens for *_, batch in pending)
        elapsed = self._elapsed()
        for (step, _, _, lr, _), (loss, grad_norm) in zip(pending, values):
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {grad_norm}"
                kept = f"kept the last good checkpoint {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was saved"
                raise TrainingError(f"{what} at step {step} (lr {lr:.3g}): training diverged, lower the learning rate; {kept}")
            record = StepRecord(step, loss, lr, grad_norm, tokens / seconds, trained / seconds, elapsed)
            self.metrics.record_step(record)
            self._write_log(asdict(record))
        pending.clear()
        self._window_start = now

    def _evaluate(self, step: int) -> None:
        loss = self._validation_loss()
        if loss is not None:
            self.metrics.record_val(step, loss)
            self._write_log({"step": step, "val_loss": loss})

    @torch.no_grad()
    def _validation_loss(self) -> float | None:
        """Mean loss over every trained token of the held-out data; None when there is none or a stop came."""
        if not self.val_batches:
            return None
        total, count = torch.zeros((), device=self.device), 0
        self.model.eval()
        try:
            for batch in self.val_batches:
                if self._stop.is_set():
                    return None
                batch = batch.to(self.device)
                with self._training_precision():
                    _, losses = self.model(batch.inputs, batch.targets, reduction="none")
                total += losses.float().sum()
                count += batch.trained_tokens
        finally:
            self.model.train()
        return total.item() / count

    def _save(self) -> None:
        config = {"template": self.config.template, "stage": self.config.stage, "step": self.step,
                  "parent": self.parent, "training": self.config.to_dict()}
        state = {"step": self.step, "extra": {"elapsed": self._elapsed(), "data_sha256": self._data_digest}}
        try:
            path = checkpoint.save(self.run_dir / checkpoint.RUN_CHECKPOINT_DIR, self.model, self.tokenizer, config,
                                   optimizer=self.optimizer, trainer_state=state)
        except (checkpoint.CheckpointError, OSError) as error:
            raise TrainingError(f"cannot save the checkpoint: {error}") from None
        self.last_checkpoint, self._saved_step = path, self.step
        self.metrics.record_checkpoint(str(path))
        self._write_log({"step": self.step, "checkpoint": str(path)})

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _training_precision(self) -> ExitStack:
        """Autocast, plus on CPU in bf16 the plain-matmul attention: there the CPU flash-attention kernel
        made whole training steps 1.4x slower than attention done with bf16 matmuls (measured, tiny and
        d_model 256). Only the training thread uses it: sdpa_kernel flips process-wide flags."""
        stack = ExitStack()
        stack.enter_context(self._autocast())
        if self.bf16 and self.device.type == "cpu":
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        return stack

    def _event(self, text: str) -> None:
        self.metrics.event(text)
        if self._log is None:
            self._early_events.append(text)
        else:
            self._write_log({"step": self.step, "event": text})

    def _write_log(self, entry: dict) -> None:
        self._log.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._log.flush()
