"""mmlib.plot: figures show what they are given (pixels, values, labels), and refuse bad input."""

import matplotlib
import pytest
import torch

from mmlib.plot import plot_embeddings, plot_label_efficiency, show_grid, show_similarity
from mmlib.transfer import STRATEGIES

matplotlib.use("Agg")


def test_show_grid_tiles_the_pixels_and_labels_the_rows():
    images = torch.zeros(6, 3, 8, 8)
    images[4, 0] = 1.0  # image 4 (row 1, column 1) is red
    fig = show_grid(images, ncols=3, row_labels=["first", "second"])
    ax = fig.axes[0]
    grid = ax.images[0].get_array()
    assert grid.shape[:2] == (2 * 10 + 2, 3 * 10 + 2), "2-pixel padding around 8-pixel tiles"
    assert (grid[12:20, 12:20, 0] == 1).all() and (grid[2:10, 2:10, 0] == 0).all()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["first", "second"]
    with pytest.raises(ValueError, match="make 2 rows, got 1 labels"):
        show_grid(images, ncols=3, row_labels=["one"])


def test_show_similarity_writes_each_value_in_its_cell():
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    fig = show_similarity(sim, ["image 0", "image 1"], ["a red circle", "a blue square"])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.90", "0.10", "0.20", "0.80"]
    with pytest.raises(ValueError, match="needs 2 row and 2 column labels"):
        show_similarity(sim, ["only one"], ["a", "b"])


def test_plot_embeddings_separates_the_two_modalities():
    images, texts = torch.randn(20, 8) + 5, torch.randn(30, 8) - 5
    fig = plot_embeddings(images, texts)
    points = [c.get_offsets() for c in fig.axes[0].collections]
    assert [len(p) for p in points] == [20, 30]
    assert points[0][:, 0].mean() * points[1][:, 0].mean() < 0, "the first component splits the two clouds"
    with pytest.raises(ValueError, match=r"expected \(N, D\) and \(M, D\)"):
        plot_embeddings(images, torch.randn(3, 4))


def test_plot_label_efficiency_draws_every_curve_on_a_log_axis():
    table = {"zero_shot": {0: 0.3}, **{s: {1: 0.2, 4: 0.5, 16: 0.7} for s in STRATEGIES}}
    fig = plot_label_efficiency(table, chance=0.1)
    ax = fig.axes[0]
    assert len(ax.lines) == len(STRATEGIES) + 2 and ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "4", "16"], "only the measured k are labelled"
    assert not ax.xaxis.get_minorticklabels() or all(not t.get_text() for t in ax.xaxis.get_minorticklabels())
