"""The recipes: one ``get_config() -> ml_collections.ConfigDict`` per file, loaded by name.

``fcos-train --config=fcos_r50_1x_improved`` and
``fcos_tf.core.config.load_recipe("fcos_r50_1x_improved")`` find a recipe here by its file
name; a recipe of one's own is given by its path instead. Each file's docstring gives its
command, runtime and expected AP.
"""
