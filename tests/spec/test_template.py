from __future__ import annotations

import pytest

from bitty.lang.expr import ExpressionError
from bitty.spec.template import Template


def test_whole_placeholder_keeps_type() -> None:
    """A string that is one placeholder becomes the value itself: a list stays a list."""
    template = Template.compile({"product_ids": "${symbols}", "id": "${id}"})
    assert template.render({"symbols": ["BTC-USD"], "id": 3}) == {"product_ids": ["BTC-USD"], "id": 3}


def test_interpolation_and_expressions() -> None:
    """Placeholders inside text are replaced by their text; expressions can compute."""
    template = Template.compile("wss://x/stream?streams=${join('/', map(&concat(@, '@trade'), symbols))}")
    assert template.render({"symbols": ["btcusdt", "ethusdt"]}) == "wss://x/stream?streams=btcusdt@trade/ethusdt@trade"


def test_text_template_is_sent_as_text() -> None:
    """A top-level string template renders to the text frame itself."""
    assert Template.compile("ping").render_text({}) == "ping"
    assert Template.compile({"pong": "${frame.ping}"}).render_text({"frame": {"ping": 17}}) == '{"pong":17}'


def test_variables_are_reported() -> None:
    """The loader can list the variables a template reads."""
    template = Template.compile({"a": "${symbols}", "b": ["x-${id}", {"c": "${bootstrap.token}"}]})
    assert template.variables() == {"symbols", "id", "bootstrap"}


@pytest.mark.parametrize("source", ["${symbols", "${foo(}", "${nosuchfunction(a)}"])
def test_bad_templates_fail_to_compile(source: str) -> None:
    """A broken placeholder is an error when the spec loads, not when it is sent."""
    with pytest.raises(ExpressionError):
        Template.compile(source)
