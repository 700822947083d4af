import pytest

from rerankflow import ConfigError
from rerankflow.prompts.template import PromptTemplate, builtin_names, load_template


def test_builtins_load_and_put_query_before_passages():
    names = builtin_names()
    assert {"pointwise-yes-no", "pointwise-grade", "query-likelihood", "listwise"} <= set(names)
    for name in names:
        t = load_template(name)
        assert t.name == name
        if "query" in t.placeholders and "{passage" in t.user:
            assert t.user.index("{query}") < t.user.index("{passage")


def test_render_inserts_values_verbatim():
    t = load_template("pointwise-yes-no")
    nasty = "{query} {0} {passage!r} }} {{ \x00\x1b[31m" + "x" * 10_000
    p = t.render(query="q {x}", passage=nasty)
    assert p.messages[-1].content.count(nasty) == 1
    assert "q {x}" in p.messages[-1].content
    assert p.messages[0].role == "system"
    with pytest.raises(ConfigError, match=r"missing values \['passage'\]"):
        t.render(query="q")
    with pytest.raises(ConfigError, match=r"unknown values \['extra'\]"):
        t.render(query="q", passage="p", extra="e")
    assert t.render(query="", passage="").messages[-1].content.startswith("Query: \n")


@pytest.mark.parametrize(
    "user,placeholders,message",
    [
        ("{query} {passage} {other}", ["query", "passage"], "used but not declared"),
        ("{query}", ["query", "passage"], "declared but never used"),
        ("{passage} then {query}", ["query", "passage"], "put {query} before the passages"),
        ("{query} {0}", ["query"], "plain name"),
        ("{query!r}", ["query"], "format spec or conversion"),
        ("{query:>10}", ["query"], "format spec or conversion"),
        ("{query} {", ["query"], "literal braces"),
    ],
)
def test_invalid_templates_are_rejected(user, placeholders, message):
    with pytest.raises(ValueError, match=message):
        PromptTemplate(name="t", placeholders=placeholders, user=user)


def test_user_template_file_errors_name_file_line_and_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nplaceholders: [query]\nuser: '{query}'\noutput_regex: '(unclosed'\n")
    with pytest.raises(ConfigError, match=r"mine.yaml:4: output_regex: output_regex does not compile"):
        load_template(path)
    path.write_text("name: mine\nplaceholders: [query]\nuser: '{query}'\nlables: [a]\n")
    with pytest.raises(
        ConfigError,
        match=r"mine.yaml:4: lables: unknown key 'lables'; did you mean 'labels'\?; valid keys: name, description",
    ):
        load_template(path)
    path.write_text("name: mine\nplaceholders: [query]\nuser: 'Q: {query}'\nlabels: ['a', 'b']\n")
    assert load_template("mine.yaml", base_dir=tmp_path).labels == ["a", "b"]
    with pytest.raises(ConfigError, match="neither a built-in"):
        load_template("nope.yaml", base_dir=tmp_path)


def test_output_regex_parses_answers():
    t = load_template("listwise")
    assert [int(m) for m in __import__("re").findall(t.output_regex, "[2] > [1] > [3]")] == [2, 1, 3]
    assert load_template("pointwise-yes-no").parse("Yes, it does").group(1) == "Yes"
