"""fcos_tf.training.checkpoint: resuming is exact; a checkpoint that does not fit is refused."""

import gc
import logging

import keras
import pytest
import tensorflow as tf

from fcos_tf.training import checkpoint as checkpoint_lib

_UNRESTORED = ("unrestored values", "could not be found in the restored object")


def _model(units):
    model = keras.Sequential([keras.Input([2]), keras.layers.Dense(units)])
    model(tf.zeros([1, 2]))
    return model


def _saved(tmp_path):
    """Prefix of a checkpoint of a model (Dense 2 -> 3) with its optimizer's variables."""
    model = _model(3)
    optimizer = keras.optimizers.SGD(momentum=0.9)
    optimizer.build(model.trainable_variables)
    return tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))


def _unrestored_warnings(caplog):
    return [r.getMessage() for r in caplog.records if any(s in r.getMessage() for s in _UNRESTORED)]


def _checkpointer(workdir, units):
    model = _model(units)
    optimizer = keras.optimizers.SGD(momentum=0.9)
    optimizer.build(model.trainable_variables)
    return checkpoint_lib.Checkpointer(str(workdir), model, optimizer, tf.distribute.get_strategy())


def test_checkpointer_resumes_exactly_and_refuses_another_model(tmp_path, caplog):
    saved = _checkpointer(tmp_path, 3)
    saved.optimizer.iterations.assign(5)
    saved.save()
    resumed = _checkpointer(tmp_path, 3)
    assert resumed.restore() == 5
    for a, b in zip(resumed.checkpoint.model.weights, saved.checkpoint.model.weights):
        assert (a.numpy() == b.numpy()).all()

    caplog.set_level(logging.WARNING)
    other = _checkpointer(tmp_path, 4)  # another shape: the restore itself fails
    with pytest.raises(
        checkpoint_lib.CheckpointMismatchError, match="Received incompatible tensor with shape"
    ) as error:
        other.restore()
    assert "does not fit the model built from the config" in str(error.value)
    del other, error  # TensorFlow warns about the values it left unmatched, here
    gc.collect()
    caplog.clear()

    # A model with a weight the checkpoint lacks: refused by the check, quietly too.
    bigger = keras.Sequential([keras.Input([2]), keras.layers.Dense(3), keras.layers.Dense(1)])
    bigger(tf.zeros([1, 2]))
    optimizer = keras.optimizers.SGD(momentum=0.9)
    optimizer.build(bigger.trainable_variables)
    checkpointer = checkpoint_lib.Checkpointer(
        str(tmp_path), bigger, optimizer, tf.distribute.get_strategy()
    )
    with pytest.raises(
        checkpoint_lib.CheckpointMismatchError, match="not bound to checkpointed values"
    ):
        checkpointer.restore()
    del checkpointer, bigger, optimizer
    gc.collect()
    assert _unrestored_warnings(caplog) == []
