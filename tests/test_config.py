"""The hyperparameter dataclass every model declares (models/config.py): one source of defaults,
bounds and choices, checked when an instance is made."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest

from pyro_zoo.models.config import NUM_DATA, Config, HparamError, hparam


@dataclass(frozen=True)
class Example(Config):
    data_dim: int = hparam(8, low=1, high=100)
    latent_dim: int = hparam(2, low=1, high="data_dim")
    hidden: tuple[int, ...] = hparam((4, 4), low=1, high=64, max_len=3)
    rate: float = hparam(0.5, low=0.0, high=1.0)
    kind: str = hparam("a", choices=("a", "b"))
    flag: bool = hparam(False)
    components: int = hparam(2, low=1, high=NUM_DATA)

    SMOKE: ClassVar[dict] = {"data_dim": 4, "hidden": (2,)}


def test_defaults_and_smoke_variant():
    assert Example().data_dim == 8
    smoke = Example.smoke()
    assert (smoke.data_dim, smoke.hidden, smoke.latent_dim) == (4, (2,), 2)


@pytest.mark.parametrize("given, expected", [
    ({"data_dim": 5.0}, ("data_dim", 5)), ({"rate": 1}, ("rate", 1.0)),
    ({"hidden": [3, 5]}, ("hidden", (3, 5))),
    ({"hidden": 7}, ("hidden", (7,))), ({"hidden": []}, ("hidden", ())),
])
def test_values_are_made_their_declared_kind(given, expected):
    name, value = expected
    made = getattr(Example.from_dict(given), name)
    assert made == value and type(made) is type(value)


@pytest.mark.parametrize("given, name", [
    ({"data_dim": 0}, "data_dim"), ({"data_dim": 2.5}, "data_dim"), ({"data_dim": True}, "data_dim"),
    ({"latent_dim": 9}, "latent_dim"), ({"hidden": (1, 1, 1, 1)}, "hidden"), ({"hidden": (0,)}, "hidden"),
    ({"rate": float("nan")}, "rate"), ({"rate": 2.0}, "rate"), ({"kind": "c"}, "kind"), ({"flag": 1}, "flag"),
    ({"hidden": ("x",)}, "hidden"), ({"nope": 1}, "nope"),
])
def test_a_value_that_breaks_its_rule_is_refused_naming_the_field(given, name):
    with pytest.raises(HparamError) as caught:
        Example.from_dict(given)
    assert caught.value.name == name
    assert name in str(caught.value) and "\n" not in str(caught.value)


def test_a_bound_naming_another_field_uses_its_value():
    assert Example.from_dict({"data_dim": 20, "latent_dim": 20}).latent_dim == 20
    with pytest.raises(HparamError, match=r"<= data_dim \(3\)"):
        Example.from_dict({"data_dim": 3, "latent_dim": 4})


def test_the_number_of_data_points_is_checked_once_known():
    config = Example.from_dict({"components": 50})
    config.check_num_data(50)
    with pytest.raises(HparamError, match="the number of training points"):
        config.check_num_data(49)


def test_round_trip_through_plain_values():
    config = Example.from_dict({"hidden": (3,), "kind": "b"})
    plain = config.to_dict()
    assert plain["hidden"] == [3]
    assert Example.from_dict(plain) == config
    assert config.replace(rate=0.25).rate == 0.25 and config.rate == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rate = 0.1


def test_from_dict_takes_only_a_dict():
    with pytest.raises(HparamError, match="takes a dict"):
        Example.from_dict(["data_dim", 3])
