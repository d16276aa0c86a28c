"""mmlib.shipped: weights trained once and shipped with mmlib load only into the recipe and the
code that made them, and every refusal says how to train them again."""

import pytest
import torch
from torch import nn

from mmlib import shipped

RETRAIN = "python benchmarks/train_something.py"


def test_names_and_recipes():
    assert shipped.path_of("describer").name == "describer.pt"
    assert shipped.path_of("describer").parent == shipped.WEIGHTS
    for bad in ("", "a/b", "describer.pt"):
        with pytest.raises(ValueError, match="plain word"):
            shipped.path_of(bad)
    assert shipped.json_safe({"channels": (16, 64), "lr": 3e-3}) == {"channels": [16, 64], "lr": 3e-3}


def test_save_then_load_round_trips_weights_and_record(tmp_path):
    torch.manual_seed(0)
    model, other = nn.Linear(3, 2), nn.Linear(3, 2)
    path = shipped.save(model, tmp_path / "m.pt", {"steps": 5, "channels": (1, 2)}, seconds=1.234)
    shipped.load(other, path, {"steps": 5, "channels": (1, 2)}, RETRAIN)
    assert torch.equal(other.weight, model.weight)
    record = shipped.record(path, RETRAIN)
    assert record["recipe"] == {"steps": 5, "channels": [1, 2]} and record["seconds"] == 1.2
    assert record["torch"] == str(torch.__version__)


def test_load_refuses_missing_foreign_and_misfitting_weights(tmp_path):
    path = shipped.save(nn.Linear(3, 2), tmp_path / "m.pt", {"steps": 5}, seconds=1.0)
    with pytest.raises(ValueError, match="train_something.py"):
        shipped.load(nn.Linear(3, 2), tmp_path / "nowhere.pt", {"steps": 5}, RETRAIN)
    with pytest.raises(ValueError, match="recipe .*train_something.py"):
        shipped.load(nn.Linear(3, 2), path, {"steps": 6}, RETRAIN)
    with pytest.raises(ValueError, match="(?s)does not fit.*train_something.py"):
        shipped.load(nn.Linear(4, 2), path, {"steps": 5}, RETRAIN)
    with pytest.raises(ValueError, match="train_something.py"):
        shipped.record(tmp_path / "nowhere.pt", RETRAIN)
