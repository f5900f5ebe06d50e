"""Training parts: the optimizer and schedule (``optimization``), strategies and thread pools
(``distribution``), checkpoints (``checkpoint``), the loop callbacks (``callbacks``), the loop
around ``keras.Model.fit`` (``loop``) and COCO evaluation (``evaluation``). A whole run from a
recipe is :mod:`fcos_tf.core.runner`.
"""
