import torchsmith.generator as suite


def test_version_matches_distribution() -> None:
    from importlib.metadata import version

    assert suite.__version__ == version("torchsmith-generator")


def test_built_against_installed_interfaces_major() -> None:
    from torchsmith.interfaces import INTERFACES_VERSION, parse_version

    assert suite.INTERFACES_MAJOR == parse_version(INTERFACES_VERSION)[0]
