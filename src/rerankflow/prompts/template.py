"""Prompt templates: YAML files with declared placeholders, chat roles, labels and an output regex.

A template is validated when loaded: every ``{placeholder}`` used must be declared and every
declared one used; only plain ``{name}`` fields are allowed (no positional fields, format
specs or conversions, so passage text can never be interpreted as a template); the output
regex must compile; labels must be distinct. The query must come before the passages, so
that prompts for the same query share a prefix (prefix caching).
"""

from __future__ import annotations

import hashlib
import re
import string
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..backends.tokens import repaired
from ..backends.types import Message, Prompt, Repair, TokenCap
from ..errors import ConfigError
from ..paths import resolve_path
from ..yamlio import YamlDocument, validation_to_config_error

PASSAGE_FIELDS = ("passage", "passages", "passage_a", "passage_b")


def fields_of(text: str, where: str) -> list[str]:
    """Placeholder names used in ``text``, in order; rejects anything but ``{name}``."""
    names = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc} (write literal braces as '{{{{' and '}}}}')") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"{where}: placeholder {{{name}}} must be a plain name like {{query}}")
        if spec or conversion:
            raise ValueError(f"{where}: placeholder {{{name}}} may not have a format spec or conversion")
        names.append(name)
    return names


class TokenCapSpec(BaseModel):
    """The part of a raw prompt between a fixed ``prefix`` and ``suffix`` is encoded apart and cut
    so the whole prompt fits ``max_tokens`` (Qwen3-Reranker's card: ``process_inputs``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(..., ge=2)
    prefix: str
    suffix: str


class PromptTemplate(BaseModel):
    """One prompt template (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    placeholders: list[str] = Field(..., min_length=1)
    system: str | None = None
    user: str
    labels: list[str] | None = Field(None, description="single-token answers scored by label logprobs")
    output_regex: str | None = Field(None, description="what a well-formed generated answer matches")
    label_after: int = Field(
        0,
        ge=0,
        description="read the labels' log-probabilities after this many greedily generated answer tokens "
        "(FIRST models as RankLLM reads them: 1, the position after the model's '[')",
    )
    label_context: str | None = Field(
        None,
        description="the text the labels follow in the answer (e.g. '['): each label is the token that "
        "continues it, which for SentencePiece models is the variant without a leading space",
    )
    chat_format: Literal["model", "vicuna", "raw"] = Field(
        "model",
        description="model: messages through the model's own chat template; vicuna: the raw text "
        "'<system> USER: <user> ASSISTANT:' that RankLLM gives RankVicuna; raw: 'user' is the whole prompt "
        "text as a model card writes it (special tokens included), sent without a chat template",
    )
    passage_style: Literal["plain", "rankllm", "verbatim"] = Field(
        "plain",
        description="plain: title and text on one line, cut by tokens; rankllm: as RankLLM shows passages "
        "(Title: .. Content: .., ftfy-repaired, cut to 300 * 20 / window words, [n] written (n)); verbatim: "
        "title line and text as given (line breaks kept), cut by tokens",
    )

    repairs: list[Repair] = Field(
        default_factory=list,
        description="repairs of the whole rendered prompt, in order (after the chat template): ftfy (RankLLM's "
        "fix_text of its listwise prompts), drop_unk (a literal <unk> removed, as RankLLM's T5 handlers do)",
    )
    add_special_tokens: bool | None = Field(
        None,
        description="whether the tokenizer adds its special tokens (BOS) to the rendered prompt; default: yes for "
        "raw text (as a completions server does), no for chat (its template holds them). RankLLM hands vLLM the "
        "chat-templated text as a text prompt, so its presets say true",
    )
    token_cap: TokenCapSpec | None = Field(
        None, description="raw templates only: encode the part between prefix and suffix apart and cut it to fit"
    )

    @field_validator("output_regex")
    @classmethod
    def _regex_compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"output_regex does not compile: {exc}") from None
        return v

    @field_validator("labels")
    @classmethod
    def _labels_distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (len(set(v)) != len(v) or not v or any(not x for x in v)):
            raise ValueError(f"labels must be distinct non-empty strings, got {v}")
        return v

    @model_validator(mode="after")
    def _raw_has_no_system(self) -> PromptTemplate:
        if self.chat_format == "raw" and self.system:
            raise ValueError("a raw template is one text: put the system part inside 'user' and drop 'system'")
        return self

    @model_validator(mode="after")
    def _cap_fits(self) -> PromptTemplate:
        cap = self.token_cap
        if cap is None:
            return self
        if self.chat_format != "raw" or self.repairs:
            raise ValueError("token_cap needs chat_format: raw and no repairs")
        if not (self.user.startswith(cap.prefix) and self.user.endswith(cap.suffix)):
            raise ValueError("token_cap: 'user' must start with its prefix and end with its suffix")
        if fields_of(cap.prefix, "token_cap.prefix") or fields_of(cap.suffix, "token_cap.suffix"):
            raise ValueError("token_cap: the prefix and suffix are fixed text (no placeholders)")
        return self

    @model_validator(mode="after")
    def _placeholders_match(self) -> PromptTemplate:
        used = fields_of(self.system or "", "system") + fields_of(self.user, "user")
        declared = set(self.placeholders)
        undeclared = sorted(set(used) - declared)
        unused = sorted(declared - set(used))
        if undeclared:
            raise ValueError(f"placeholders {undeclared} are used but not declared; add them to 'placeholders'")
        if unused:
            raise ValueError(f"placeholders {unused} are declared but never used")
        order = fields_of(self.user, "user")
        if "query" in order and any(p in order for p in PASSAGE_FIELDS):
            first_passage = min(order.index(p) for p in PASSAGE_FIELDS if p in order)
            if order.index("query") > first_passage:
                raise ValueError(
                    "put {query} before the passages: prompts of one query then share a prefix (prefix caching)"
                )
        return self

    @property
    def identity(self) -> str:
        """A digest of everything in the template (a stage-cache key part)."""
        return "template:" + hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def render(self, **values: str) -> Prompt:
        """Fill the placeholders; missing or unknown names are errors. Values are inserted
        verbatim: braces or template syntax inside them are never interpreted.
        """
        missing = sorted(set(self.placeholders) - set(values))
        extra = sorted(set(values) - set(self.placeholders))
        if missing or extra:
            raise ConfigError(
                f"template {self.name!r}: missing values {missing}, unknown values {extra}; expected {self.placeholders}"
            )
        system = self.system.format(**values) if self.system else None
        user = self.user.format(**values)
        special = self.add_special_tokens
        if self.chat_format == "raw":
            cap = self.token_cap
            if cap is not None:
                span = TokenCap(len(cap.prefix), len(user) - len(cap.suffix), cap.max_tokens)
                return Prompt(text=user, special_tokens=special, cap=span)
            return Prompt(text=repaired(user, tuple(self.repairs)), special_tokens=special)
        if self.chat_format == "vicuna":  # RankLLM's chat template for RankVicuna, rendered
            text = f"{system} USER: {user} ASSISTANT:" if system else f"USER: {user} ASSISTANT:"
            return Prompt(text=repaired(text, tuple(self.repairs)), special_tokens=special)
        msgs = [Message("system", system)] if system else []
        msgs.append(Message("user", user))
        return Prompt(messages=tuple(msgs), repairs=tuple(self.repairs), special_tokens=special)

    def parse(self, text: str) -> re.Match[str] | None:
        """Match the output regex against a generated answer (``None`` if no regex or no match)."""
        return re.search(self.output_regex, text) if self.output_regex else None


def builtin_names() -> list[str]:
    """Names of the templates that ship with rerankflow."""
    folder = resources.files("rerankflow.prompts") / "templates"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_template(name_or_path: str | Path, base_dir: Path | None = None) -> PromptTemplate:
    """A built-in template by name, or a user's YAML file (relative to ``base_dir``)."""
    name = str(name_or_path)
    if name in builtin_names():
        path = Path(str(resources.files("rerankflow.prompts") / "templates" / f"{name}.yaml"))
    else:
        path = resolve_path(name, base_dir)
        if not path.is_file():
            raise ConfigError(
                f"prompt template {name!r} is neither a built-in ({', '.join(builtin_names())}) nor a file"
            )
    doc = YamlDocument(path.read_text(encoding="utf-8"), path)
    if not isinstance(doc.data, dict):
        raise ConfigError("a prompt template is a YAML mapping", file=path)
    try:
        return PromptTemplate.model_validate(doc.data)
    except ValidationError as exc:
        raise doc.locate(validation_to_config_error(exc, PromptTemplate)) from None


def as_template(template: PromptTemplate | str | Path, base_dir: Path | None = None) -> PromptTemplate:
    """``template`` itself if already loaded, else :func:`load_template` of the name or file."""
    return template if isinstance(template, PromptTemplate) else load_template(template, base_dir)


def template_dict(t: PromptTemplate) -> dict[str, Any]:
    """The template as plain data (for dumps and docs)."""
    return t.model_dump(exclude_none=True)
