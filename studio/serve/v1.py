"""An OpenAI-compatible API over the studio's runs, so other tools can use a fine-tuned model.

    python -m studio serve --run runs/first            # http://127.0.0.1:8000/v1
    python -m studio serve --runs-dir runs --host 0.0.0.0 --port 8000 --auth alice:s3cret

`GET /v1/models` lists what is served (a run's id is its folder's name) and
`POST /v1/chat/completions` answers through the studio's own inference: base model plus adapter,
prompted exactly as the run trained (studio.inference.stream_reply), streamed as Server-Sent
Events when `stream` is true. The page serves the same routes on its own port, switched by a
toggle on the Chat tab (studio.ui.chat_tab, mounted by studio.ui.server).

Auth is the page's: with `--auth USER:PASS`, a request carries `Authorization: Bearer PASS`
(what the openai client sends as its api_key) or HTTP Basic USER:PASS; without it, the API
listens on this machine only. One generation at a time per model: requests queue on its lock
rather than load it twice or fight over it. Each request is bounded (studio.service.access.ReplyBounds:
body size, prompt and reply tokens), and a client that goes away stops its generation. Errors come back in OpenAI's error JSON with what to
fix. gradio is never imported here: the API runs without the page.
"""
# No `from __future__ import annotations`: FastAPI reads the routes' `request: Request` hints,
# and Request is imported inside router() (fastapi only loads when serving).
import argparse
import asyncio
import base64
import json
import sys
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from backends import CHAT
from studio.service.access import (Gatekeeper, Logins, add_bounds_flags, add_login_flags, bounds_of,
                           exposure, hide_password_from_ps, logins)

if TYPE_CHECKING:
    from studio.service.actions import Service

DEFAULT_PORT = 8000
# The studio chat's own sampling, so the API answers as the Chat tab does when a client sends
# only messages (OpenAI's temperature 1 and top_p 1 are rough on a small fine-tuned model); an
# API client's replies may run longer than the chat's by default.
DEFAULT_TEMPERATURE, DEFAULT_TOP_P, DEFAULT_MAX_TOKENS = CHAT.temperature, CHAT.top_p, 512
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
OFF = ("Nothing is served at /v1 now: tick 'Serve this run at /v1' on the Chat tab, or run "
       "python -m studio serve --run RUN_FOLDER")


class ApiError(Exception):
    """A request that cannot be answered, as OpenAI says it: status, message, type, code."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error",
             403: "permission_error", 404: "invalid_request_error",
             413: "invalid_request_error", 415: "invalid_request_error",
             503: "service_unavailable", 500: "server_error"}

    def __init__(self, status: int, message: str, code: Optional[str] = None,
                 param: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "error"),
                          "param": self.param, "code": self.code}}


# ---------------------------------------------------------------------------- auth
def as_logins(auth) -> Optional[Logins]:
    """None, a Logins, or one (user, password) pair as a Logins."""
    return auth if auth is None or isinstance(auth, Logins) else Logins([tuple(auth)])


async def authorized(header: Optional[str], auth, client: str = "") -> bool:
    """Whether an Authorization header passes `auth` (Logins, or one (user, password)): Bearer
    PASS, the way API clients send a key, or Basic USER:PASS, the way curl -u and browsers send
    a login; in turn with the other attempts of its name or address, after their delay
    (Logins.attempt, Logins.key)."""
    auth = as_logins(auth)
    if auth is None:
        return True
    scheme, _, value = (header or "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return await auth.key(value, client)
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except ValueError:
            user, password = "", ""
        return await auth.attempt(user, password, client)
    return False


def exposure_problem(host: str, auth, share: bool = False,
                     insecure: bool = False) -> Optional[str]:
    """Why /v1 must not be served here without a login (reachable beyond this machine, and no
    --insecure-no-auth), or None."""
    return exposure(host, auth is not None, share, insecure)[0]


# ---------------------------------------------------------------------------- the request
@dataclass
class ChatRequest:
    model: str
    messages: list[dict]
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    max_tokens: int = DEFAULT_MAX_TOKENS
    stream: bool = False
    include_usage: bool = False
    enable_thinking: Optional[bool] = None
    stop: tuple[str, ...] = ()

    @classmethod
    def parse(cls, body, bounds=None) -> "ChatRequest":
        """The fields this API honours, each checked with what to send instead. Fields it has
        no use for (seed, penalties, user, ...) are ignored, as many OpenAI-compatible servers
        do; n > 1, tools and logprobs are refused, since the answer would not be what was
        asked for. With `bounds`, a longer reply than they allow is refused too."""
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object with model and messages")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "model is missing: send the id of a served model (GET /v1/models "
                           "lists them)", param="model")
        for name, ok in (("n", body.get("n") in (None, 1)), ("tools", not body.get("tools")),
                         ("logprobs", not body.get("logprobs"))):
            if not ok:
                raise ApiError(400, f"{name} is not supported here: leave it out (one answer, "
                               "plain text)", param=name)
        kwargs = body.get("chat_template_kwargs") or {}
        thinking = body.get("enable_thinking", kwargs.get("enable_thinking"))
        if thinking is not None and not isinstance(thinking, bool):
            raise ApiError(400, "enable_thinking must be true or false", param="enable_thinking")
        stop = body.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else stop
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
            raise ApiError(400, "stop must be a string or a list of strings", param="stop")
        options = body.get("stream_options") or {}
        return cls(model=model, messages=_messages(body.get("messages")),
                   temperature=_number(body, "temperature", DEFAULT_TEMPERATURE, 0, 2),
                   top_p=_number(body, "top_p", DEFAULT_TOP_P, 0, 1, low_open=True),
                   max_tokens=_max_tokens(body, bounds), stream=bool(body.get("stream")),
                   include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
                   enable_thinking=thinking, stop=tuple(stop))


def _messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {role, content}",
                       param="messages")
    out = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            raise ApiError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}, got "
                           f"{role!r}", param=f"messages[{i}].role")
        out.append({"role": ROLES[role], "content": _text(m.get("content"), i)})
    return out


def _text(content, i: int) -> str:
    """A message's content as text: a string, or a list of text parts (OpenAI's typed parts)."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if any(p.get("type") != "text" for p in content):
            raise ApiError(400, f"messages[{i}].content: only text parts can be answered here "
                           "(the model reads text)", param=f"messages[{i}].content")
        return "".join(str(p.get("text", "")) for p in content)
    raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts",
                   param=f"messages[{i}].content")


def _number(body: dict, name: str, default: float, low: float, high: float,
            low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not \
            (low < value <= high if low_open else low <= value <= high):
        raise ApiError(400, f"{name} must be a number {'above' if low_open else 'from'} {low} "
                       f"{'up ' if low_open else ''}to {high}, got {value!r}", param=name)
    return float(value)


def _max_tokens(body: dict, bounds=None) -> int:
    from studio.service.access import OverBounds

    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ApiError(400, f"{name} must be a whole number of 1 or more, got {value!r}",
                           param=name)
        try:
            if bounds is not None:
                bounds.check(0, value)
        except OverBounds as e:
            raise ApiError(400, f"{name}: {e}", param=name) from None
        return value
    return min(DEFAULT_MAX_TOKENS, bounds.reply_tokens) if bounds else DEFAULT_MAX_TOKENS


# ---------------------------------------------------------------------------- thinking
def split_reply(text: str, done: bool = True) -> tuple[str, str]:
    """(reasoning, content) of a Qwen3 reply, for OpenAI's message.

    A reply that opens with <think>...</think> has that part in `reasoning_content` and the
    rest in `content`, as vLLM and SGLang do with their Qwen3 reasoning parser and DeepSeek's
    API does: clients show `content` as the answer (the think tags never leak into it, nor into
    a tool that parses the answer), and the ones that know `reasoning_content` can show the
    thinking apart. While streaming (done=False), a tail that may yet turn into a tag is held
    back, so each part only ever grows."""
    stripped = text.lstrip()
    if not done and "<think>".startswith(stripped):
        return "", ""                       # nothing yet, or a <think> still being written
    if not stripped.startswith("<think>"):
        return "", text
    body = stripped[len("<think>"):]
    end = body.find("</think>")
    if end < 0:
        return (body.lstrip(), "") if done else (body[:len(body) - _held(body, "</think>")]
                                                 .lstrip(), "")
    return body[:end].lstrip(), body[end + len("</think>"):].lstrip()


def _held(text: str, *tags: str) -> int:
    """How many characters at the end of `text` could be the start of one of `tags`."""
    return max((n for tag in tags for n in range(min(len(tag), len(text)), 0, -1)
                if tag.startswith(text[-n:])), default=0)


# ---------------------------------------------------------------------------- what is served
def model_id(source: str) -> str:
    """A served model's id: a run's (or a model folder's) name, else the model id as given."""
    from studio.runs.store import is_run_dir

    path = Path(source)
    return path.name if is_run_dir(path) or path.is_dir() else source


class Served:
    """The models one server answers for, over a Service (which keeps them loaded).

    `sources` is a list of run folders (or base models); None serves every run of the runs
    folder with an adapter, found afresh on each request, so a run trained meanwhile appears.
    An empty list is "off": every request is answered 503 with `off_message`."""

    def __init__(self, service: "Service", sources: Optional[list[str]] = None,
                 off_message: str = OFF):
        self.service, self.off_message = service, off_message
        self.refusal: Optional[str] = None      # why this server must not serve (set on mount)
        self.mounted = self.needs_key = False   # on the page's app; behind its --auth
        self._sources = None if sources is None else [str(s) for s in sources]
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        if self._sources:
            self.table()                        # two runs of one name: said now, not later

    def serve(self, sources: list[str]) -> None:
        """Answer for these from now on ([] turns the API off)."""
        self._sources = [str(s) for s in sources]
        self.table()

    @property
    def on(self) -> bool:
        return self._sources is None or bool(self._sources)

    def table(self) -> dict[str, str]:
        """id -> source of every model served now."""
        sources = self._sources if self._sources is not None else \
            [str(run.run_dir) for run, _ in self.service.chat_runs()]
        out: dict[str, str] = {}
        for source in sources:
            name = model_id(source)
            if out.get(name, source) != source:
                raise ValueError(f"two runs are named {name} ({out[name]} and {source}): serve "
                                 "one of them, or rename one (python -m studio runs rename)")
            out[name] = source
        return out

    def source(self, model: str) -> str:
        """The source behind a model id; 404 naming the served ids when it is not one."""
        self.check()
        table = self.table()
        if model not in table:
            raise ApiError(404, f"The model {model!r} is not served here: use one of "
                           f"{', '.join(table) or '(none)'} (GET /v1/models lists them)",
                           code="model_not_found", param="model")
        return table[model]

    def check(self) -> None:
        if self.refusal:
            raise ApiError(503, self.refusal)
        if not self.on:
            raise ApiError(503, self.off_message)

    def models(self) -> list[dict]:
        from studio.runs.store import files, is_run_dir

        self.check()
        out = []
        for name, source in self.table().items():
            path = Path(source)
            created = int(files(path).config.stat().st_mtime) if is_run_dir(path) else 0
            out.append({"id": name, "object": "model", "created": created,
                        "owned_by": "qwen3-studio"})
        return out

    def lock(self, source: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(source, threading.Lock())

    def load(self, source: str):
        """The model behind `source`, loaded once (under its lock, so two first requests do not
        load it twice)."""
        with self.lock(source):
            return self.service.model(source)


# ---------------------------------------------------------------------------- one generation
class Generation:
    """One reply, written by a worker thread that holds the model's lock while it loads the
    model and generates; the server reads its events from an asyncio queue:

        ("ready", prompt_tokens), ("text", piece)..., ("done", finish_reason, completion_tokens)
        or ("error", ApiError) at any point.

    A client that goes away cancels it: the model stops at its next token (or chunk), and the
    lock is free for the next request once it has."""

    def __init__(self, served: Served, request: ChatRequest):
        self.request, self.served = request, served
        import asyncio

        self.source = served.source(request.model)
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._work, daemon=True, name=f"serve {request.model}").start()

    async def next(self) -> tuple:
        return await self.events.get()

    def cancel(self) -> None:
        """Stop: the model stops at its next token, and a reader waiting for an event gets
        an error rather than waiting for ever."""
        if not self.cancelled.is_set():
            self._put("error", ApiError(499, "the client went away"))
            self.cancelled.set()

    def _put(self, *event) -> None:
        if self.cancelled.is_set():
            return
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:            # the server's loop has closed: nobody is listening
            self.cancelled.set()

    def _work(self) -> None:
        r = self.request
        try:
            with self.served.lock(self.source):
                try:
                    loaded = self.served.service.model(self.source)
                except Exception as e:   # noqa: BLE001 - said to the client, the server goes on
                    raise ApiError(500, f"could not load {r.model}: {e}") from e
                ids = self._prompt(loaded)
                self._put("ready", len(ids))
                self._generate(loaded, ids)
        except ApiError as e:
            self._put("error", e)
        except Exception as e:   # noqa: BLE001 - the generation failed midway
            self._put("error", ApiError(500, f"{r.model} failed while answering: {e}"))

    def _prompt(self, loaded) -> list[int]:
        """The conversation as the model is prompted with it, inside the server's bounds."""
        from studio.service.access import OverBounds
        from studio.inference import prompt_ids

        r = self.request
        try:
            ids = prompt_ids(loaded.tokenizer, r.messages, loaded.prompt_format,
                             r.enable_thinking)
        except Exception as e:   # noqa: BLE001 - a template that refuses these messages
            raise ApiError(400, f"the messages do not fit {r.model}'s chat template: {e}",
                           param="messages") from e
        try:
            self.served.service.bounds.check(len(ids), r.max_tokens)
        except OverBounds as e:
            raise ApiError(400, str(e), param="messages") from None
        return ids

    def _generate(self, loaded, ids: list[int]) -> None:
        """Text events up to the first stop string, then done; the model stops as soon as the
        answer is complete or the client is gone (the stream is closed, not drained)."""
        from contextlib import closing

        from studio.inference import stream_reply

        r = self.request
        text, sent, finish = "", 0, None
        with closing(stream_reply(loaded, r.messages, max_new_tokens=r.max_tokens,
                                  temperature=r.temperature, top_p=r.top_p,
                                  enable_thinking=r.enable_thinking, ids=ids)) as pieces:
            for piece in pieces:
                if self.cancelled.is_set():
                    return
                text += piece
                cut = min((i for s in r.stop if (i := text.find(s)) >= 0), default=None)
                if cut is not None:
                    text, finish = text[:cut], "stop"
                upto = len(text) if finish else len(text) - _held(text, *r.stop)
                if upto > sent:
                    self._put("text", text[sent:upto])
                    sent = upto
                if finish:
                    break
        if sent < len(text):
            self._put("text", text[sent:])
        tokens = count_tokens(loaded.tokenizer, text)
        self._put("done", finish or ("length" if tokens >= r.max_tokens else "stop"), tokens)


def count_tokens(tokenizer, text: str) -> int:
    """The reply's length in tokens, counted by tokenizing its text again (the backends stream
    text, not ids); "length" as finish_reason when it reached max_tokens."""
    try:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    except Exception:   # noqa: BLE001 - a tokenizer that cannot say: a rough count
        return len(text.split())


# ---------------------------------------------------------------------------- HTTP
def router(served: Served, auth=None):
    """The /v1 routes over `served`, for the standalone server and for the page's app. Each
    route answers its errors itself (no app-wide handlers: the page's app is Gradio's)."""
    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    api = APIRouter(prefix="/v1")

    def error(e: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="Qwen3 Studio"'} if e.status == 401 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    async def admit(request: Request) -> None:
        header, client = request.headers.get("authorization"), getattr(request.client, "host", "")
        if not await authorized(header, auth, client):
            raise ApiError(401, "Wrong or missing API key: send the password given to --auth "
                           "as the API key (Authorization: Bearer PASS), or HTTP Basic "
                           "USER:PASS", code="invalid_api_key")

    @api.get("/models")
    async def list_models(request: Request):
        try:
            await admit(request)
            return JSONResponse({"object": "list", "data": served.models()})
        except ApiError as e:
            return error(e)

    @api.get("/models/{model:path}")
    async def one_model(model: str, request: Request):
        try:
            await admit(request)
            served.source(model)
            return JSONResponse(next(m for m in served.models() if m["id"] == model))
        except ApiError as e:
            return error(e)

    @api.post("/chat/completions")
    async def chat_completions(request: Request):
        bounds = served.service.bounds
        try:
            await admit(request)
            sent_by_a_page_elsewhere(request)
            try:
                body = json.loads(await read_body(request, bounds.request_bytes))
            except (ValueError, RecursionError):
                raise ApiError(400, "the body is not JSON (or nested too deeply): send "
                               "{\"model\": ..., \"messages\": [...]} with Content-Type: "
                               "application/json") from None
            chat = ChatRequest.parse(body, bounds)
            generation = Generation(served, chat)
            first = await generation.next()     # loaded and prompted, or why not
            if first[0] == "error":
                raise first[1]
        except ApiError as e:
            return error(e)
        reply = Reply(chat, prompt_tokens=first[1])
        if chat.stream:
            return StreamingResponse(reply.chunks(generation), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        gone = asyncio.create_task(cancel_when_gone(request, generation))
        try:
            return JSONResponse(await reply.whole(generation))
        except ApiError as e:
            return error(e)
        finally:
            gone.cancel()

    return api


def sent_by_a_page_elsewhere(request) -> None:
    """403 for a post another site's page sent, 415 for one not sent as JSON. A page elsewhere
    can send a "simple" cross-site post (text/plain, no preflight) to this machine's port, and
    the model would answer it; a JSON post it cannot send without asking first, which nothing
    here allows."""
    from urllib.parse import urlparse

    origin = request.headers.get("origin")
    if origin and urlparse(origin).netloc.lower() != request.headers.get("host", "").lower():
        raise ApiError(403, f"a request from a page of {origin[:100]} is not answered here: "
                            "call the API from a program, not from another site's page")
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != \
            "application/json":
        raise ApiError(415, "send the body as JSON, with the header Content-Type: "
                            "application/json")


async def read_body(request, limit: int) -> bytes:
    """The request's body, or 413 as soon as it is longer than `limit` bytes (never read
    whole into memory first)."""
    too_big = ApiError(413, f"the request body is over {limit:,} bytes, this server's "
                            "--max-request-size: send a shorter conversation")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)


async def cancel_when_gone(request, generation: "Generation") -> None:
    """Cancel the generation when the client of a whole (not streamed) reply disconnects."""
    while not await request.is_disconnected():
        await asyncio.sleep(0.5)
    generation.cancel()


class Reply:
    """The response's JSON: whole, or as the chunks of a stream."""

    def __init__(self, chat: ChatRequest, prompt_tokens: int):
        self.chat, self.prompt_tokens = chat, prompt_tokens
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.chat.model}

    def usage(self, completion_tokens: int) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": self.prompt_tokens + completion_tokens}

    async def whole(self, generation: Generation) -> dict:
        text = ""
        while True:
            event = await generation.next()
            if event[0] == "text":
                text += event[1]
            elif event[0] == "error":
                raise event[1]
            else:
                break
        reasoning, content = split_reply(text)
        message = {"role": "assistant", "content": content}
        if reasoning:
            message["reasoning_content"] = reasoning
        return {**self.head("chat.completion"),
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": event[1]}],
                "usage": self.usage(event[2])}

    async def chunks(self, generation: Generation):
        """Server-Sent Events in OpenAI's chunk format: the role, the text as it comes (the
        thinking as reasoning_content), an empty delta with finish_reason, usage if asked for,
        then [DONE]. A failure midway is sent as an error event, as OpenAI does."""
        def chunk(delta: dict, finish=None) -> str:
            body = {**self.head("chat.completion.chunk"),
                    "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                 "finish_reason": finish}]}
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        try:
            yield chunk({"role": "assistant", "content": ""})
            text, shown = "", ("", "")
            while True:
                event = await generation.next()
                if event[0] == "error":
                    yield f"data: {json.dumps(event[1].body(), ensure_ascii=False)}\n\n"
                    break
                if event[0] == "text":
                    text += event[1]
                now = split_reply(text, done=event[0] == "done")
                for key, old, new in zip(("reasoning_content", "content"), shown, now):
                    if len(new) > len(old):
                        yield chunk({key: new[len(old):]})
                shown = now
                if event[0] == "done":
                    yield chunk({}, finish=event[1])
                    if self.chat.include_usage:
                        body = {**self.head("chat.completion.chunk"), "choices": [],
                                "usage": self.usage(event[2])}
                        yield f"data: {json.dumps(body)}\n\n"
                    break
            yield "data: [DONE]\n\n"
        finally:
            generation.cancel()     # the client may have gone: stop sending, finish generating


def create_app(served: Served, auth=None, insecure: bool = False):
    """A FastAPI app with the /v1 routes alone: what `python -m studio serve` runs, behind the
    Gatekeeper (without a login, only requests addressed to this machine)."""
    from fastapi import FastAPI

    app = FastAPI(title="Qwen3 Studio API", docs_url=None, redoc_url=None)
    app.include_router(router(served, as_logins(auth)))
    app.add_middleware(Gatekeeper, any_host=auth is not None or insecure)
    return app


# ---------------------------------------------------------------------------- the page
_PAGE: "weakref.WeakKeyDictionary[Service, Served]" = weakref.WeakKeyDictionary()


def served_for(service: "Service") -> Served:
    """The page's one Served over its service: the Chat tab's toggle sets what it serves and
    the page's server mounts its routes. Off until the toggle is ticked."""
    if service not in _PAGE:
        _PAGE[service] = Served(service, [])
    return _PAGE[service]


def page_routes(service: "Service", auth, host: str, share: bool,
                insecure: bool = False) -> list:
    """The /v1 routes for the page's own app (Gradio's launch(app_kwargs={"routes": ...})), so
    they come before Gradio's and share its port, its --share tunnel and its --auth. A page that
    others can reach without --auth refuses to serve (the toggle says why)."""
    served = served_for(service)
    served.refusal, served.mounted = exposure_problem(host, auth, share, insecure), True
    served.needs_key = auth is not None
    return list(router(served, as_logins(auth)).routes)


def examples(base_url: str, model: str, auth: bool) -> tuple[str, str]:
    """(python, curl): how a client asks the served model, to print or to copy from the page."""
    key = "PASS" if auth else "none"
    python = (f'from openai import OpenAI\n\n'
              f'client = OpenAI(base_url="{base_url}", api_key="{key}")'
              f'{"   # PASS: the --auth password" if auth else ""}\n'
              f'reply = client.chat.completions.create(\n'
              f'    model="{model}", messages=[{{"role": "user", "content": "Hello!"}}])\n'
              f'print(reply.choices[0].message.content)')
    header = "-H 'Authorization: Bearer PASS' " if auth else ""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]})
    curl = (f"curl {base_url}/chat/completions {header}-H 'Content-Type: application/json' "
            f"-d '{body}'")
    return python, curl


# ---------------------------------------------------------------------------- the command
def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", action="append", default=[], metavar="RUN",
                        help="a run folder to serve (or a run's name in --runs-dir, or a base "
                             "model); repeat for several; none: every run of --runs-dir with an "
                             "adapter")
    parser.add_argument("--runs-dir", "--runs_dir", default="runs",
                        help="folder of runs (default: runs)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: this machine only; another one "
                             "needs --auth)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT})")
    add_login_flags(parser, "the API (clients send PASS as their API key)")
    add_bounds_flags(parser)


def _source(arg: str, runs_dir: Path) -> str:
    """--run as given: a folder, a run's name in the runs folder, or a base model id."""
    from studio.runs.store import is_run_dir

    path = Path(arg).expanduser()
    if path.exists():
        return str(path.resolve())
    if is_run_dir(runs_dir / arg):
        return str((runs_dir / arg).resolve())
    return arg


def main(args: argparse.Namespace) -> int:
    """Load what --run names, print how to reach it, and serve until Ctrl-C."""
    import socket

    import uvicorn

    from studio.runs.store import is_run_dir
    from studio.service.actions import Service

    try:
        who = logins(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.auth:
        hide_password_from_ps()
    why, warning = exposure(args.host, who is not None, False, args.insecure_no_auth)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    runs_dir = Path(args.runs_dir).expanduser()
    sources = [_source(r, runs_dir) for r in args.run]
    first = Path(sources[0]) if sources else None
    service = Service(first.parent if first and is_run_dir(first) else runs_dir)
    service.bounds = bounds_of(args)
    try:
        served = Served(service, sources or None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, source in served.table().items() if sources else ():
        print(f"loading {name} ({source})", flush=True)
        served.load(source)
    with socket.socket() as s:         # said plainly now, rather than as uvicorn's traceback
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((args.host, args.port))
        except OSError as e:
            print(f"error: cannot listen on {args.host}:{args.port} ({e}): pass another --port",
                  file=sys.stderr)
            return 2
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    base_url = f"http://{shown}:{args.port}/v1"
    names = list(served.table()) or ["RUN_NAME"]
    python, curl = examples(base_url, names[0], who is not None)
    print(f"serving {', '.join(names) if sources else f'the runs in {service.runs_dir}'} at "
          f"{base_url} (OpenAI-compatible; Ctrl-C stops)\n\n{python}\n\n{curl}\n", flush=True)
    uvicorn.run(create_app(served, who, args.insecure_no_auth), host=args.host, port=args.port,
                log_level="warning")
    return 0
