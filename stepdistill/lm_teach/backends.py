"""Where lm-teach's generations come from: a local transformers causal language model (``hf``)
or an OpenAI-compatible HTTP endpoint (``openai``).

A backend has an ``identity`` (part of every store key: a changed model never reuses another's
generations), ``generate(requests)``, which yields the finished ``(request, text)`` pairs in
groups as they are done, so that the caller can keep each group before the next one starts, and
a ``prompt_budget``: the most tokens a prompt may hold (None where it cannot count them), with
``prompt_lengths`` and ``without_last_tokens`` to count and cut. transformers and openai are
imported only when a backend is made.
"""

from __future__ import annotations

import functools
import os
import reprlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path

from stepdistill.errors import StepDistillError
from stepdistill.lm_teach.config import HFBackendSettings, OpenAIBackendSettings
from stepdistill.lm_teach.store import Request
from stepdistill.text.encoders import model_identity

INSTALL_HINT = "pip install 'stepdistill[lm]'"
# Tokenizers without a length of their own say this (transformers' VERY_LARGE_INTEGER) or more.
NO_TOKENIZER_LIMIT = 10**12
# HTTP statuses worth another try: timeout, conflict, rate limit, and the server's own errors.
RETRY_STATUSES = frozenset({408, 409, 429})
REFUSED_STATUSES = frozenset({401, 403})

Finished = list[tuple[Request, str]]


def make_backend(settings: HFBackendSettings | OpenAIBackendSettings, stop: Sequence[str], say: Callable[[str], None]):
    """The backend ``settings`` describe; ``stop``: strings that end a continuation."""
    if settings.kind == "hf":
        return HFBackend(settings, stop, say)
    return OpenAIBackend(settings, stop)


class HFBackend:
    """A causal language model from a transformers directory, run by batched ``generate()`` with
    left padding (so each prompt's continuation starts at the same position). Runs on
    ``torch.get_num_threads()`` threads."""

    def __init__(self, settings: HFBackendSettings, stop: Sequence[str], say: Callable[[str], None]):
        if settings.model is None:
            from stepdistill.lm.smollm2 import converted_model_directory

            self.directory = converted_model_directory(say)
        else:
            self.directory = Path(settings.model).expanduser()
            if not (self.directory / "config.json").is_file():
                raise StepDistillError(f"backend.model {self.directory} is not a transformers model directory (no config.json); fix the path")
        self.settings = settings
        self.stop = list(stop)
        self.identity = f"hf:{model_identity(self.directory)}"
        self.tokenizer = _tokenizer(str(self.directory))
        self.prompt_budget, self.budget_origin = _prompt_budget(settings, _context_length(str(self.directory), self.tokenizer))

    def prompt_lengths(self, prompts: Sequence[str]) -> list[int]:
        """The tokens of each prompt as ``generate`` sends it (in a chat, with its template)."""
        return [len(ids) for ids in self._encode(prompts)["input_ids"]]

    def without_last_tokens(self, text: str, count: int) -> str:
        """``text`` cut where the first of its last ``count`` tokens starts ("" if it has no more)."""
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
        return text[: offsets[-count][0]].rstrip() if count < len(offsets) else ""

    def _encode(self, prompts: Sequence[str], **options):
        chat = self.settings.chat
        # A chat template writes the special tokens itself. Not verbose: lm-teach counts and cuts
        # a prompt longer than the tokenizer's length, and says so itself.
        return self.tokenizer([_chat_prompt(self.tokenizer, p) if chat else p for p in prompts], add_special_tokens=not chat, verbose=False, **options)

    def generate(self, requests: Sequence[Request]) -> Iterator[Finished]:
        if not requests:
            return
        import torch

        model = _causal_lm(str(self.directory))
        tokenizer = self.tokenizer
        settings = self.settings
        sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p} if settings.temperature > 0 else {"do_sample": False}
        for start in range(0, len(requests), settings.batch_size):
            batch = requests[start : start + settings.batch_size]
            encoded = self._encode([r.prompt for r in batch], return_tensors="pt", padding=True)
            # Seeded by the batch's first request, so that a re-run of the same batch repeats it.
            torch.manual_seed(batch[0].seed)
            with torch.inference_mode():
                output = model.generate(
                    **encoded,
                    max_new_tokens=settings.max_new_tokens,
                    stop_strings=self.stop,
                    tokenizer=tokenizer,
                    pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                )
            texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
            yield list(zip(batch, texts))


@functools.lru_cache(maxsize=1)
def _causal_lm(directory: str):
    """The model (eval mode, float32), loaded once per process."""
    transformers = _transformers()
    # lm-teach reports its own progress on standard error; a bar per weight load would interleave.
    transformers.utils.logging.disable_progress_bar()
    with _loading(directory):
        return transformers.AutoModelForCausalLM.from_pretrained(directory, dtype="float32").eval()


@functools.lru_cache(maxsize=1)
def _tokenizer(directory: str):
    """The model's tokenizer, padding on the left, loaded once per process."""
    with _loading(directory):
        tokenizer = _transformers().AutoTokenizer.from_pretrained(directory, padding_side="left")
    if tokenizer.pad_token is None:
        # Padding is masked out; any token does, and end-of-text is what models without one use.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _context_length(directory: str, tokenizer) -> int | None:
    """The most tokens the model reads at once: the least of its config's positions and its
    tokenizer's length, where they say; None where neither does."""
    with _loading(directory):
        config = _transformers().AutoConfig.from_pretrained(directory)
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    return min((limit for limit in limits if isinstance(limit, int) and limit < NO_TOKENIZER_LIMIT), default=None)


def _prompt_budget(settings: HFBackendSettings, context: int | None) -> tuple[int | None, str]:
    """The most tokens a prompt may hold, and where that number comes from: the model's context
    less the new tokens, or ``max_prompt_tokens`` within it."""
    room = None if context is None else context - settings.max_new_tokens
    if room is not None and room < 1:
        raise StepDistillError(
            f"backend.max_new_tokens {settings.max_new_tokens} leaves no room for a prompt in the model's context of {context} tokens; lower it"
        )
    if settings.max_prompt_tokens is None:
        return room, f"the model's context of {context} tokens less max_new_tokens {settings.max_new_tokens}"
    if room is not None and settings.max_prompt_tokens > room:
        raise StepDistillError(
            f"backend.max_prompt_tokens {settings.max_prompt_tokens} and max_new_tokens {settings.max_new_tokens} exceed the model's context of {context} tokens; "
            f"set max_prompt_tokens to at most {room}"
        )
    return settings.max_prompt_tokens, "backend.max_prompt_tokens"


def _transformers():
    """transformers, with the classes lm-teach uses loaded here, where a missing library is caught."""
    try:
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401
    except ImportError as err:
        raise StepDistillError(f"transformers or a library it needs is not installed ({err.name or err}); run {INSTALL_HINT}") from err
    return transformers


@contextmanager
def _loading(directory: str):
    """A model directory that transformers cannot read becomes one line."""
    try:
        yield
    except (OSError, ValueError, KeyError) as err:
        raise StepDistillError(f"cannot load a causal language model from {directory} ({type(err).__name__}); pass a transformers model directory") from err


def _chat_prompt(tokenizer, prompt: str) -> str:
    if not tokenizer.chat_template:
        raise StepDistillError("backend.chat is set but the model has no chat template; set chat: false")
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)


class OpenAIBackend:
    """An OpenAI-compatible endpoint (the OpenAI API, vLLM, ``transformers serve``, ...) through
    the ``openai`` client: chat completions (``chat: true``) or text completions. Requests run
    ``concurrency`` at a time, start at most ``requests_per_second`` per second, and are retried
    with exponential backoff after a rate limit, a server error, a timeout or a lost connection.
    The key is read from the environment variable ``api_key_env`` and never written anywhere."""

    # The server counts a prompt's tokens; one beyond its model's context comes back as its error.
    prompt_budget = None

    def __init__(self, settings: OpenAIBackendSettings, stop: Sequence[str]):
        try:
            import openai
        except ImportError as err:
            raise StepDistillError(f"the openai client is not installed ({err.name or err}); run {INSTALL_HINT}") from err
        self.key = os.environ.get(settings.api_key_env, "")
        if not self.key:
            raise StepDistillError(
                f"the environment variable {settings.api_key_env} holds no API key; set it (any value for a server that needs none) or set backend.api_key_env"
            )
        self.settings = settings
        self.stop = list(stop)
        self.base_url = settings.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        # Retries are done here, where they are counted and reported, not inside the client.
        self.client = openai.OpenAI(api_key=self.key, base_url=self.base_url, max_retries=0, timeout=settings.timeout_s)
        self.identity = f"openai:{self.base_url.rstrip('/')}:{settings.model}"
        self.rate = RateLimit(settings.requests_per_second)
        # Set when generate() ends early, so that requests waiting to retry give up.
        self.stopping = threading.Event()

    def generate(self, requests: Sequence[Request]) -> Iterator[Finished]:
        if not requests:
            return
        executor = ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="lm-teach")
        self.stopping.clear()
        try:
            waiting = {executor.submit(self._complete, request): request for request in requests}
            while waiting:
                done, _ = wait(waiting, return_when=FIRST_COMPLETED)
                results = [(waiting.pop(future), future) for future in done]
                if finished := [(request, future.result()) for request, future in results if future.exception() is None]:
                    yield finished
                # The first failure (after its retries) ends the run, once what finished is kept.
                for _, future in results:
                    if future.exception() is not None:
                        raise future.exception()
        finally:
            # On an error or Ctrl-C, requests not yet started are dropped and those retrying stop.
            self.stopping.set()
            executor.shutdown(wait=False, cancel_futures=True)

    def _complete(self, request: Request) -> str:
        """One request's text, retried on transient failures."""
        import openai

        settings = self.settings
        for attempt in range(settings.retries + 1):
            self.rate.wait()
            try:
                return self._call(request)
            except openai.APIStatusError as err:
                if err.status_code in REFUSED_STATUSES:
                    raise StepDistillError(
                        f"{self.base_url} refused the API key in ${settings.api_key_env} (HTTP {err.status_code}); set a valid key there"
                    ) from None
                if err.status_code not in RETRY_STATUSES and err.status_code < 500:
                    raise StepDistillError(
                        f"{self.base_url} answered HTTP {err.status_code} ({self._safe(err.message)}); check backend.model and the other backend settings"
                    ) from None
                failure = f"HTTP {err.status_code}"
            except openai.APIConnectionError as err:  # also timeouts
                failure = type(err).__name__
            if attempt < settings.retries and self.stopping.wait(settings.backoff_s * 2**attempt):
                break
        raise StepDistillError(
            f"cannot reach {self.base_url} for model {settings.model!r} ({failure} after {settings.retries + 1} tries); check that the server runs and backend.base_url"
        )

    def _call(self, request: Request) -> str:
        settings = self.settings
        common = {
            "model": settings.model,
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "seed": request.seed,
            "stop": self.stop,
        }
        if settings.chat:
            response = self.client.chat.completions.create(messages=[{"role": "user", "content": request.prompt}], **common)
            return response.choices[0].message.content or ""
        response = self.client.completions.create(prompt=request.prompt, **common)
        return response.choices[0].text or ""

    def _safe(self, message: str) -> str:
        """A server's message on one line, short, and without the key should it echo it."""
        return reprlib.repr(" ".join(message.replace(self.key, "***").split()))


class RateLimit:
    """Spaces the starts of requests, across threads, at least 1 / ``per_second`` seconds apart;
    no limit when ``per_second`` is None."""

    def __init__(self, per_second: float | None):
        self.interval = 1 / per_second if per_second else 0.0
        self.lock = threading.Lock()
        self.next_start = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        time.sleep(start - now)
