"""Per-class prompting: templates with slots, their expansion, and the token-limit check.

A template such as ``a photo of a {name}, {background}, {lighting}`` is filled with the
class's prompt name (``{a_name}`` gives it with its article: "an apple") and one value
per slot. Image ``i`` always gets the same prompt for a
given config and base seed (never depending on how many images the job makes), so a job
can be resumed or extended without changing earlier prompts.
"""

from __future__ import annotations

import random
import string
from dataclasses import asdict, dataclass, field
from typing import Any

from core.generation.seeds import prompt_seed

MODES = ("combinations", "random")

DEFAULT_TEMPLATES = [
    "a photo of {a_name}, {background}, {lighting}",
    "a close up photo of a single {name}, {background}",
    "a studio photograph of a fresh {name}, {lighting}",
]
DEFAULT_SLOTS = {
    "background": ["on a wooden table", "on a white background", "on a kitchen counter",
                   "in a market stall", "on grass"],
    "lighting": ["soft daylight", "natural light", "bright sunlight", "warm indoor lighting"],
}
# Slots filled from the class itself rather than from user-given values.
AUTO_SLOTS = ("name", "a_name")
DEFAULT_NEGATIVE = "blurry, cartoon, drawing, text, watermark, low quality, deformed"


class PromptError(ValueError):
    """A template or slot the user wrote cannot be used; the message says why."""


@dataclass
class PromptConfig:
    """How one class is prompted."""

    prompt_name: str
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    slots: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_SLOTS.items()})
    negative_prompt: str = DEFAULT_NEGATIVE
    mode: str = "combinations"  # combinations: cycle through all; random: seeded draws

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PromptConfig":
        return cls(prompt_name=data["prompt_name"],
                   templates=list(data.get("templates") or DEFAULT_TEMPLATES),
                   slots={k: list(v) for k, v in (data.get("slots") or {}).items()},
                   negative_prompt=data.get("negative_prompt") or "",
                   mode=data.get("mode") or "combinations")

    def validate(self) -> None:
        if self.mode not in MODES:
            raise PromptError(f"prompt mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not self.prompt_name.strip():
            raise PromptError("the prompt name is empty")
        templates = [t for t in self.templates if t.strip()]
        if not templates:
            raise PromptError("give at least one prompt template")
        for template in templates:
            for slot in template_slots(template):
                if slot in AUTO_SLOTS:
                    continue
                values = [v for v in self.slots.get(slot, []) if v.strip()]
                if not values:
                    raise PromptError(f"template {template!r} uses slot {{{slot}}}, which has no "
                                      f"values; add values for {slot!r} or remove it")

    def combination_count(self) -> int:
        return sum(_combinations_of(self, t) for t in self._templates())

    def _templates(self) -> list[str]:
        return [t for t in self.templates if t.strip()]


def template_slots(template: str) -> list[str]:
    """The slot names a template uses, in order (``{name}`` included)."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise PromptError(f"template {template!r} is malformed: {exc} (use {{slot}} and "
                          f"double braces for a literal brace)") from exc
    for name in fields:
        if not name.isidentifier():
            raise PromptError(f"template {template!r}: {{{name}}} is not a slot name "
                              f"(letters, digits and _)")
    return list(dict.fromkeys(fields))


def with_article(name: str) -> str:
    """``"apple"`` -> ``"an apple"``, ``"banana"`` -> ``"a banana"`` (by the first letter)."""
    if not name:
        return name
    return ("an " if name[0].lower() in "aeiou" else "a ") + name


def default_prompt_config(prompt_name: str) -> PromptConfig:
    return PromptConfig(prompt_name=prompt_name)


def _slot_values(config: PromptConfig, slot: str) -> list[str]:
    return [v.strip() for v in config.slots.get(slot, []) if v.strip()]


def _combinations_of(config: PromptConfig, template: str) -> int:
    count = 1
    for slot in template_slots(template):
        if slot not in AUTO_SLOTS:
            count *= max(1, len(_slot_values(config, slot)))
    return count


def _fill(template: str, config: PromptConfig, choose) -> str:  # noqa: ANN001 - choose(slot, values)
    name = config.prompt_name.strip()
    values = {"name": name, "a_name": with_article(name)}
    for slot in template_slots(template):
        if slot not in AUTO_SLOTS:
            values[slot] = choose(slot, _slot_values(config, slot))
    return template.format(**values)


def prompt_for(config: PromptConfig, index: int, *, base_seed: int, class_key: str) -> str:
    """The prompt of image ``index``: a pure function of (config, index, base seed, class)."""
    config.validate()
    templates = config._templates()
    if config.mode == "random":
        rng = random.Random(prompt_seed(base_seed, class_key, index))
        template = rng.choice(templates)
        return _fill(template, config, lambda _slot, values: rng.choice(values))
    # Combinations: templates interleave (0, 1, 2, 0, ...), and within a template the
    # slot values count like digits of a mixed-radix number, first slot fastest.
    template = templates[index % len(templates)]
    position = (index // len(templates)) % _combinations_of(config, template)

    def choose(_slot: str, values: list[str]) -> str:
        nonlocal position
        position, digit = divmod(position, len(values))
        return values[digit]
    return _fill(template, config, choose)


def expand_prompts(config: PromptConfig, count: int, *, base_seed: int, class_key: str,
                   start: int = 0) -> list[str]:
    return [prompt_for(config, i, base_seed=base_seed, class_key=class_key)
            for i in range(start, start + count)]


@dataclass
class TokenWarning:
    prompt: str
    tokens: int
    limit: int
    cut_text: str  # what the text encoder never sees

    def message(self) -> str:
        return (f"prompt is {self.tokens} tokens, the text encoder reads {self.limit}; "
                f"this part is cut: {self.cut_text!r}")


def token_warnings(prompts: list[str], tokenizer: Any) -> list[TokenWarning]:
    """Prompts longer than the tokenizer's limit (start/end tokens included)."""
    limit = int(getattr(tokenizer, "model_max_length", 77) or 77)
    if limit > 100_000:  # "no limit" sentinel of tokenizers without one
        return []
    found = []
    for prompt in dict.fromkeys(prompts):
        ids = tokenizer(prompt, truncation=False, add_special_tokens=True)["input_ids"]
        if len(ids) <= limit:
            continue
        # The encoder keeps limit-1 tokens plus its end token; the rest (minus our own end
        # token) is what gets cut.
        cut = tokenizer.decode(ids[limit - 1:-1], skip_special_tokens=True).strip()
        found.append(TokenWarning(prompt, len(ids), limit, cut))
    return found
