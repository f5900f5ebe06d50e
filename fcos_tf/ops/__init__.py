"""The method's maths, in plain TensorFlow ops, shared by the data pipeline and the model.

``boxes`` (xyxy maths, converters by format pair), ``locations`` (strides, size ranges,
location grids; their default values in ``location_defaults``, plain Python), ``targets``
(the assignment, run inside ``tf.data``), ``losses`` (focal, GIoU/IoU, center-ness) and
``postprocess`` (decode, score, top-k, NMS). Nothing here imports another layer of the
package.
"""
