"""The network the serving graph runs: BatchNorms folded, at float32 or bfloat16.

The training model applies each frozen BatchNorm
(:class:`fcos_tf.modeling.backbone.FrozenBatchNorm`) inside its convolution, scaling the
kernel on every call (:class:`fcos_tf.modeling.backbone.FrozenBNConv2D`). The serving graph
runs a copy with every BatchNorm folded into its convolution's stored weights once
(:func:`fcos_tf.serving.bn_folding.fold_batch_norms`, in float64, also the head's
BatchNorms): it holds plain convolutions, and grappler fuses convolution, bias and ReLU into
one oneDNN kernel.

``"bfloat16"`` builds that copy under the Keras ``"bfloat16"`` dtype policy: weights stored
in bfloat16 (folded in float64, rounded once) and every layer computing in bfloat16, the
head's GroupNorm statistics in float32 (:class:`fcos_tf.modeling.group_norm.GroupNorm`). The
detector casts the head outputs to float32, so decoding, NMS and the output mapping are
float32 as in the float32 export. On CPUs with AVX-512 BF16 or AMX the convolutions run at
the bfloat16 matrix rate; on older CPUs oneDNN emulates bfloat16 and it is slower than
float32 (BENCHMARKS.md, "Serving precision").

The copy runs one image at a time (``FCOS.enable_per_image_inference``): GroupNorm then runs
on oneDNN's fused batch norm kernels. Its network is frozen: traced once for
``[1, H, W, 3]`` inputs with every weight a graph constant. oneDNN then reorders each
convolution's weights once into its preferred blocked layout and keeps them, instead of
reading the plain variable layout on every call (1.15x faster in float32 on a 2-core AVX-512
CPU, BENCHMARKS.md).
"""

import keras
import tensorflow as tf

# The public freezing API is the TF1 session one; this is the function TensorFlow's own
# TFLite converter freezes TF2 functions with.
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from fcos_tf.serving import bn_folding

PRECISIONS = ("float32", "bfloat16")


def check_precision(precision: str) -> str:
    """Returns ``precision`` if it is one of :data:`PRECISIONS`, else raises ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, got {precision!r}.")
    return precision


def inference_model(
    model: keras.Model, precision: str = "float32", *, freeze: bool = True
) -> keras.Model:
    """The copy of ``model`` that the serving graph runs.

    Args:
        model: a built ``fcos_tf.modeling.fcos.FCOS`` (float32 or mixed precision; its
            backbone a functional ``keras.Model``, as every backbone of this package).
        precision: ``"float32"`` or ``"bfloat16"``.
        freeze: run the frozen one-image network (:func:`frozen_image_network`) in
            ``predict_step``; False runs the copy's layers (its variables).

    Returns:
        A new built ``FCOS`` with every conv -> BatchNorm pair folded, computing in
        ``precision`` with float32 outputs, whose ``predict_step`` runs one image at a time
        on fused GroupNorm kernels (``FCOS.enable_per_image_inference``).
    """
    check_precision(precision)
    network = bn_folding.fold_batch_norms(model, dtype=precision)
    network.enable_per_image_inference()
    if freeze:
        network.image_network = frozen_image_network(network)
    return network


def frozen_image_network(network: keras.Model):
    """``network``'s inference pass on one image, with its weights as graph constants.

    Args:
        network: a built ``FCOS`` after ``enable_per_image_inference`` (the weights are
            read now: later changes are not seen).

    Returns:
        A callable ``[1, H, W, 3]`` float32 -> the dict of ``network.call``.
    """
    traced = tf.function(lambda images: network(images, training=False)).get_concrete_function(
        tf.TensorSpec([1, None, None, 3], tf.float32)
    )
    frozen = convert_variables_to_constants_v2(traced)
    structure = traced.structured_outputs

    def image_network(images):
        return tf.nest.pack_sequence_as(structure, frozen(tf.convert_to_tensor(images, tf.float32)))

    return image_network
