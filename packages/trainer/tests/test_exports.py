import torchsmith.trainer as suite


def test_all_is_exactly_the_public_api() -> None:
    public = {name for name in dir(suite) if not name.startswith("_")} - {
        "annotations",
        "require_interfaces",
    }
    assert set(suite.__all__) - {"__version__"} == public
    assert len(suite.__all__) == len(set(suite.__all__))


def test_entry_point_is_registered() -> None:
    from importlib.metadata import entry_points

    (train,) = [ep for ep in entry_points(group="torchsmith.commands") if ep.name == "train"]
    assert train.value == "torchsmith.trainer._cli:main"
