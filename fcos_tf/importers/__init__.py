"""Weights from elsewhere mapped onto this package's models, every tensor checked:
ImageNet backbones (``imagenet``: keras.applications and torchvision ResNets) and
torchvision's COCO FCOS (``torchvision``).
"""
