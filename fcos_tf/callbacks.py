"""Keras callbacks of a training run: ``TrainingControl`` decides when to save and stop.

It saves every ``checkpoint_every`` steps and at the end, on SIGTERM/SIGINT saves then stops,
and on a non-finite loss stops without saving, so that the last checkpoint on disk is the
last good one.
"""

import math
import signal

import keras
import tensorflow as tf

from fcos_tf.optimization import current_learning_rate, global_step


class TrainingControl(keras.callbacks.Callback):
    """Checkpoints, stops at the last step, on a signal or on a non-finite loss; logs scalars.

    After every batch, in this order: a non-finite loss stops the run and blocks every later
    save; a pending SIGTERM/SIGINT saves and stops; the step counter reaching
    ``total_steps`` stops; a multiple of ``checkpoint_every`` saves. The end of training
    saves unless the loss went non-finite.

    Args:
        checkpointer: a :class:`fcos_tf.rundir.Checkpointer`.
        total_steps: last step of the run.
        checkpoint_every: save interval in steps.
        summary_writer: optional ``tf.summary`` writer for step scalars (chief only).
        log_every: scalar interval in steps.
        handle_signals: install SIGTERM/SIGINT handlers for the duration of training.
    """

    def __init__(self, checkpointer, total_steps: int, checkpoint_every: int,
                 summary_writer=None, log_every: int = 20, handle_signals: bool = True):
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

    # Signals arrive between Python bytecodes; the handler only records them, the save
    # happens at the next batch boundary where the variables are consistent.
    def _on_signal(self, signum, frame):  # pylint: disable=unused-argument
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

    def _restore_signal_handlers(self):
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        step = global_step(self.model.optimizer)
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.non_finite_step = step
            self.model.stop_training = True
            return
        if self.received_signal is not None:
            self.checkpointer.save()
            self.model.stop_training = True
            return
        if self.summary_writer is not None and step % self.log_every == 0:
            with self.summary_writer.as_default(step=step):
                for key, value in logs.items():
                    tf.summary.scalar(f"train/{key}", float(value))
                tf.summary.scalar("train/learning_rate",
                                  current_learning_rate(self.model.optimizer))
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
