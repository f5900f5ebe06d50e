"""The network: backbones (ResNet with frozen BatchNorm, the small CPU backbone, MobileNets),
GroupNorm, the FPN, the shared head with its per-level scales, and the ``FCOS`` model that
wires them (``fcos``). Imports :mod:`fcos_tf.ops` only.
"""
