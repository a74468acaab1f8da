"""Python agents that send OTLP to `sealtrail serve`, for collector/tests/python.rs.

Each scenario runs one agent turn against a local fake OpenAI-compatible
server (scripted: first a tool call, then an answer) and exports its spans
with a real OpenTelemetry SDK exporter. Usage:

    otlp_agent.py SCENARIO --grpc HOST:PORT --http HOST:PORT --session ID

Scenarios: sdk-grpc, sdk-http (opentelemetry-sdk alone), genai-openai (the
OpenTelemetry GenAI instrumentation of the openai client), openinference
(OpenInference's openai instrumentation), agents (the openai-agents SDK with
a function tool and an input guardrail, via OpenInference).
"""

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


class FakeOpenAI(BaseHTTPRequestHandler):
    """Chat completions: a tool call until the conversation holds a tool result, then an answer."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if not self.path.endswith("/chat/completions"):
            self.send_error(404, f"the fake serves /v1/chat/completions only, not {self.path}")
            return
        has_tool_result = any(m.get("role") == "tool" for m in body.get("messages", []))
        tools = body.get("tools") or []
        if tools and not has_tool_result:
            name = tools[0]["function"]["name"]
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps({"order_id": "A-17"})},
                }],
            }
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": "Order A-17 ships tomorrow."}
            finish = "stop"
        out = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": body.get("model", "gpt-4o"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
        }
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def fake_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/v1"


def provider(args, service):
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    if args.scenario == "sdk-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        exporter = OTLPSpanExporter(endpoint=f"http://{args.grpc}", insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        exporter = OTLPSpanExporter(endpoint=f"http://{args.http}/v1/traces")
    tp.add_span_processor(BatchSpanProcessor(exporter))
    return tp


TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Look up an order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
}


def sdk_only(tracer, session):
    """The spans a hand-instrumented agent emits, GenAI conventions."""
    with tracer.start_as_current_span("invoke_agent support-bot") as agent:
        agent.set_attribute("gen_ai.operation.name", "invoke_agent")
        agent.set_attribute("gen_ai.conversation.id", session)
        with tracer.start_as_current_span("chat gpt-4o") as s:
            s.set_attribute("gen_ai.operation.name", "chat")
            s.set_attribute("gen_ai.request.model", "gpt-4o")
            s.set_attribute("gen_ai.usage.input_tokens", 42)
        with tracer.start_as_current_span("execute_tool lookup_order") as s:
            s.set_attribute("gen_ai.operation.name", "execute_tool")
            s.set_attribute("gen_ai.tool.name", "lookup_order")
        with tracer.start_as_current_span("apply_guardrail refund-limit") as s:
            s.set_attribute("gen_ai.operation.name", "apply_guardrail")
            s.set_attribute("policy.decision", "allow")


def openai_turn(tracer, base_url, session, tool_span, guard_span):
    """One turn with the openai client: tool call, tool, answer; the app's own spans around it."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="test-key")
    messages = [{"role": "user", "content": "Where is order A-17?"}]
    with tracer.start_as_current_span("invoke_agent support-bot") as agent:
        agent.set_attribute("gen_ai.operation.name", "invoke_agent")
        agent.set_attribute("gen_ai.conversation.id", session)
        with guard_span("input-pii"):
            pass
        first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[TOOL])
        call = first.choices[0].message.tool_calls[0]
        with tool_span(call.function.name):
            result = {"order_id": "A-17", "status": "ships tomorrow"}
        messages.append(first.choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
        client.chat.completions.create(model="gpt-4o", messages=messages, tools=[TOOL])


def genai_openai(args, tp, base_url):
    import os

    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    # Message content goes on the spans and, as log events, to /v1/logs.
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
    os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "SPAN_AND_EVENT"
    from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor

    lp = LoggerProvider(resource=tp.resource)
    lp.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"http://{args.http}/v1/logs")))
    OpenAIInstrumentor().instrument(tracer_provider=tp, logger_provider=lp)
    tracer = tp.get_tracer("support-bot")

    class span:
        def __init__(self, name, op, **attrs):
            self.cm = tracer.start_as_current_span(f"{op} {name}")
            self.op, self.attrs = op, attrs

        def __enter__(self):
            s = self.cm.__enter__()
            s.set_attribute("gen_ai.operation.name", self.op)
            for k, v in self.attrs.items():
                s.set_attribute(k, v)

        def __exit__(self, *e):
            return self.cm.__exit__(*e)

    openai_turn(
        tracer,
        base_url,
        args.session,
        lambda name: span(name, "execute_tool", **{"gen_ai.tool.name": name}),
        lambda name: span(name, "apply_guardrail", **{"policy.decision": "allow"}),
    )
    if not lp.force_flush(30_000):
        raise SystemExit("the log exporter did not flush")
    lp.shutdown()


def openinference(args, tp, base_url):
    from openinference.instrumentation import using_session
    from openinference.instrumentation.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=tp)
    tracer = tp.get_tracer("support-bot")

    class span:
        def __init__(self, name, kind):
            self.cm = tracer.start_as_current_span(name)
            self.kind = kind

        def __enter__(self):
            s = self.cm.__enter__()
            s.set_attribute("openinference.span.kind", self.kind)
            s.set_attribute("session.id", args.session)

        def __exit__(self, *e):
            return self.cm.__exit__(*e)

    with using_session(args.session):
        # OpenInference names the session on every span it makes (session.id);
        # the app's own tool and guardrail spans name it too.
        openai_turn(
            tracer,
            base_url,
            args.session,
            lambda name: span(name, "TOOL"),
            lambda name: span(name, "GUARDRAIL"),
        )


def agents(args, tp, base_url):
    import asyncio

    import openai
    from agents import (
        Agent,
        GuardrailFunctionOutput,
        OpenAIChatCompletionsModel,
        RunConfig,
        Runner,
        function_tool,
        input_guardrail,
        set_tracing_disabled,
    )
    from openinference.instrumentation import using_session
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

    OpenAIAgentsInstrumentor().instrument(tracer_provider=tp)
    set_tracing_disabled(False)

    @function_tool
    def lookup_order(order_id: str) -> str:
        """Look up an order."""
        return json.dumps({"order_id": order_id, "status": "ships tomorrow"})

    @input_guardrail
    def no_card_numbers(ctx, agent, text):
        return GuardrailFunctionOutput(
            output_info={"checked": "card numbers"},
            tripwire_triggered="4111" in str(text),
        )

    client = openai.AsyncOpenAI(base_url=base_url, api_key="test-key")
    agent = Agent(
        name="support-bot",
        instructions="Answer questions about orders.",
        model=OpenAIChatCompletionsModel(model="gpt-4o", openai_client=client),
        tools=[lookup_order],
        input_guardrails=[no_card_numbers],
    )

    async def run():
        with using_session(args.session):
            result = await Runner.run(
                agent,
                "Where is order A-17?",
                run_config=RunConfig(tracing_disabled=False, workflow_name="support"),
            )
        assert "tomorrow" in result.final_output, result.final_output

    asyncio.run(run())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["sdk-grpc", "sdk-http", "genai-openai", "openinference", "agents"])
    p.add_argument("--grpc", required=True)
    p.add_argument("--http", required=True)
    p.add_argument("--session", required=True)
    args = p.parse_args()
    tp = provider(args, f"py-{args.scenario}")
    srv, base_url = fake_server()
    try:
        if args.scenario in ("sdk-grpc", "sdk-http"):
            sdk_only(tp.get_tracer("support-bot"), args.session)
        elif args.scenario == "genai-openai":
            genai_openai(args, tp, base_url)
        elif args.scenario == "openinference":
            openinference(args, tp, base_url)
        else:
            agents(args, tp, base_url)
    finally:
        # Exports everything; raises nothing, so check the exporter's logs on failure.
        ok = tp.force_flush(30_000)
        tp.shutdown()
        srv.shutdown()
    if not ok:
        raise SystemExit("the span exporter did not flush")


if __name__ == "__main__":
    main()
