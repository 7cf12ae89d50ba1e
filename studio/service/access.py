"""Who may reach the studio and what it may touch when served: logins (from a file, the
environment or argv, with failed attempts slowed down), the exposure rule (beyond this machine
only with a login, or with an explicit --insecure-no-auth), the folders a served page may
read (Confinement), and how much work one chat request may ask (ReplyBounds). The Python API and the command line never go through here: the operator
keeps full access. Nothing here imports gradio or fastapi.
"""
from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import os
import threading
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

AUTH_ENV = "QWEN3_STUDIO_AUTH"
CLIENT: ContextVar[str] = ContextVar("client", default="")   # this request's client address


class Outside(ValueError):
    """A path the served page may not touch. Its message never says whether the path exists."""


# ---------------------------------------------------------------------------- logins
def user_and_password(text: str) -> tuple[str, str]:
    user, sep, password = text.strip().partition(":")
    if not sep or not user.strip():
        raise argparse.ArgumentTypeError("a login is USER:PASS, e.g. alice:s3cret")
    if not password:
        raise argparse.ArgumentTypeError(f"the login {user.strip()!r} has an empty password, "
                                         "which anyone could type: give it one (USER:PASS)")
    return user.strip(), password


class Logins:
    """The accepted USER:PASS pairs. A failed attempt makes the next one for that user name,
    and from that client address, wait longer (0.5 s, doubling to 8 s; a success clears both),
    and attempts for one name or from one address take their turns one after another: guesses
    sent in parallel wait as long as guesses sent in a row (41 parallel logins once all ended in
    8 s). Guessing a password over HTTP takes years instead of hours. Passwords are compared in
    constant time."""

    FIRST_DELAY, MAX_DELAY = 0.5, 8.0
    KEPT = 10_000               # names and addresses remembered at most

    def __init__(self, pairs: Iterable[tuple[str, str]]):
        self.users = dict(pairs)
        if not self.users:
            raise ValueError("no login given")
        self._failures: dict[str, int] = {}
        self._turns: dict[str, asyncio.Lock] = {}
        self._lock = threading.Lock()

    def delay(self, who: str) -> float:
        """Seconds the next attempt by `who` (a user name, or "from CLIENT") waits before it
        is checked."""
        with self._lock:
            n = self._failures.get(who, 0)
        return 0.0 if n == 0 else min(self.FIRST_DELAY * 2 ** (n - 1), self.MAX_DELAY)

    def check(self, user: str, password: str) -> bool:
        """Whether the pair is a login; counts a failure against `user` (no waiting here)."""
        return self._count([user], self._matches(user, password))

    def _matches(self, user: str, password: str) -> bool:
        expected = self.users.get(user)
        return hmac.compare_digest((password or "").encode(), (expected or "").encode()) \
            and expected is not None

    def _is_key(self, password: str) -> bool:
        return any([hmac.compare_digest((password or "").encode(), p.encode())
                    for p in self.users.values()])

    def _count(self, whos: list[str], ok: bool) -> bool:
        with self._lock:
            for who in whos:
                if ok:
                    self._failures.pop(who, None)
                elif len(self._failures) < self.KEPT or who in self._failures:
                    self._failures[who] = self._failures.get(who, 0) + 1
        return ok

    async def attempt(self, user: str, password: str, client: Optional[str] = None) -> bool:
        """A login attempt, as Gradio's auth callable (a coroutine function: Gradio awaits only
        those): in turn behind the attempts for the same name and from the same address (the
        request's, from CLIENT where not given), waits out their delay without blocking the
        server, then checks."""
        client = CLIENT.get() if client is None else client
        return await self._in_turn([user] + ([f"from {client}"] if client else []),
                                   lambda: self._matches(user, password))

    async def key(self, password: str, client: str = "") -> bool:
        """An API key (Authorization: Bearer PASS): the password of any login, in turn with
        the other keys from the same address; failures count under "key from CLIENT", so one
        guesser slows only itself."""
        return await self._in_turn([f"key from {client}"], lambda: self._is_key(password))

    async def _in_turn(self, whos: list[str], matches) -> bool:
        turns = [self._turn(who) for who in sorted(set(whos))]   # one order: no deadlock
        for turn in turns:
            await turn.acquire()
        try:
            await asyncio.sleep(max(self.delay(who) for who in whos))
            return self._count(whos, matches())
        finally:
            for turn in turns:
                turn.release()

    def _turn(self, who: str) -> asyncio.Lock:
        with self._lock:
            if len(self._turns) >= self.KEPT:      # forget the idle ones
                self._turns = {k: t for k, t in self._turns.items() if t.locked()}
            return self._turns.setdefault(who, asyncio.Lock())

    def first(self) -> tuple[str, str]:
        return next(iter(self.users.items()))


def read_logins(path: str | Path) -> list[tuple[str, str]]:
    """USER:PASS lines of a file (blank lines and # comments skipped)."""
    pairs = []
    for n, line in enumerate(Path(path).expanduser().read_text(encoding="utf-8").splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                pairs.append(user_and_password(line))
            except argparse.ArgumentTypeError as e:
                raise ValueError(f"{path}, line {n}: {e}") from None
    if not pairs:
        raise ValueError(f"{path} holds no USER:PASS line")
    return pairs


def logins(args: argparse.Namespace, environ=os.environ) -> Optional[Logins]:
    """The logins asked for: --auth-file, --auth, and QWEN3_STUDIO_AUTH (USER:PASS, several
    separated by commas), together; None when none is given. Raises ValueError with what is
    wrong."""
    pairs = []
    if getattr(args, "auth_file", None):
        try:
            pairs += read_logins(args.auth_file)
        except OSError as e:
            raise ValueError(f"cannot read --auth-file {args.auth_file}: "
                             f"{e.strerror or e}") from None
    if getattr(args, "auth", None):
        pairs.append(args.auth)
    if environ.get(AUTH_ENV, "").strip():
        try:
            pairs += [user_and_password(p) for p in environ[AUTH_ENV].split(",") if p.strip()]
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"{AUTH_ENV} wants USER:PASS (several: separated by commas): "
                             f"{e}") from None
    return Logins(pairs) if pairs else None


def add_login_flags(parser: argparse.ArgumentParser, what: str = "the page") -> None:
    parser.add_argument("--auth-file", metavar="PATH",
                        help=f"ask for a login to {what}: a file of USER:PASS lines (or set "
                             f"{AUTH_ENV}=USER:PASS); preferred over --auth, whose password "
                             "is on the command line")
    parser.add_argument("--auth", metavar="USER:PASS", type=user_and_password,
                        help=f"a login on the command line (its password is blanked from `ps` "
                             f"once started, but shell history keeps it: prefer --auth-file or "
                             f"{AUTH_ENV})")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="allow --host beyond this machine or --share without a login "
                             "(anyone who reaches it can use the studio)")


# ---------------------------------------------------------------------------- bounds
class OverBounds(ValueError):
    """A chat request that asks for more than the server's bounds; the message names them."""


@dataclass
class ReplyBounds:
    """The most one chat request may ask of a served model (the page's chat, its chat_reply
    API and /v1 alike), so that no request holds a model for long: a reply of 10**9 tokens once
    held one until the server restarted. Set by --max-reply-tokens, --max-prompt-tokens and
    --max-request-size."""
    reply_tokens: int = 4096
    prompt_tokens: int = 16384
    request_bytes: int = 2**20       # a /v1 body, before it is read as JSON

    def check(self, prompt_tokens: int, reply_tokens: int) -> None:
        """OverBounds, saying which bound and how to stay inside it, before anything runs."""
        if reply_tokens > self.reply_tokens:
            raise OverBounds(f"a reply of {reply_tokens:,} tokens was asked for; this server "
                             f"writes at most {self.reply_tokens:,} (--max-reply-tokens)")
        if prompt_tokens > self.prompt_tokens:
            raise OverBounds(f"the conversation is {prompt_tokens:,} tokens; this server reads "
                             f"at most {self.prompt_tokens:,} (--max-prompt-tokens): shorten it")


def add_bounds_flags(parser: argparse.ArgumentParser) -> None:
    default = ReplyBounds()
    parser.add_argument("--max-reply-tokens", type=int, default=default.reply_tokens,
                        metavar="N", help="longest reply one chat request may ask for "
                        f"(default {default.reply_tokens})")
    parser.add_argument("--max-prompt-tokens", type=int, default=default.prompt_tokens,
                        metavar="N", help="longest conversation one chat request may send, "
                        f"in tokens (default {default.prompt_tokens})")
    parser.add_argument("--max-request-size", type=int, default=default.request_bytes,
                        metavar="BYTES", help="largest /v1 request body "
                        f"(default {default.request_bytes})")


def bounds_of(args: argparse.Namespace) -> ReplyBounds:
    return ReplyBounds(args.max_reply_tokens, args.max_prompt_tokens, args.max_request_size)


def hide_password_from_ps() -> bool:
    """Overwrite the --auth password with x's in this process's own command line (what `ps`
    and /proc/PID/cmdline show): on Linux that is the process's argument area, whose address
    /proc/self/stat gives. Best effort (argparse has its copy already); returns whether it was
    done."""
    import ctypes

    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        arg_start, arg_end = int(fields[45]), int(fields[46])    # fields 48 and 49
        with open("/proc/self/cmdline", "rb") as f:
            raw = f.read()
    except (OSError, IndexError, ValueError):
        return False
    if arg_end - arg_start != len(raw):
        return False
    done, at = False, 0
    words = raw.split(b"\0")
    for i, word in enumerate(words):
        login = None
        if word == b"--auth" and i + 1 < len(words):
            login = (at + len(word) + 1, words[i + 1])
        elif word.startswith(b"--auth="):
            login = (at + len(b"--auth="), word[len(b"--auth="):])
        if login and b":" in login[1]:
            offset = login[0] + login[1].index(b":") + 1
            n = len(login[1]) - login[1].index(b":") - 1
            ctypes.memmove(arg_start + offset, b"x" * n, n)
            done = True
        at += len(word) + 1
    return done


# ---------------------------------------------------------------------------- exposure
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure(host: str, has_login: bool, share: bool = False,
             insecure: bool = False) -> tuple[Optional[str], Optional[str]]:
    """(refusal, warning): serving beyond this machine without a login is refused unless
    `insecure` (--insecure-no-auth), and then warned."""
    if has_login or (is_loopback(host) and not share):
        return None, None
    where = "a public gradio.live link (--share)" if share else f"--host {host}"
    if insecure:
        return None, (f"{where} without a login (--insecure-no-auth): anyone who reaches it "
                      "can use this studio, read its runs and train on this machine")
    return (f"{where} would let anyone who reaches it use the studio: give a login with "
            f"--auth-file PATH (USER:PASS lines), {AUTH_ENV}=USER:PASS or --auth USER:PASS, "
            "or keep --host "
            "127.0.0.1; --insecure-no-auth serves it without one anyway"), None


# ---------------------------------------------------------------------------- every request
def named_here(host: str) -> bool:
    """Whether a Host header names this machine as only this machine's own pages do: localhost
    (or a name under .localhost), or an IP address; an empty one too (HTTP/1.0)."""
    name = host.strip().lower()
    if name.startswith("["):                       # [::1]:7860
        name = name[1:name.find("]")]
    elif name.count(":") == 1:                     # localhost:7860
        name = name.rsplit(":", 1)[0]
    if name in ("", "localhost") or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class Gatekeeper:
    """ASGI middleware before the page's app and the API's: it keeps each request's client
    address in CLIENT (logins are throttled per address too), and on a server without a login
    (and without --insecure-no-auth) answers only requests that name this machine by localhost
    or an IP address. A web page whose own name was rebound to 127.0.0.1 (DNS rebinding) sends
    that name as Host, and without this it could drive every endpoint."""

    REFUSED = (b"This studio has no login, so it answers only to localhost or an IP address: "
               b"open it as http://127.0.0.1:PORT/ (or give it a login with --auth-file).")

    def __init__(self, app, any_host: bool):
        self.app, self.any_host = app, any_host

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        token = CLIENT.set((scope.get("client") or ("",))[0] or "")
        try:
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if self.any_host or named_here(host):
                return await self.app(scope, receive, send)
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body", "body": self.REFUSED})
        finally:
            CLIENT.reset(token)


# ---------------------------------------------------------------------------- confinement
def hub_cache() -> Path:
    """The Hugging Face hub cache (HF_HUB_CACHE, HF_HOME/hub, or ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache"),
                                             "huggingface")
    return Path(home) / "hub"


class Confinement:
    """The folders a served page may read and write: every path it takes is resolved
    (symlinks included) and must lie inside one of them. Refusals name the path as given and
    the rule, never whether it exists or where the server runs."""

    def __init__(self, roots: Iterable[str | Path]):
        self.roots = []
        for root in roots:
            resolved = Path(root).expanduser().resolve()
            if resolved not in self.roots:
                self.roots.append(resolved)

    @classmethod
    def served(cls, runs_dir: str | Path, examples: Path,
               allow: Iterable[str | Path] = ()) -> "Confinement":
        """The runs folder (uploads are under it), the studio's example data, the model caches
        (the studio's and the HF hub's), and the operator's --allow-dir folders."""
        from studio.models.local import CACHE

        return cls([runs_dir, examples, CACHE, hub_cache(), *allow])

    def path(self, given: str | Path) -> Path:
        """`given` resolved, or Outside."""
        text = str(given).strip()
        try:
            resolved = Path(text).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            resolved = None
        if text and resolved is not None and any(resolved == r or r in resolved.parents
                                                 for r in self.roots):
            return resolved
        raise Outside(f"{_shown(text)} is outside the folders this studio serves (its runs "
                      "folder, uploads, assets, the model cache): the operator can add a "
                      "folder with --allow-dir")


def hub_shaped(text: str) -> bool:
    """owner/name (or a bare name) as the Hub spells them."""
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?", text)) \
        and ".." not in text


def _shown(text: str) -> str:
    text = text if len(text) <= 120 else text[:117] + "..."
    return repr(text)
