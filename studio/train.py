"""The Trainer: data → tokenizer → model → optimizer loop (studio.optim: Muon + AdamW, or AdamW) with warm-up + cosine, validation, checkpoints.

One loop serves the TUI (on a thread worker) and the headless CLI. It never touches the UI: each
step goes into a Metrics buffer the UI polls, and into the run folder's metrics.jsonl. Stop and
pause are events checked every step (and inside validation), so a stop lands within a step.

A run saved with its trainer state can be resumed exactly: the data order is a pure function of
(seed, step), the optimizer moments, the step and the RNG states are restored, so on CPU at a pinned
--threads N a resumed run logs the same losses, bit for bit, as one never interrupted (studio.cpu_threads).
The run's settings are studio.train_config's, its data studio.training_data's, its folder and log studio.run_folder's.
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch

from studio import checkpoint, distributed
from studio.batching import Batch
from studio.cpu_threads import training_threads
from studio.devices import autocast, resolve_device, use_bf16
from studio.evaluation.probes import run_probes
from studio.keeping import DivergenceGuard, probe_loss, rescue_save
from studio.lint import dataset_tokenizer
from studio.masking import Example
from studio.metrics import DONE, FAILED, LOADING, PAUSED, RUNNING, STOPPED, STOPPING, Metrics, StepRecord
from studio.model import GPT, model_config
from studio.presets import PRESETS
from studio.models.interface import LanguageModel
from studio.optim import LR_SCALE, make_optimizer
from studio.run_control import RunControl
from studio.run_folder import METRICS_FILE, MetricsLog, check_run_dir, choose_run_dir, keep_metrics_up_to, replay_metrics
from studio.run_source import load_source, restore_trainer_state
from studio.run_state import RunStateKeeper
from studio.templates import get_template
from studio.token_losses import token_losses
from studio.tokenizer import train_tokenizer
from studio.train_config import DEFAULT_TEMPLATE, TrainConfig, TrainingError, lr_at
from studio.training_data import file_digest, load_conversations, load_corpus, pretrain_data, rendered_texts, sft_data
from studio.training_run import IN_PROCESS, RunModel
from studio.vocab_growth import grow_source_vocabulary

CUDA_SYNC_EVERY = 10  # on CUDA, reading the loss waits for the GPU: read it every few steps, not every step


class Trainer:
    """Prepares and runs one training run. `run()` blocks; the other methods are safe from any thread.
    A TrainingRun (studio.training_run): the studio's panes use it through that protocol only."""

    kind = IN_PROCESS
    stage = property(lambda self: self.config.stage)

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
        self.control = RunControl()
        self._weights_lock = threading.Lock()  # held while the optimizer changes the weights, and while copying them
        self._snapshot: tuple[int, LanguageModel] | None = None  # (step, copy) reused by token_losses
        self._log = MetricsLog()  # opened with the run folder, closed when run() ends
        self._run_state: RunStateKeeper | None = None  # run.json and the control file (rank 0)
        self.bf16 = False
        self.ranks = distributed.Ranks()  # torchrun's, set by prepare()
        self.sync_every = 1  # steps between reads of the losses (each read waits for the device)

    # ------------------------------------------------------------------------------------ control

    def request_stop(self) -> None:
        self.control.request_stop()
        if self.metrics.status in (RUNNING, PAUSED):
            self.metrics.set_status(STOPPING)

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def snapshot_model(self) -> LanguageModel:
        """A copy of the current weights in eval mode, for chatting with the model while it trains."""
        if self.model is None:
            raise TrainingError("the model is not ready yet: training is still preparing")
        with self._weights_lock:
            model = copy.deepcopy(self.model)  # deepcopy keeps the tied embedding tied; grads are not copied
        return model.eval().requires_grad_(False)

    # ------------------------------------------------------------------------------------ TrainingRun

    def model_ready(self) -> bool:
        return self.model is not None  # assigned last by prepare(), after the tokenizer and the template

    def newest_model(self) -> RunModel:
        """The weights of the current step (one copy per step, shared with token_losses)."""
        cached = self._snapshot
        if cached is None or cached[0] != self.step:
            cached = self._snapshot = (self.step, self.snapshot_model())
        return RunModel(cached[1], self.tokenizer, self.template, cached[0], "live weights")

    def token_losses(self, example: Example) -> list[float | None]:
        """Loss of each trained token of example under the current weights, None elsewhere (the heat-map)."""
        return token_losses(self.newest_model().model, example, self.tokenizer.pad_id, autocast(self.device, self.bf16))

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
            lost = distributed.lost_ranks(error, self.ranks) or _compile_failed(error, self.config)
            if lost is not None:  # another rank died, or torch.compile failed: one line
                self.metrics.set_status(FAILED, str(lost))
                raise lost from None
            self.metrics.set_status(FAILED, f"{type(error).__name__}: {error}")
            raise
        finally:
            if self._run_state is not None:
                self._run_state.close()
            self._log.close()
            if self.ranks.enabled:
                distributed.stop()

    def prepare(self) -> None:
        """Load the data, the tokenizer and the model, create the run folder; run() calls it if needed."""
        self.metrics.set_status(LOADING)
        self.config.validate()
        self.config = config = self.config.with_absolute_paths()  # saved with the run: a resume works from any folder
        self.device = resolve_device(config.device)
        self.ranks = distributed.from_environment()
        if self.ranks.enabled:
            self.device = distributed.start(self.ranks, self.device)
        self.control.ranks, self.control.device = self.ranks, self.device
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
        else:
            corpus, data_path = load_corpus(config)
        if source and not config.resume:  # characters the model has never seen get rows of their own
            grow_source_vocabulary(source, rendered_texts(conversations, self.template) if config.stage == "sft" else [corpus], self._event)
        preset = PRESETS[config.preset]
        self.tokenizer = source.tokenizer if source else (
            dataset_tokenizer(preset.tokenizer, conversations, preset.bpe_vocab_size) if config.stage == "sft"
            else train_tokenizer(preset.tokenizer, corpus.splitlines(), preset.bpe_vocab_size))
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
        self.optimizer = make_optimizer(model, config, self.device)
        # the guard below skips a non-finite update on the device (found_inf: fused AdamW, MuonAdamW); else read every step
        self.sync_every = CUDA_SYNC_EVERY if self.device.type != "cpu" and self.optimizer.defaults.get("fused") else 1
        self.train_model = distributed.wrap(model, self.ranks, self.device)
        if config.compile:
            self.train_model = torch.compile(self.train_model)
        self.parent = str(config.init_from) if config.init_from else None
        self.step, self._elapsed_before = 0, 0.0
        if config.resume:
            self.step, self._elapsed_before, self.parent = restore_trainer_state(
                source, self.optimizer, self._data_digest, config.steps, self._event)
        self._open_run_dir()
        self.model = model

    def _open_run_dir(self) -> None:
        config = self.config
        run_dir = distributed.broadcast(choose_run_dir(config) if self.ranks.is_main else None, self.ranks)
        self.run_dir = run_dir
        self._saved_step = -1
        if not self.ranks.is_main:  # rank 0 alone writes the run folder
            self._log.open(Path(os.devnull), self.step)
            return
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TrainingError(f"{run_dir}: cannot create the run folder ({error.strerror})") from None
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
        self._run_state = RunStateKeeper(run_dir, config.stage, config.steps, self.metrics,
                                         lambda command: {"pause": self.pause, "resume": self.resume, "stop": self.request_stop}[command]())
        self._run_state.start()

    # ------------------------------------------------------------------------------------ loop

    def _train(self) -> Path:
        config, optimizer = self.config, self.optimizer
        where = f"{self.device.type}{' bf16' if self.bf16 else ''}" + (f" x{self.ranks.world_size}" if self.ranks.enabled else "")
        self.metrics.start(config.stage, where, config.steps, self.step)
        params = [p for p in self.model.parameters() if p.requires_grad]  # the model's: an optimizer may step copies of them
        pending: list[tuple[int, torch.Tensor, torch.Tensor, float, Batch]] = []
        self._guard = DivergenceGuard(self._probe_loss())
        self._clock_start, self._paused_total = time.perf_counter(), 0.0
        self._window_start = self._clock_start
        first_step = self.step + 1
        # here, on the thread that trains: torch's thread count is that thread's
        tuner = training_threads(config.threads, self.device.type == "cpu" and not self.ranks.enabled, self._event)
        for step in range(first_step, config.steps + 1):
            if not self._wait_while_paused():
                break
            step_started = time.perf_counter()
            batch = self.batches.get(step)  # the global batch: every rank trains its own share of it
            lr = lr_at(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get(LR_SCALE, 1.0)
            loss = distributed.forward_backward(self.train_model, batch, self.ranks, config.grad_accum, self.tokenizer.pad_id,
                                                self.device, lambda: autocast(self.device, self.bf16))
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or math.inf)
            pending.append((step, loss, grad_norm, lr, batch))
            evaluate = step % config.eval_every == 0 or step == config.steps
            save = (config.save_every and step % config.save_every == 0) or step == config.steps
            read = len(pending) >= self.sync_every or evaluate or save
            if read:
                self._flush(pending)  # before the update: a non-finite step raises here
            with self._weights_lock:
                if optimizer.defaults.get("fused"):  # a step not read yet is decided on the device (no sync): a
                    # non-finite one skips the whole update, optimizer state included; alike on every rank (their
                    # gradients, and so their norms, are the all-reduced ones; a rank's own loss is not)
                    optimizer.found_inf = None if read else (  # grad_norm + loss: non-finite if either is
                        ~torch.isfinite(grad_norm if self.ranks.enabled else grad_norm + loss)).float()
                optimizer.step()
                self.step = step
            optimizer.zero_grad(set_to_none=True)
            if tuner is not None:
                tuner.step_done(time.perf_counter() - step_started, batch.tokens)
            if config.compile and step == first_step:
                self._report_compile_time()
            if evaluate and self.ranks.is_main:
                self._evaluate(step)
            if save and not self.control.stopping():
                self._save()
            if evaluate or save:
                self._window_start = time.perf_counter()  # keep validation and saving out of tokens/s
        if pending:
            self._flush(pending)
        stopped = self.control.stopping()
        if self.step != self._saved_step:
            self._save()
        distributed.barrier(self.ranks)  # every rank returns once the checkpoint is saved
        status = STOPPED if stopped else DONE
        verb = "stopped at" if stopped else "finished"
        self.metrics.set_status(status, f"{verb} step {self.step}/{config.steps}; checkpoint {self.last_checkpoint}")
        return self.last_checkpoint

    def _report_compile_time(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # once: the first step's time is the compile time
        seconds = time.perf_counter() - self._clock_start  # the first step, compiling included
        self._event(f"torch.compile: the first step took {seconds:.1f} s (compiling); the rates after it leave it out")
        self._window_start = time.perf_counter()

    def _wait_while_paused(self) -> bool:
        """Block while paused; False when a stop was requested."""
        paused = self.control.wait_while_paused(lambda: self.metrics.set_status(PAUSED), lambda: self.metrics.set_status(RUNNING))
        self._paused_total += paused
        self._window_start += paused
        return not self.control.stopping()

    def _elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._clock_start - self._paused_total

    def _flush(self, pending: list) -> None:
        """Read the pending losses (one GPU sync for all of them), check them, record them."""
        losses = distributed.all_reduce_sum(torch.stack([loss for _, loss, *_ in pending]), self.ranks)
        norms = torch.stack([norm.float() for _, _, norm, *_ in pending])
        values = torch.stack([losses, norms], dim=1).tolist()
        self.control.agree()
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
        if self._probes is not None and not self.control.stop_requested:
            stopped = lambda: self.control.stop_requested  # noqa: E731
            self._probes.at_validation(self.model, step, self._elapsed(), stopped, self.metrics, self._log.write, self._event)

    @torch.no_grad()
    def _validation_loss(self) -> float | None:
        """Mean loss over every trained token of the held-out data; None when there is none or a stop came."""
        if not self.val_batches:
            return None
        total, count = torch.zeros((), device=self.device), 0
        self.model.eval()
        try:
            for batch in self.val_batches:
                if self.control.stop_requested:
                    return None
                batch = batch.to(self.device)
                with autocast(self.device, self.bf16):
                    _, losses = self.model(batch.inputs, batch.targets, reduction="none")
                total += losses.float().sum()
                count += batch.trained_tokens
        finally:
            self.model.train()
        return total.item() / count

    def _probe_loss(self) -> float:
        return probe_loss(self.model, self.batches.get(1).to(self.device), autocast(self.device, self.bf16))

    def _kept(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint was saved"
        return f"kept the last good checkpoint, of step {self._saved_step}: {self.last_checkpoint}"

    def _save(self) -> None:
        """Save the weights if they are good (studio.keeping); else stop the run, keeping the last good checkpoint."""
        if not self.ranks.is_main:  # rank 0 saves; the others know where
            self.last_checkpoint, self._saved_step = self.run_dir / checkpoint.RUN_CHECKPOINT_DIR, self.step
            return
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

    def _event(self, text: str) -> None:
        self.metrics.event(text)
        self._log.event(self.step, text)


def _compile_failed(error: BaseException, config: TrainConfig) -> TrainingError | None:
    """torch.compile's errors hold whole compiler logs: one line instead, and the way around it."""
    if not config.compile or not type(error).__module__.startswith(("torch._dynamo", "torch._inductor")):
        return None
    first_line = next((line for line in str(error).splitlines() if line.strip()), "")
    return TrainingError(f"torch.compile failed ({type(error).__name__}: {first_line}); train without --compile")

