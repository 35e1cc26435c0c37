"""The official OpenAI Python SDK against a mantissa gateway.

Run by tests/sdk.rs: `python sdk_client.py BASE_URL KEY_BOTH KEY_BETA_ONLY`.
Prints one JSON object: every call's result, which the Rust test asserts on.
"""

import json
import sys

import openai
from openai import OpenAI

base_url, key_both, key_beta = sys.argv[1], sys.argv[2], sys.argv[3]
results = []


def plain(client, agent, model, extra_headers=None, **kwargs):
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "hello from %s" % agent}],
        extra_headers=extra_headers,
        **kwargs,
    )
    completion = raw.parse()
    choice = completion.choices[0]
    results.append(
        {
            "case": "plain",
            "agent": agent,
            "requested": model,
            "model": completion.model,
            "tier": raw.headers.get("x-mantissa-tier"),
            "header_model": raw.headers.get("x-mantissa-model"),
            "reset": raw.headers.get("x-mantissa-reset"),
            "content": choice.message.content,
            "finish_reason": choice.finish_reason,
            "tool_calls": [
                {"id": c.id, "name": c.function.name, "arguments": json.loads(c.function.arguments)}
                for c in (choice.message.tool_calls or [])
            ],
            "total_tokens": completion.usage.total_tokens,
        }
    )


def streamed(client, agent, model, extra_headers=None):
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "stream to %s" % agent}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=extra_headers,
    )
    stream = raw.parse()
    text, finish, usage, chunks = "", None, None, 0
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage.total_tokens
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    results.append(
        {
            "case": "streamed",
            "agent": agent,
            "requested": model,
            "tier": raw.headers.get("x-mantissa-tier"),
            "header_model": raw.headers.get("x-mantissa-model"),
            "content": text,
            "finish_reason": finish,
            "total_tokens": usage,
            "chunks": chunks,
        }
    )


def error(case, call):
    try:
        call()
        results.append({"case": case, "status": None})
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        results.append(
            {
                "case": case,
                "status": e.status_code,
                "exception": type(e).__name__,
                "code": body.get("code"),
                "param": body.get("param"),
                "type": body.get("type"),
            }
        )


# Agent alpha: the key's default agent, and a default header.
alpha = OpenAI(base_url=base_url, api_key=key_both, max_retries=0,
               default_headers={"x-mantissa-agent": "sdk-alpha"})
# Agent beta: named per call with extra_headers.
beta_headers = {"x-mantissa-agent": "sdk-beta"}
both = OpenAI(base_url=base_url, api_key=key_both, max_retries=0)

for model in ("auto", "high", "gw-medium"):
    plain(alpha, "sdk-alpha", model)
    plain(both, "sdk-beta", model, extra_headers=beta_headers)
for model in ("auto", "medium", "gw-large"):
    streamed(alpha, "sdk-alpha", model)
    streamed(both, "sdk-beta", model, extra_headers=beta_headers)

# Tools: the model asks for a call.
plain(
    alpha,
    "sdk-alpha",
    "auto",
    tools=[{"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    tool_choice="auto",
)
results[-1]["case"] = "tools"

models = [m.id for m in alpha.models.list()]
results.append({"case": "models", "ids": models})

error("unknown_model", lambda: alpha.chat.completions.create(
    model="gpt-nope", messages=[{"role": "user", "content": "hi"}]))
error("bad_request", lambda: alpha.chat.completions.create(model="auto", messages=[]))
error("bad_key", lambda: OpenAI(base_url=base_url, api_key="mk-not-a-key", max_retries=0)
      .chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}]))
error("agent_not_allowed", lambda: OpenAI(base_url=base_url, api_key=key_beta, max_retries=0)
      .chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}],
                               extra_headers={"x-mantissa-agent": "sdk-alpha"}))

print(json.dumps({"openai_version": openai.__version__, "results": results}))
