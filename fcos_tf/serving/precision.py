"""The network the serving graph runs: BatchNorms folded, at float32 or bfloat16.

A trained detector computes its frozen BatchNorms
(:class:`fcos_tf.modeling.backbone.FrozenBatchNorm`) as a separate float32 multiply-add after
each convolution. For inference they are constant
affine maps, so the serving graph runs a copy with each one folded into its convolution
(:func:`fcos_tf.serving.bn_folding.fold_batch_norms`): grappler then fuses convolution, bias
and ReLU into one oneDNN kernel and no float32 round trip is left between convolutions.

``"bfloat16"`` builds that copy under the Keras ``"bfloat16"`` dtype policy: weights stored
in bfloat16 (folded in float64, rounded once) and every layer computing in bfloat16, the
head's GroupNorm statistics in float32 (:class:`fcos_tf.modeling.group_norm.GroupNorm`). The
detector casts the head outputs to float32, so decoding, NMS and the output mapping are
float32 as in the float32 export. On CPUs with AVX-512 BF16 or AMX the convolutions run at
the bfloat16 matrix rate; on older CPUs oneDNN emulates bfloat16 and it is slower than
float32 (BENCHMARKS.md, "Serving precision").
"""

import keras

from fcos_tf.serving import bn_folding

PRECISIONS = ("float32", "bfloat16")


def check_precision(precision: str) -> str:
    """Returns ``precision`` if it is one of :data:`PRECISIONS`, else raises ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, got {precision!r}.")
    return precision


def inference_model(model: keras.Model, precision: str = "float32") -> keras.Model:
    """The copy of ``model`` that the serving graph runs.

    Args:
        model: a built ``fcos_tf.modeling.fcos.FCOS`` (float32 or mixed precision; its
            backbone a functional ``keras.Model``, as every backbone of this package).
        precision: ``"float32"`` or ``"bfloat16"``.

    Returns:
        A built ``FCOS`` with every conv -> BatchNorm pair folded, computing in ``precision``
        with float32 outputs (``model`` itself when it is float32 and holds no BatchNorm).
    """
    check_precision(precision)
    if precision == "float32":
        if not bn_folding.count_batch_norms(model):
            return model
        return bn_folding.fold_batch_norms(model, dtype="float32")
    return bn_folding.fold_batch_norms(model, dtype="bfloat16")
