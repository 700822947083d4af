"""Stage settings are declared once: each registered stage's YAML config is its class's
``Options`` plus keys that name objects, and the constructor takes the same model."""

import inspect

import pytest

from rerankflow import registry
from rerankflow.errors import ConfigError
from rerankflow.options import StageOptions
from rerankflow.rerankers.listwise import ListwiseOptions, ListwiseReranker
from rerankflow.testing import FakeBackend


@pytest.mark.parametrize("comp", registry.components(), ids=lambda c: c.name)
def test_yaml_config_and_constructor_come_from_the_stage_options(comp):
    assert comp.stage is not None, f"{comp.name} is registered without its stage class"
    options = comp.stage.Options
    keys = set(comp.keys.model_fields) if comp.keys is not None else set()
    # the YAML config is exactly the options plus the keys, and the two never share a name
    assert set(comp.config.model_fields) == set(options.model_fields) | keys
    assert not set(options.model_fields) & keys
    for name, field in options.model_fields.items():  # same default, type and bounds as the class
        got = comp.config.model_fields[name]
        assert (got.default, got.annotation, got.metadata) == (field.default, field.annotation, field.metadata), name
    # the constructor declares no option a second time: options arrive as the model or as
    # keywords validated by it; a positional shortcut (Cutoff(k), Reorder(policy)) has no default
    params = inspect.signature(comp.stage.__init__).parameters
    for name in options.model_fields:
        if name in params:
            assert params[name].default in (inspect.Parameter.empty, None), f"{comp.name}.{name} has a second default"
    if options is not StageOptions and len(options.model_fields) > 1:
        assert "options" in params, comp.name


def test_options_come_as_an_object_or_as_keywords_and_are_checked_once():
    fake = FakeBackend()
    by_keywords = ListwiseReranker(fake, window=4, stride=2)
    by_object = ListwiseReranker(fake, options=ListwiseOptions(window=4, stride=2))
    assert by_keywords.options == by_object.options and by_keywords.options.step == 2
    overridden = ListwiseReranker(fake, options=ListwiseOptions(window=4), stride=1)
    assert (overridden.options.window, overridden.options.stride) == (4, 1)
    with pytest.raises(ConfigError, match=r"listwise: need 1 <= stride <= window .* window=4, stride=9"):
        ListwiseReranker(fake, window=4, stride=9)
    with pytest.raises(ConfigError, match=r"listwise: unknown setting .windw.; did you mean .window."):
        ListwiseReranker(fake, windw=4)
    # the same rule holds in YAML, where the config is the same model
    config = registry.get("listwise").config
    with pytest.raises(ValueError, match="need 1 <= stride <= window"):
        config(backend={"model": "m"}, window=4, stride=9)
