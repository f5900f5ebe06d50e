"""Keras callbacks of a training run: ``TrainingControl`` decides when to save and stop.

It saves every ``checkpoint_every`` steps and at the end, on SIGTERM/SIGINT saves then stops,
and on a non-finite loss stops without saving, so that the last checkpoint on disk is the
last good one. A :class:`SignalWatchdog` makes sure a signal ends the process even when no
batch boundary comes (an input pipeline blocked inside a C++ call). :class:`EpochProgress`
is the progress bar, in epochs of the run's step counter.
"""

import math
import os
import signal
import sys
import threading
import time

import keras
import tensorflow as tf
from absl import logging as absl_logging
from keras.utils import Progbar

from fcos_tf.training.optimization import current_learning_rate, global_step


class SignalWatchdog:
    """Ends the process when a signal is not taken up at a batch boundary in time.

    A Python signal handler runs only when the main thread executes Python code; while it
    waits inside a C++ call (a ``GetNext`` of a stuck input pipeline, a long replay ``skip``)
    a SIGTERM or SIGINT would be recorded and never acted on. The C-level handler writes the
    signal number to the wake-up fd (``signal.set_wakeup_fd``) whatever the main thread does;
    a thread reading it arms a deadline. :meth:`disarm`, called at the batch boundary that
    handles the signal (where the checkpoint is written), cancels it; otherwise one line is
    logged and the process ends with ``os._exit(128 + signum)``. The last complete
    checkpoint stays: a checkpoint is recorded as the latest only once all its files exist.

    The deadline is ``grace_s`` plus twice the longest step seen so far (without the first,
    which includes tracing), so a slow but moving step still reaches its boundary.

    Args:
        grace_s: seconds granted beyond the expected time to the next batch boundary.
    """

    def __init__(self, grace_s: float = 5.0):
        self.grace_s = float(grace_s)
        self.step_seconds = 0.0
        self._handled = threading.Event()
        self._stopping = False
        self._fds = None
        self._previous_fd = -1
        self._thread = None

    def start(self) -> bool:
        """Installs the wake-up fd and the thread; False (nothing done) off the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # the C handler must never block
        try:
            self._previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        except ValueError:
            os.close(read_fd)
            os.close(write_fd)
            return False
        self._fds = (read_fd, write_fd)
        self._stopping = False
        self._thread = threading.Thread(
            target=self._watch, name="fcos-signal-watchdog", daemon=True
        )
        self._thread.start()
        return True

    def disarm(self) -> None:
        """The signal reached a batch boundary: the run stops there, no forced exit."""
        self._handled.set()

    def stop(self) -> None:
        """Puts the previous wake-up fd back and ends the thread."""
        if self._fds is None:
            return
        signal.set_wakeup_fd(self._previous_fd)
        self._stopping = True
        self._handled.set()  # ends a pending wait
        os.write(self._fds[1], b"\0")  # wakes the thread, which then exits
        self._thread.join(timeout=5.0)
        for fd in self._fds:
            os.close(fd)
        self._fds = None

    def _watch(self):
        read_fd = self._fds[0]
        while True:
            data = os.read(read_fd, 64)
            if self._stopping or not data:
                return
            signums = [b for b in data if b]
            if not signums or self._handled.is_set():
                continue
            timeout = self.grace_s + 2.0 * self.step_seconds
            if self._handled.wait(timeout):
                if self._stopping:
                    return
                continue
            signum = signums[-1]
            message = (
                f"{signal.Signals(signum).name} not handled at a batch boundary within "
                f"{timeout:.0f} s (the input pipeline or the step is blocked): exiting "
                f"with status {128 + signum}; the last complete checkpoint is kept."
            )
            print(message, file=sys.stderr, flush=True)
            os._exit(128 + signum)


class TrainingControl(keras.callbacks.Callback):
    """Checkpoints, stops at the last step, on a signal or on a non-finite loss; logs scalars.

    After every batch, in this order: a non-finite loss stops the run and blocks every later
    save; a pending SIGTERM/SIGINT saves and stops; the step counter reaching
    ``total_steps`` stops; a multiple of ``checkpoint_every`` saves. The end of training
    saves unless the loss went non-finite.

    Args:
        checkpointer: a :class:`fcos_tf.training.checkpoint.Checkpointer`.
        total_steps: last step of the run.
        checkpoint_every: save interval in steps.
        summary_writer: optional ``tf.summary`` writer for step scalars (chief only).
        log_every: scalar interval in steps.
        handle_signals: install SIGTERM/SIGINT handlers for the duration of training, with a
            :class:`SignalWatchdog` ending the process if no batch boundary comes within
            ``signal_grace_s`` (plus twice the step time) of a signal.
        signal_grace_s: see ``handle_signals``.
    """

    def __init__(
        self,
        checkpointer,
        total_steps: int,
        checkpoint_every: int,
        summary_writer=None,
        log_every: int = 20,
        handle_signals: bool = True,
        signal_grace_s: float = 5.0,
    ):
        super().__init__()
        self.checkpointer = checkpointer
        self.total_steps = int(total_steps)
        self.checkpoint_every = int(checkpoint_every)
        self.summary_writer = summary_writer
        self.log_every = int(log_every)
        self.handle_signals = handle_signals
        self.non_finite_step = None
        self.received_signal = None
        self._previous_handlers = {}
        self._watchdog = SignalWatchdog(signal_grace_s) if handle_signals else None
        self._batch_started = None
        self._batches_seen = 0

    # Signals arrive between Python bytecodes; the handler only records them, the save
    # happens at the next batch boundary where the variables are consistent.
    def _on_signal(self, signum, frame):
        if self.received_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C does not wait
        self.received_signal = signum

    def on_train_begin(self, logs=None):
        if self.handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                try:
                    self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
                except ValueError:  # not the main thread: leave signals alone
                    break
            if self._previous_handlers:
                self._watchdog.start()

    def _restore_signal_handlers(self):
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}
        if self._watchdog is not None:
            self._watchdog.stop()

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if self._watchdog is not None and self._batch_started is not None:
            self._batches_seen += 1
            if self._batches_seen > 1:  # the first step includes tracing
                self._watchdog.step_seconds = max(
                    self._watchdog.step_seconds, time.monotonic() - self._batch_started
                )
        logs = logs or {}
        step = global_step(self.model.optimizer)
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.non_finite_step = step
            self.model.stop_training = True
            return
        if self.received_signal is not None:
            if self._watchdog is not None:
                self._watchdog.disarm()
            self.checkpointer.save()
            self.model.stop_training = True
            return
        if self.summary_writer is not None and step % self.log_every == 0:
            with self.summary_writer.as_default(step=step):
                for key, value in logs.items():
                    tf.summary.scalar(f"train/{key}", float(value))
                tf.summary.scalar(
                    "train/learning_rate", current_learning_rate(self.model.optimizer)
                )
        if step >= self.total_steps:
            self.model.stop_training = True
        if step % self.checkpoint_every == 0:
            self.checkpointer.save()

    def on_train_end(self, logs=None):
        self._restore_signal_handlers()
        if self.non_finite_step is None:
            self.checkpointer.save()
        if self.summary_writer is not None:
            self.summary_writer.flush()


def _print_as_keras(message):
    """A line where Keras' progress bars write theirs: stdout, or absl's log when Keras'
    interactive logging is off (``keras.config.disable_interactive_logging``)."""
    if keras.config.is_interactive_logging_enabled():
        print(message, flush=True)
    else:
        absl_logging.info(message)


class _ProgbarFrom(Progbar):
    """A ``keras.utils.Progbar`` whose first update is step ``start + 1`` of its target.

    Its time per step (and so the ETA) counts the steps it has seen, not the ``start``
    steps before it.
    """

    def __init__(self, start: int, **kwargs):
        super().__init__(**kwargs)
        self.start = int(start)

    def _estimate_step_duration(self, current, now):
        return super()._estimate_step_duration(current - self.start, now)


class EpochProgress(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, in epochs of the run's step counter.

    ``fit`` runs Keras epochs of ``steps_per_epoch`` steps from the step it starts at, so a
    run resumed at step 162 of 100-step epochs would show steps 163-262 as one epoch,
    "100/100". Here epoch ``e`` (from 1) holds the steps ``(e - 1) * steps_per_epoch + 1``
    to ``e * steps_per_epoch`` of the optimizer's counter: the resumed run shows "Epoch 2/5"
    from 63/100, the next epoch line comes after step 200, and a run that stops inside an
    epoch (``total_steps``, a signal, a non-finite loss) leaves its bar where it stopped.

    The losses shown are the step's logs, Keras' running means: they restart where Keras'
    epochs start (in a resumed run, every ``steps_per_epoch`` steps from the resume step).

    The epoch length and count are ``fit``'s ``steps_per_epoch`` and ``epochs`` (Keras'
    ``params``), as for Keras' own bar.
    """

    def __init__(self):
        super().__init__()
        self._epoch = None
        self._logs = {}
        self._open = False

    def on_epoch_begin(self, epoch, logs=None):
        pass  # the bar's epochs follow the step counter: on_train_batch_begin

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        # The bar of an epoch starts before its first step, as Keras' does (its time
        # includes that step).
        epoch, done = divmod(global_step(self.model.optimizer), self.target)
        if epoch != self._epoch:
            self._finish()
            self._epoch = epoch
            self.progbar = _ProgbarFrom(
                done,
                target=self.target,
                verbose=self.verbose,
                unit_name="step",
                stateless_metrics=set(),
            )
            self.seen = done
            self._open = True
            if self.verbose and self.epochs > 1:
                _print_as_keras(f"Epoch {epoch + 1}/{self.epochs}")

    def on_train_batch_end(self, batch, logs=None):
        self.seen = global_step(self.model.optimizer) - self._epoch * self.target
        self._logs = dict(logs or {})
        if self.verbose == 1:
            self.progbar.update(self.seen, list(self._logs.items()), finalize=False)
        if self.seen == self.target:
            self._finish()

    def on_train_end(self, logs=None):
        self._finish()

    def _finish(self):
        """Ends the open epoch's bar at the step reached (one line when not a terminal)."""
        if self._open:
            self.progbar.update(self.seen, list(self._logs.items()), finalize=True)
            self._open = False
