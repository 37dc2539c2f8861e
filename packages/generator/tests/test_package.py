import torchsmith.generator as suite


def test_version_matches_distribution() -> None:
    from importlib.metadata import version

    assert suite.__version__ == version("torchsmith-generator")


def test_built_against_installed_interfaces_major() -> None:
    from torchsmith.interfaces import INTERFACES_VERSION, parse_version

    assert suite.INTERFACES_MAJOR == parse_version(INTERFACES_VERSION)[0]


def test_public_api_is_exactly_all() -> None:
    assert set(suite.__all__) == {
        "INTERFACES_MAJOR",
        "__version__",
        "generate",
        "list_families",
        "list_presets",
        "list_backends",
        "ModelCodeGenerator",
        "GenerationError",
        "resolve_spec",
        "ResolvedSpec",
        "FamilySpec",
        "BertSpec",
        "GPT2Spec",
        "LlamaSpec",
        "T5Spec",
        "ViTSpec",
        "CLIPSpec",
        "CLIPTextSpec",
        "CLIPVisionSpec",
    }
    for name in suite.__all__:
        assert hasattr(suite, name), name
