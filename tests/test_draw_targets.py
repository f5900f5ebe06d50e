"""fcos-draw-targets: the first training batch as PNGs, also from a dataset smaller than the
batch."""

import os

import pytest

from fcos_tf import draw_targets
from fcos_tf.data import synthetic


@pytest.fixture(scope="module")
def coco_files(tmp_path_factory):
    """Three synthetic 64-pixel images as COCO (annotations file, image folder)."""
    return synthetic.write_coco(str(tmp_path_factory.mktemp("coco")), 3, image_size=64)


def _draw(coco_files, output, *flags):
    annotations, images = coco_files
    return draw_targets.main(
        [
            f"--annotations={annotations}",
            f"--images={images}",
            f"--output={output}",
            "--short_side=64,64",
            "--max_size=96",
            *flags,
        ]
    )


def test_fewer_images_than_the_batch_draws_them_all_and_says_so(coco_files, tmp_path, capsys):
    output = tmp_path / "targets"
    assert _draw(coco_files, output) == 0  # the default --batch_size=4
    out, err = capsys.readouterr()
    assert sorted(os.listdir(output)) == ["0.png", "1.png", "2.png"]
    assert sorted(out.split()) == sorted(str(output / name) for name in os.listdir(output))
    assert "The dataset has 3 usable images, fewer than --batch_size=4: drawing them." in err, err


def test_a_full_batch_draws_the_batch_size(coco_files, tmp_path, capsys):
    output = tmp_path / "targets"
    assert _draw(coco_files, output, "--batch_size=2") == 0
    out, err = capsys.readouterr()
    assert len(os.listdir(output)) == 2 and len(out.split()) == 2
    assert "usable" not in err
