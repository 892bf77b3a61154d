"""A fake model API on 127.0.0.1 speaking OpenAI's and Anthropic's wire formats.

Tests queue responses (status, headers, JSON body or raw bytes, delay) per path; when
a path's queue is empty its default handler answers. Every request is recorded with
its headers, JSON body and arrival time, so tests can see retries and their spacing.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering (to provoke client timeouts).
    delay: float = 0.0
    #: Sent as is instead of `body` (malformed JSON).
    raw: bytes | None = None


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


Handler = Callable[[Seen], Reply]


def openai_chat(seen: Seen) -> Reply:
    """Answer a chat completion: through the forced tool if one was offered, else text."""
    body = seen.body
    tools = body.get("tools") or []
    message: dict[str, Any] = {"role": "assistant", "content": None}
    if tools:
        name = tools[0]["function"]["name"]
        arguments = (
            {"thought": "t", "actions": ["REPLY"], "text": "Hello from the fake OpenAI."}
            if name == "respond"
            else {"thought": "t", "facts": [], "relationships": []}
        )
        message["tool_calls"] = [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
        ]
        finish = "tool_calls"
    else:
        message["content"] = (
            "<response><thought>t</thought><actions>REPLY</actions>"
            "<text>Hello from the fake compatible server.</text></response>"
        )
        finish = "stop"
    return Reply(
        body={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "gpt-4o"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
        }
    )


def openai_embeddings(seen: Seen) -> Reply:
    texts = seen.body["input"]
    texts = [texts] if isinstance(texts, str) else texts
    size = int(seen.body.get("dimensions") or 384)
    data = []
    for index, text in enumerate(texts):
        vector = [0.0] * size
        vector[hash(text) % size] = 1.0
        data.append({"object": "embedding", "index": index, "embedding": vector})
    return Reply(
        body={
            "object": "list",
            "data": data,
            "model": seen.body["model"],
            "usage": {"prompt_tokens": 5 * len(texts), "total_tokens": 5 * len(texts)},
        }
    )


def anthropic_messages(seen: Seen) -> Reply:
    body = seen.body
    tools = body.get("tools") or []
    if tools:
        name = tools[0]["name"]
        payload = (
            {"thought": "t", "actions": ["REPLY"], "text": "Hello from the fake Anthropic."}
            if name == "respond"
            else {"thought": "t", "facts": [], "relationships": []}
        )
        content: list[dict[str, Any]] = [
            {"type": "tool_use", "id": "toolu_1", "name": name, "input": payload}
        ]
        stop = "tool_use"
    else:
        content = [{"type": "text", "text": "Hello as text."}]
        stop = "end_turn"
    return Reply(
        body={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 200, "output_tokens": 40},
        }
    )


DEFAULTS: dict[str, Handler] = {
    "/v1/chat/completions": openai_chat,
    "/v1/embeddings": openai_embeddings,
    "/v1/messages": anthropic_messages,
}


class FakeLLM:
    def __init__(self) -> None:
        self.queued: dict[str, deque[Reply]] = defaultdict(deque)
        self.seen: list[Seen] = []
        self.handlers = dict(DEFAULTS)
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def queue(self, path: str, *replies: Reply) -> None:
        with self._lock:
            self.queued[path].extend(replies)

    def requests(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == path]

    def _answer(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
            queued = self.queued[seen.path]
            if queued:
                return queued.popleft()
        handler = self.handlers.get(seen.path)
        return handler(seen) if handler else Reply(404, {"error": {"message": "no such path"}})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                path = self.path.split("?")[0]
                seen = Seen(
                    path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                )
                reply = fake._answer(seen)
                if reply.delay:
                    time.sleep(reply.delay)
                data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler


@contextmanager
def fake_llm() -> Iterator[FakeLLM]:
    fake = FakeLLM()
    thread = threading.Thread(target=fake.server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def error(status: int, message: str, kind: str = "error", **headers: str) -> Reply:
    """An error in the shape both APIs use: {"error": {"message", "type"}}."""
    return Reply(status, {"type": "error", "error": {"message": message, "type": kind}}, headers)
