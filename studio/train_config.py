"""What a training run is asked to do: TrainConfig (flags, run.toml, a checkpoint's saved settings) and
the learning-rate schedule it implies.

Torch-free, like studio.presets: the TUI's train form builds and validates a TrainConfig before torch
has loaded.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from studio.presets import DEFAULT_PRESET, PRESETS
from studio.templates import TEMPLATE_NAMES

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

STAGES = ("pretrain", "sft")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("auto", "muon", "adamw")  # auto: muon for the studio's GPT, adamw for a Hugging Face model (studio.optim)
PATH_FIELDS = ("dataset", "corpus", "init_from", "resume", "out_dir")
# Muon's lr over AdamW's when muon_lr is not set: 0.01 at the default lr, measured best for the default run
# (0.02: 53 % exact at 600 steps; 0.005: 25 % at 400 where 0.01 gave 41 %; docs/PERFORMANCE.md)
MUON_LR_RATIO = 0.01 / 6e-3
MIN_LR_RATIO = 0.05  # min_lr, when not set, is this share of lr (the default run: 6e-3 → 3e-4)
MAX_CONTEXT_SIZE = 32768  # tokens; far beyond what these models train at, far below a size that exhausts memory at once
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit integer
DEFAULT_TEMPLATE = "comando"  # the course's, for a model that has no template of its own


@dataclass
class TrainConfig:
    """Every field is settable from CLI flags or a --config run.toml (same names)."""

    stage: str = "sft"  # "pretrain" | "sft"
    preset: str = DEFAULT_PRESET  # model shape and tokenizer kind, see presets.PRESETS
    dataset: str | None = None  # sft; default paths.DEFAULT_DATASET
    corpus: str | None = None  # pretrain; default paths.DEFAULT_CORPUS
    template: str | None = None  # None: the init_from checkpoint's (an imported chat model's is `model`), else DEFAULT_TEMPLATE
    init_from: str | None = None  # checkpoint dir (or the course's .pt, or a Hugging Face folder) to start from: its weights and its tokenizer
    resume: str | None = None  # checkpoint dir to continue exactly (optimizer, RNG, step, data order)
    out_dir: str | None = None  # run folder; default checkpoints/<stage>-<timestamp>
    # Defaults chosen so `studio train` on the bundled data (tiny, CPU) finishes in well under a minute
    # and the model answers >= 90 % of the training instructions exactly (docs/PERFORMANCE.md, "Issue 13, second pass").
    steps: int = 500  # ~20 epochs of the bundled data with Muon; measured exact answers 99.0-99.3 % over 3 seeds (450 steps: 85 %)
    batch_size: int = 16  # the global batch: under torchrun it is shared by the ranks
    grad_accum: int = 1  # the batch is trained in this many pieces, summed (a batch bigger than a device holds)
    optimizer: str = "auto"  # see OPTIMIZERS
    lr: float = 6e-3  # AdamW's (with muon: the embeddings', the head's, the norms' and the biases')
    muon_lr: float | None = None  # Muon's, for the blocks' weight matrices; None: lr x MUON_LR_RATIO, so --lr scales both
    warmup_steps: int = 50
    min_lr: float | None = None  # the cosine ends here at the last step; None: lr x MIN_LR_RATIO
    weight_decay: float = 0.0  # memorising a small dataset is the goal; decay only slows it
    grad_clip: float = 1.0  # 0 disables clipping
    context_size: int | None = None  # None: the preset's (or the init_from checkpoint's)
    eval_every: int = 100  # steps between validation losses (and one at the end)
    probes: int = 5  # sft: held-out instructions answered greedily at each validation (0: none); studio.evaluation.probes
    probe_tokens: int = 80  # longest probe answer (the bundled held-out answers average 68 characters)
    save_every: int = 500  # steps between checkpoints (and one at the end or stop); 0: only then
    val_fraction: float = 0.05  # share of the examples (sft) or of the corpus tail (pretrain) held out
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool | None = None  # None: on for CUDA and for CPUs with native bf16 (AMX / avx512_bf16)
    train_on_prompt: bool = False
    skip_invalid: bool = False  # train on the valid records of a dataset with bad ones
    max_file_mb: float = 1024  # a dataset or corpus file larger than this is refused before it is read
    threads: int | None = None  # torch CPU threads, pinned; None: measured while training (studio.cpu_threads)
    compile: bool = False  # torch.compile the training step (its compile time is reported)

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

    @property
    def muon_peak_lr(self) -> float:
        return self.muon_lr if self.muon_lr is not None else self.lr * MUON_LR_RATIO

    def with_absolute_paths(self) -> "TrainConfig":
        """The same settings with every path absolute, so the run's saved settings work from any folder."""
        return replace(self, **{key: os.path.abspath(os.path.expanduser(getattr(self, key)))
                                for key in PATH_FIELDS if getattr(self, key)})

    def validate(self, source: str = "config") -> None:
        checks = [
            (self.stage in STAGES, f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}"),
            (self.preset in PRESETS, f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}"),
            (self.template is None or self.template in TEMPLATE_NAMES, f"template must be one of {', '.join(TEMPLATE_NAMES)}, got {self.template!r}"),
            (self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (1 <= self.grad_accum <= self.batch_size, f"grad_accum must be between 1 and batch_size ({self.batch_size}), got {self.grad_accum}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.muon_lr is None or self.muon_lr > 0, f"muon_lr must be > 0, got {self.muon_lr}"),
            (self.min_lr is None or 0 <= self.min_lr <= self.lr, f"min_lr must be between 0 and lr ({self.lr}), got {self.min_lr}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}"),
            (self.context_size is None or 2 <= self.context_size <= MAX_CONTEXT_SIZE,
             f"context_size must be between 2 and {MAX_CONTEXT_SIZE}, got {self.context_size}"),
            (0 <= self.seed <= MAX_SEED, f"seed must be between 0 and 2**63 - 1, got {self.seed}"),
            (self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}"),
            (self.probes >= 0, f"probes must be >= 0, got {self.probes}"),
            (self.probe_tokens >= 1, f"probe_tokens must be >= 1, got {self.probe_tokens}"),
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
    min_lr = config.min_lr if config.min_lr is not None else config.lr * MIN_LR_RATIO
    return min_lr + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (config.lr - min_lr)
