"""`chatllm chat`, `chatllm models`, `chatllm info`: talk to a running gRPC server."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import grpc

from chatllm.clients.blocking import ChatClient

DEFAULT_TARGET = "localhost:50051"


TLS_FILES = {  # argument name -> help; each is --name-with-dashes, --name and env CHATLLM_NAME
    "tls_ca": "PEM CA certificate(s) that signed the server's certificate; connects over TLS",
    "tls_cert": "PEM client certificate, for a server with --tls-client-ca",
    "tls_key": "PEM private key of --tls-cert",
}


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        default=os.environ.get("CHATLLM_TARGET", DEFAULT_TARGET),
        help=f"gRPC server host:port [env CHATLLM_TARGET; default {DEFAULT_TARGET}]",
    )
    parser.add_argument(
        "--token", default=os.environ.get("CHATLLM_TOKEN"), help="authorization token [env CHATLLM_TOKEN]"
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds before giving up")
    tls = parser.add_argument_group("TLS (a server with --tls-cert)")
    tls.add_argument(
        "--tls",
        action="store_true",
        default=bool(os.environ.get("CHATLLM_TLS")),
        help="connect over TLS, trusting the system's root CAs [env CHATLLM_TLS]",
    )
    for name, help_text in TLS_FILES.items():
        env = "CHATLLM_" + name.upper()
        flag = "--" + name.replace("_", "-")
        tls.add_argument(flag, "--" + name, default=os.environ.get(env), help=f"{help_text} [env {env}]")


def open_client(args: argparse.Namespace, timeout: float | None) -> ChatClient:
    """The client the target arguments describe (CertificateError for an unusable TLS file)."""
    return ChatClient(
        args.target,
        token=args.token,
        timeout=timeout,
        tls=args.tls,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def register(subparsers: Any) -> None:
    chat = subparsers.add_parser("chat", help="ask a question; the answer streams to stdout")
    chat.add_argument("prompt", help="the question ('-' reads it from stdin)")
    chat.add_argument("--system", default="", help="system prompt")
    chat.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=None)
    chat.add_argument("--temperature", type=float, default=None)
    chat.add_argument("--top-k", "--top_k", type=int, default=None)
    chat.add_argument("--top-p", "--top_p", type=float, default=None)
    chat.add_argument("--kb", default=None, help="answer from this knowledge base")
    chat.add_argument("--sources", action="store_true", help="print the knowledge-base sources after the answer")
    chat.add_argument("--stats", action="store_true", help="print usage and timings to stderr")
    chat.add_argument(
        "--priority", choices=("interactive", "default", "bulk"), help="priority class (within the token's ceiling)"
    )
    add_target_arguments(chat)
    chat.set_defaults(handler=run_chat)

    models = subparsers.add_parser("models", help="the model catalogue (and the served model with --target)")
    models.add_argument("--served", action="store_true", help="also ask the server which model it serves")
    add_target_arguments(models)
    models.set_defaults(handler=run_models)

    info = subparsers.add_parser("info", help="server load, uptime, model, KV cache and prefix-cache hits")
    add_target_arguments(info)
    info.set_defaults(handler=run_info)


def fail(exc: grpc.RpcError) -> int:
    code = exc.code().name if hasattr(exc, "code") else "ERROR"
    details = exc.details() if hasattr(exc, "details") else str(exc)
    print(f"chatllm: {code}: {details}", file=sys.stderr)
    return 1


def run_chat(args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    sampling = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
    }
    with open_client(args, args.timeout) as client:
        call = client.stream(
            prompt,
            system_prompt=args.system,
            knowledge_base=args.kb,
            channel="cli",
            priority=args.priority,
            **sampling,
        )
        final = None
        try:
            for response in call:
                sys.stdout.write(response.text)
                sys.stdout.flush()
                if response.HasField("final"):
                    final = response.final
        except grpc.RpcError as exc:
            print(file=sys.stdout)
            return fail(exc)
        except KeyboardInterrupt:
            call.cancel()
            print(file=sys.stdout)
            return 130
    print()
    if final is not None and args.sources:
        for s in final.sources:
            print(f"[{s.file} #{s.chunk} score={s.score:.3f}] {s.text[:200]}")
    if final is not None and args.stats:
        t = final.timings
        print(
            f"tokens: prompt={final.usage.prompt_tokens} completion={final.usage.completion_tokens} "
            f"ttft={t.time_to_first_token_seconds:.3f}s total={t.total_seconds:.3f}s",
            file=sys.stderr,
        )
    return 0


def run_models(args: argparse.Namespace) -> int:
    from chatllm.server.catalog import entries

    if args.served:
        with open_client(args, args.timeout or 10) as client:
            try:
                for m in client.models().models:
                    print(f"served: {m.id} ({m.backend} on {m.device}/{m.dtype}, context {m.context_length})")
            except grpc.RpcError as exc:
                return fail(exc)
    rows = [("NAME", "MODEL PATH", "TYPE", "EAS ACCELERATED", "RECOMMENDED HARDWARE")]
    rows += [
        (e.name, e.model_path, e.model_type or "-", "yes" if e.seed_accelerated else "no", e.recommended_hardware)
        for e in entries()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    return 0


def run_info(args: argparse.Namespace) -> int:
    with open_client(args, args.timeout or 10) as client:
        try:
            info = client.server_info()
        except grpc.RpcError as exc:
            return fail(exc)
    print(f"version {info.version}, up {info.uptime_seconds:.0f}s, draining={info.draining}")
    print(
        f"model {info.model.id} via {info.model.backend} on {info.model.device}/{info.model.dtype}, "
        f"context {info.model.context_length}"
    )
    print(
        f"requests: {info.active_requests} active, {info.waiting_requests} waiting "
        f"(limits {info.max_concurrent}/{info.max_queue})"
    )
    capacity = f" of {info.kv_cache_tokens} tokens" if info.kv_cache_tokens else ""
    print(f"KV cache: {info.kv_cache_usage:.0%} in use{capacity}")
    hit_rate = f" ({info.cached_prompt_tokens / info.prompt_tokens:.1%})" if info.prompt_tokens else ""
    print(
        f"prefix cache: {info.cached_prompt_tokens} of {info.prompt_tokens} prompt tokens served from it"
        f"{hit_rate} since start"
    )
    return 0
