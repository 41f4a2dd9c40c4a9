"""A Milvus server with authentication (``common.security.authorizationEnabled=true``) that accepts no caller, on a
loopback port: what pymilvus meets when the token is wrong or missing. Milvus Lite has no authentication, so this
answers Milvus's gRPC service the ways real servers refuse, decided before any method runs (as the proxy's
authentication interceptor does, for every method, ``Connect`` included):

- ``unauthenticated``: Milvus 2.4 and later (internal/proxy/authentication_interceptor.go) end the call with gRPC
  status UNAUTHENTICATED: "missing authorization in header" without a token, "auth check failure, please check api
  key is correct" for a token without ``:``, "auth check failure, please check username and password are correct"
  for ``user:password``.
- ``unknown``: Milvus 2.3 before 2.3.5 returned ``merr.WrapErrParameterInvalid(...)`` from the interceptor, an error
  that is no gRPC status, so the call ends UNKNOWN with its text, which names the user and password it was sent
  (2.3.5 itself refuses UNAUTHENTICATED: tests/test_library_server.py runs it).
- ``status``: the call succeeds at the transport and its answer's Status says code 1800, "user hasn't
  authenticated" (``merr.ErrNeedAuthenticate``, the code Milvus's HTTP API refuses with).

With ``admit_connect`` the first call, ``Connect``, succeeds and every later one is refused: a server whose
user or API key was removed, or whose password changed, while a client (the bot) keeps its connection.

Every authorization header received is kept (decoded), so a test sees what the client sent.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import message_factory
from pymilvus.grpc_gen import common_pb2, milvus_pb2

FORMS = ("unauthenticated", "unknown", "status")
SERVICE = milvus_pb2.DESCRIPTOR.services_by_name["MilvusService"]
NEED_AUTHENTICATE = 1800  # merr.ErrNeedAuthenticate's code
STOP_GRACE_S = 2.0  # bound on the server's stop (calls in flight are refused at once anyway)


@dataclass
class RefusingMilvus:
    """The stand-in at ``uri``, refusing in ``form``; ``authorizations`` holds each call's decoded header, None for a
    call without one."""

    uri: str
    form: str
    admit_connect: bool = False
    authorizations: list[str | None] = field(default_factory=list)


class _Refuse(grpc.GenericRpcHandler):
    def __init__(self, server: RefusingMilvus) -> None:
        self.server = server

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        name = handler_call_details.method.rsplit("/", 1)[-1]  # type: ignore[attr-defined]
        method = SERVICE.methods_by_name.get(name)
        if method is None or method.client_streaming or method.server_streaming:
            return None  # not a unary method of MilvusService: gRPC answers UNIMPLEMENTED, as Milvus does
        metadata = dict(handler_call_details.invocation_metadata)  # type: ignore[attr-defined]
        header = metadata.get("authorization")
        raw = base64.b64decode(header).decode(errors="replace") if isinstance(header, str) else None
        self.server.authorizations.append(raw)
        answer: Callable[[bytes, grpc.ServicerContext], bytes] = lambda _request, context: self._refuse(  # noqa: E731
            method, raw, context
        )
        return grpc.unary_unary_rpc_method_handler(answer)

    def _refuse(self, method: Any, raw: str | None, context: grpc.ServicerContext) -> bytes:
        form = self.server.form
        if self.server.admit_connect and method.name == "Connect" and len(self.server.authorizations) == 1:
            return bytes(milvus_pb2.ConnectResponse(status=common_pb2.Status(), identifier=1).SerializeToString())
        if form == "unauthenticated":
            if raw is None:
                details = "missing authorization in header"
            elif ":" not in raw:
                details = "auth check failure, please check api key is correct"
            else:
                details = "auth check failure, please check username and password are correct"
            context.abort(grpc.StatusCode.UNAUTHENTICATED, details)
        if form == "unknown":
            user, _, password = (raw or "").partition(":")
            context.abort(
                grpc.StatusCode.UNKNOWN,
                "auth check failure, please check username and password are correct: expected=vaild username and "
                f"password, actual=username: {user}, password: {password}: invalid parameter",
            )
        status = common_pb2.Status(
            error_code=common_pb2.UnexpectedError, code=NEED_AUTHENTICATE, reason="user hasn't authenticated"
        )
        if method.output_type.full_name == common_pb2.Status.DESCRIPTOR.full_name:
            return bytes(status.SerializeToString())
        reply = message_factory.GetMessageClass(method.output_type)()
        reply.status.CopyFrom(status)  # every other answer of MilvusService carries its Status as ``status``
        return bytes(reply.SerializeToString())


@contextlib.contextmanager
def refusing_milvus(form: str, *, admit_connect: bool = False) -> Iterator[RefusingMilvus]:
    """The stand-in on 127.0.0.1 at a port the kernel chooses, stopped at the end."""
    if form not in FORMS:
        raise ValueError(f"form is one of {FORMS}, not {form!r}")
    server = grpc.server(ThreadPoolExecutor(max_workers=4, thread_name_prefix="refusing-milvus"))
    port = server.add_insecure_port("127.0.0.1:0")
    standin = RefusingMilvus(f"http://127.0.0.1:{port}", form, admit_connect)
    server.add_generic_rpc_handlers((_Refuse(standin),))
    server.start()
    try:
        yield standin
    finally:
        server.stop(grace=STOP_GRACE_S).wait(timeout=STOP_GRACE_S * 2)
