"""A user's own model without a registry edit: a .py file that defines SPEC, or a package's entry
point; `zoo list` says where each model comes from, and `zoo train FILE` / `zoo eval FILE` run end
to end in process. A checkpoint names its file but never makes the zoo import it on its own."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import pyro_zoo.models
from pyro_zoo.cli import main
from pyro_zoo.inference.checkpoint import load_checkpoint
from pyro_zoo.inference.evaluate import NO_IMPORTANCE_SAMPLING
from pyro_zoo.models import ENTRY_POINT_GROUP, REGISTRY, UnknownModelError, get_spec
from pyro_zoo.runs import load
from tests.conftest import SEED
from tests.test_contract import USER_FILE


def _last_json(out: str):
    return json.loads(out.strip().splitlines()[-1])


class _EntryPoint(SimpleNamespace):
    def load(self):
        return importlib.import_module(self.value)


@pytest.fixture
def installed_package(monkeypatch):
    """A package 'my-zoo-models' exposing tests.user_model_example as the entry point 'sepal'."""
    point = _EntryPoint(name="sepal", value="tests.user_model_example", group=ENTRY_POINT_GROUP,
                        dist=SimpleNamespace(name="my-zoo-models"))
    real = importlib.metadata.entry_points

    def entry_points(**selection):
        if selection.get("group") == ENTRY_POINT_GROUP:
            return [point]
        return real(**selection)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_get_spec_resolves_a_name_a_file_and_an_entry_point(installed_package):
    assert get_spec("vae").source == "zoo"
    from_file = get_spec(USER_FILE)
    assert from_file.name == "sepal_length" and from_file.source == USER_FILE
    assert pyro_zoo.models.is_file_spec(from_file)
    from_package = get_spec("sepal")
    assert from_package.source == "package my-zoo-models"
    with pytest.raises(UnknownModelError, match="sepal"):  # the error lists what exists
        get_spec("no_such_model")
    with pytest.raises(UnknownModelError, match="no model file"):
        get_spec("missing/model.py")


def test_a_file_without_spec_is_one_sentence(tmp_path):
    path = tmp_path / "empty_model.py"
    path.write_text("x = 1\n")
    with pytest.raises(UnknownModelError, match="defines no SPEC"):
        get_spec(str(path))


def test_zoo_list_shows_where_each_model_comes_from(installed_package, capsys):
    assert main(["list", "--json"]) == 0
    rows = {row["name"]: row["source"] for row in _last_json(capsys.readouterr().out)}
    assert all(rows[name] == "zoo" for name in REGISTRY)
    assert rows["sepal_length"] == "package my-zoo-models"


@pytest.mark.statistical
def test_train_then_eval_a_user_file(tmp_path, capsys):
    """`zoo train FILE --smoke` then `zoo eval FILE --checkpoint`: the checkpoint records the file,
    the report says why importance sampling does not apply and compares guide and NUTS; the
    posterior mean of mu is the sample mean within 4 posterior sds (the prior N(5, 2^2) is weak)."""
    out = tmp_path / "run"
    assert main(["train", USER_FILE, "--smoke", "--out", str(out), "--json", "--no-progress",
                 "--seed", str(SEED)]) == 0
    metrics = _last_json(capsys.readouterr().out)
    assert metrics["model"] == "sepal_length" and metrics["steps"] == 1000
    checkpoint = out / "checkpoint.pt"
    assert load_checkpoint(checkpoint)["model_file"] == str(Path(USER_FILE).resolve())
    assert main(["eval", USER_FILE, "--checkpoint", str(checkpoint), "--num-particles", "500", "--json",
                 "--no-progress", "--seed", str(SEED)]) == 0
    report = _last_json(capsys.readouterr().out)
    assert report["log_px"]["value"] is None
    assert report["log_px"]["estimator"] == NO_IMPORTANCE_SAMPLING
    table = report["posterior_comparison"]
    assert set(table) == {"mu", "sigma"} and all("nuts_mean" in row for row in table.values())
    x = get_spec(USER_FILE).load_data("train").x  # the guide's posterior is given the training split
    assert abs(table["mu"]["guide_mean"] - x.mean().item()) < 4 * x.std().item() / len(x) ** 0.5
    assert (out / "eval" / "posterior_table.md").is_file() and (out / "eval" / "vi_vs_nuts.png").is_file()


def test_a_user_file_checkpoint_is_loaded_only_when_its_file_is_named(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", USER_FILE, "--smoke", "--steps", "20", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    checkpoint = out / "checkpoint.pt"
    spec, model, _ = load(checkpoint, name=USER_FILE)
    assert spec.name == "sepal_length"
    saved = load_checkpoint(checkpoint)["params"]
    store = pyro_zoo.models.base.pyro.get_param_store().get_state()["params"]
    assert saved and all(torch.equal(store[name], value) for name, value in saved.items())
    assert main(["eval", "vae", "--checkpoint", str(checkpoint), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("zoo: error:") and "user_model_example.py" in error
    assert len(error.splitlines()) == 1
