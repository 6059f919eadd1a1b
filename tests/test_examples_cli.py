"""The examples' command lines (``--help``, ``--threads``) and the figure helpers they and the CLI use."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scoresde.errors import ConfigError, ShapeError
from scoresde.plotting import draw_image_grid, image_grid_figure, save_images, save_samples_figure

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def _load_example(path: Path):
    """Import an example script as a module (its folder on ``sys.path``, as when it runs)."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_help_lists_threads(script, capsys):
    main = _load_example(script).main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help at any space
    assert "--threads N" in out and "(default: 1" in out.split("--threads N", 1)[1]


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_rejects_threads_below_one(script, capsys):
    with pytest.raises(SystemExit) as e:
        _load_example(script).main(["--threads", "0"])
    assert e.value.code == 2 and "--threads" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["mnist", "mnist_conditional", "mnist_inpainting"])
def test_mnist_examples_set_threads_before_looking_for_data(name, tmp_path, capsys, keep_threads):
    torch.set_num_threads(2)
    main = _load_example(ROOT / "examples" / f"{name}.py").main
    assert main(["--threads", "1", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "x.png")]) == 1
    assert torch.get_num_threads() == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SCORESDE_DATA" in err and "--data-dir" in err
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- one file per image
def test_save_images_writes_one_png_per_image(tmp_path):
    from PIL import Image

    grey = torch.linspace(-1, 1, 3 * 28 * 20).reshape(3, 1, 28, 20)
    paths = save_images(grey, tmp_path / "out", (-1.0, 1.0))
    assert [p.name for p in paths] == ["sample_00000.png", "sample_00001.png", "sample_00002.png"]
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == (20, 28)  # (width, height)
            expected = ((grey[i, 0] + 1) / 2 * 255).round().to(torch.uint8).numpy()
            np.testing.assert_array_equal(np.asarray(im), expected)

    rgb = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    paths = save_images(rgb, tmp_path / "out", data_range=(0.0, 1.0), prefix="rgb")
    assert [p.name for p in paths] == ["rgb_00000.png", "rgb_00001.png"]
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            assert im.mode == "RGB" and im.size == (12, 8)
            np.testing.assert_array_equal(np.asarray(im), (rgb[i] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "rgb_00000.png", "rgb_00001.png", "sample_00000.png", "sample_00001.png", "sample_00002.png"]  # no temporaries


def test_save_images_clips_to_the_data_range_and_rejects_bad_input(tmp_path):
    from PIL import Image

    (path,) = save_images(torch.tensor([[[[-5.0, 5.0]]]]), tmp_path, (-1.0, 1.0))
    with Image.open(path) as im:
        assert np.asarray(im).tolist() == [[0, 255]]
    with pytest.raises(ShapeError):
        save_images(torch.zeros(2, 2, 4, 4), tmp_path, (-1.0, 1.0))  # two channels
    with pytest.raises(ShapeError):
        save_images(torch.zeros(4, 4), tmp_path, (-1.0, 1.0))
    with pytest.raises(ConfigError):
        save_images(torch.zeros(1, 1, 4, 4), tmp_path, (1.0, 1.0))
    with pytest.raises(ConfigError):
        save_images(torch.zeros(1, 1, 4, 4), tmp_path, (-1.0, 1.0), prefix="../escape")


# --------------------------------------------------------------------------- grid figures
def _inside_figure(fig, artist) -> bool:
    box = artist.get_window_extent(fig.canvas.get_renderer())
    return box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height


def test_grid_figure_labels_columns_and_keeps_the_title_inside():
    x = torch.rand(25, 1, 28, 28) * 2 - 1
    title = "dpmpp_2m_sde: 25 samples (classes 0-9 in turn, classifier-free guidance w = 1, a long title)"
    fig = image_grid_figure(x, title=title, column_labels=[f"digit {k}" for k in range(10)])
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [f"digit {k}" for k in range(10)]  # one per column: nrow follows the labels
    ticks = ax.get_xticks()
    assert np.all(np.diff(ticks) > 0) and ticks[0] > 0 and ticks[-1] < ax.get_images()[0].get_array().shape[1]
    texts = [t for t in ax.get_xticklabels()] + [fig._suptitle]
    assert all(_inside_figure(fig, t) for t in texts), "a label or the title is clipped"
    assert fig._suptitle.get_text().replace("\n", " ") == title


def test_save_samples_figure_takes_column_labels(tmp_path):
    path = save_samples_figure(torch.rand(20, 3, 16, 16), tmp_path / "grid.png", title="t", data_range=(0.0, 1.0),
                               column_labels=range(4))
    assert path.is_file() and path.stat().st_size > 1000
    with pytest.raises(ConfigError):
        save_samples_figure(torch.rand(20, 2), tmp_path / "v.png", column_labels=range(4))
    save_samples_figure(torch.rand(20, 2), tmp_path / "v.png", title="vectors")  # the old call still works


def test_draw_image_grid_row_labels_on_existing_axes():
    fig = image_grid_figure(torch.zeros(6, 1, 8, 8), nrow=3)  # no labels: no ticks
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
    draw_image_grid(ax, torch.zeros(6, 1, 8, 8), nrow=3, row_labels=["a", "b"], title="rows")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"] and ax.get_title() == "rows"
    with pytest.raises(ConfigError):
        draw_image_grid(ax, torch.zeros(6, 1, 8, 8), nrow=3, column_labels=range(4))  # 4 labels, 3 columns
