"""The Trainer: data → tokenizer → model → AdamW loop with warm-up + cosine, validation, checkpoints.

One loop serves the TUI (on a thread worker) and the headless CLI. It never touches the UI: each
step goes into a Metrics buffer the UI polls, and into the run folder's metrics.jsonl. Stop and
pause are events checked every step (and inside validation), so a stop lands within a step.

A run saved with its trainer state can be resumed exactly: the data order is a pure function of
(seed, step), the optimizer moments, the step and the RNG states are restored, so on CPU a resumed
run logs the same losses, bit for bit, as one that was never interrupted. The run's settings are
studio.train_config's, its data studio.training_data's, its folder and log studio.run_folder's.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from studio import checkpoint
from studio.batching import Batch, collate, example_rows
from studio.devices import resolve_device, use_bf16
from studio.evaluation.probes import run_probes
from studio.keeping import DivergenceGuard, probe_loss, rescue_save
from studio.lint import dataset_texts
from studio.masking import IGNORE, Example
from studio.metrics import (
    DONE,
    FAILED,
    LOADING,
    PAUSED,
    RUNNING,
    STOPPED,
    STOPPING,
    Metrics,
    StepRecord,
)
from studio.model import GPT, PRESETS, model_config
from studio.models.interface import LanguageModel
from studio.optim import make_optimizer
from studio.rows import row_tokens
from studio.run_folder import (
    METRICS_FILE,
    MetricsLog,
    check_run_dir,
    choose_run_dir,
    keep_metrics_up_to,
    replay_metrics,
)
from studio.run_source import load_source
from studio.templates import get_template
from studio.tokenizer import train_tokenizer
from studio.train_config import DEFAULT_TEMPLATE, TrainConfig, TrainingError, lr_at
from studio.training_data import (
    file_digest,
    load_conversations,
    load_corpus,
    pretrain_data,
    rendered_texts,
    sft_data,
)
from studio.vocab_growth import grow_source_vocabulary

CUDA_SYNC_EVERY = 10  # on CUDA, reading the loss waits for the GPU: read it every few steps, not every step


class Trainer:
    """Prepares and runs one training run. `run()` blocks; the other methods are safe from any thread."""

    def __init__(self, config: TrainConfig, metrics: Metrics | None = None):
        self.config = config
        self.metrics = metrics if metrics is not None else Metrics()
        # set by preparation (the UI waits for `model`, so it is assigned last)
        self.tokenizer = self.template = None
        self.examples: list[Example] = []
        self.val_examples: list[Example] = []
        self.model: LanguageModel | None = None
        self.device = torch.device("cpu")
        self.run_dir = self.last_checkpoint = None  # Path | None: the run folder and its newest checkpoint
        self.step = 0
        self._stop = threading.Event()
        self._unpaused = threading.Event()
        self._unpaused.set()
        self._weights_lock = threading.Lock()  # held while the optimizer changes the weights, and while copying them
        self._snapshot: tuple[int, LanguageModel] | None = None  # (step, copy) reused by token_losses
        self._log = MetricsLog()  # opened with the run folder, closed when run() ends
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

    def snapshot_model(self) -> LanguageModel:
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
        window = row_tokens(model.config.context_size)
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
            self._log.close()

    def prepare(self) -> None:
        """Load the data, the tokenizer and the model, create the run folder; run() calls it if needed."""
        self.metrics.set_status(LOADING)
        self.config.validate()
        self.config = config = self.config.with_absolute_paths()  # saved with the run: a resume works from any folder
        self.device = resolve_device(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores where bf16 is off
            torch.backends.cudnn.allow_tf32 = True
        source, self.config = load_source(config, self.device, self._event, partial(self.metrics.set_status, LOADING))
        config = self.config  # a resume replaces it with the resumed run's settings
        check_run_dir(config)
        # None: the source model's own template (an imported chat model's is `model`)
        config.template = config.template or (source.config.get("template", DEFAULT_TEMPLATE) if source else DEFAULT_TEMPLATE)
        torch.manual_seed(config.seed)
        # `model` is the source's chat template; without a Hugging Face source a one-line ValueError, before any work
        self.template = get_template(config.template, source.tokenizer if source else None)
        if config.stage == "sft":
            conversations, data_path = load_conversations(config, self._event)
            texts = dataset_texts(conversations)
        else:
            corpus, data_path = load_corpus(config)
            texts = corpus.splitlines()
        if source and not config.resume:  # characters the model has never seen get rows of their own
            grow_source_vocabulary(source, rendered_texts(conversations, self.template) if config.stage == "sft" else [corpus], self._event)
        preset = PRESETS[config.preset]
        self.tokenizer = source.tokenizer if source else train_tokenizer(preset.tokenizer, texts, preset.bpe_vocab_size)
        model = source.model if source else GPT(model_config(config.preset, self.tokenizer.vocab_size, context_size=config.context_size))
        context = model.config.context_size
        if config.stage == "sft":
            run_data = sft_data(conversations, self.template, self.tokenizer, context, config, self._event)
            self._probes = run_probes(config, conversations, run_data, self.tokenizer, self.template)
        else:
            run_data, self._probes = pretrain_data(corpus, self.tokenizer, context, config, self._event), None
        self.examples, self.val_examples = run_data.examples, run_data.val_examples
        self.batches, self.val_batches = run_data.batches, run_data.val_batches
        self._data_digest = file_digest(data_path)
        model.to(self.device).train()
        self.bf16 = use_bf16(config.bf16, self.device)
        self.optimizer = make_optimizer(model, config.lr, config.weight_decay)
        self.parent = str(config.init_from) if config.init_from else None
        self.step, self._elapsed_before = 0, 0.0
        if config.resume:
            self._restore_trainer_state(source)
        self._open_run_dir()
        self.model = model

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
        config, run_dir = self.config, choose_run_dir(self.config)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TrainingError(f"{run_dir}: cannot create the run folder ({error.strerror})") from None
        self.run_dir = run_dir
        self._saved_step = -1
        metrics_path = run_dir / METRICS_FILE
        if config.resume:
            kept = keep_metrics_up_to(metrics_path, self.step)
            if not self.metrics.snapshot().train:  # a new buffer: show the kept curve
                replay_metrics(kept, self.metrics)
            if Path(config.resume).resolve() == (run_dir / checkpoint.RUN_CHECKPOINT_DIR).resolve():
                self._saved_step = self.step  # that checkpoint is this step already
                self.last_checkpoint = run_dir / checkpoint.RUN_CHECKPOINT_DIR
        elif metrics_path.exists():
            metrics_path.unlink()  # a new run in a reused --out folder starts a new log
        self._log.open(metrics_path, self.step)

    # ------------------------------------------------------------------------------------ loop

    def _train(self) -> Path:
        config, model, optimizer = self.config, self.model, self.optimizer
        self.metrics.start(config.stage, f"{self.device.type}{' bf16' if self.bf16 else ''}", config.steps, self.step)
        params = [p for p in model.parameters() if p.requires_grad]  # the model's: an optimizer may step copies of them
        sync_every = 1 if self.device.type == "cpu" else CUDA_SYNC_EVERY
        pending: list[tuple[int, torch.Tensor, torch.Tensor, float, Batch]] = []
        self._guard = DivergenceGuard(self._probe_loss())
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
                raise TrainingError(f"{what} at step {step} (lr {lr:.3g}): training diverged, lower the learning rate; {self._kept()}")
            record = StepRecord(step, loss, lr, grad_norm, tokens / seconds, trained / seconds, elapsed)
            self.metrics.record_step(record)
            self._log.write(asdict(record))
        pending.clear()
        self._window_start = now

    def _evaluate(self, step: int) -> None:
        loss = self._validation_loss()
        if loss is not None:
            self.metrics.record_val(step, loss)
            self._log.write({"step": step, "val_loss": loss})
        if self._probes is not None and not self._stop.is_set():
            self._probes.at_validation(self.model, step, self._elapsed(), self._stop.is_set, self.metrics, self._log.write, self._event)

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

    def _probe_loss(self) -> float:
        return probe_loss(self.model, self.batches.get(1).to(self.device), self._training_precision())

    def _kept(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint was saved"
        return f"kept the last good checkpoint, of step {self._saved_step}: {self.last_checkpoint}"

    def _save(self) -> None:
        """Save the weights if they are good (studio.keeping); else stop the run, keeping the last good checkpoint."""
        problem = self._guard.problem(self.model, self._probe_loss())
        if problem:
            raise TrainingError(f"training diverged: at step {self.step} {problem}; lower the learning rate; {self._kept()}")
        config = {"template": self.config.template, "stage": self.config.stage, "step": self.step,
                  "parent": self.parent, "training": self.config.to_dict()}
        state = {"step": self.step, "extra": {"elapsed": self._elapsed(), "data_sha256": self._data_digest}}
        target = self.run_dir / checkpoint.RUN_CHECKPOINT_DIR
        try:
            path = checkpoint.save(target, self.model, self.tokenizer, config, optimizer=self.optimizer, trainer_state=state)
        except Exception as error:  # noqa: BLE001 - whatever failed (a full disk, text JSON cannot hold), the weights must survive
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            where = rescue_save(self.run_dir, self.step, self.model, self.tokenizer, config)
            raise TrainingError(f"cannot save the checkpoint in {target}: {reason}; {where}") from None
        self.last_checkpoint, self._saved_step = path, self.step
        self.metrics.record_checkpoint(str(path))
        self._log.write({"step": self.step, "checkpoint": str(path)})

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
        self._log.event(self.step, text)
