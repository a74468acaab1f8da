"""A Python agent whose spans go to `sealtrail serve` over OTLP.

    sealtrail keygen --out audit.key && sealtrail serve --signing-key audit.key &
    python examples/otlp_agent.py            # needs opentelemetry-sdk and
                                             # opentelemetry-exporter-otlp-proto-http
    sleep 1; sealtrail show --session conv-example   # the turn, once sealed
    sealtrail verify --public-key audit.key.pub

Only the `invoke_agent` span names the conversation: the collector puts the
spans inside it, exported before it, in its session (docs/COLLECTOR.md).
Real agents get these spans from their instrumentation (the OpenTelemetry
GenAI instrumentation of the openai client, OpenInference, ...);
tests/python/otlp_agent.py runs those against a fake OpenAI server.
"""

import os

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
provider = TracerProvider(resource=Resource.create({"service.name": "claims-agent"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
tracer = provider.get_tracer("claims-agent")

with tracer.start_as_current_span("invoke_agent claims-agent") as agent:
    agent.set_attribute("gen_ai.operation.name", "invoke_agent")
    agent.set_attribute("gen_ai.conversation.id", "conv-example")
    with tracer.start_as_current_span("chat gpt-4o") as chat:
        chat.set_attribute("gen_ai.operation.name", "chat")
        chat.set_attribute("gen_ai.request.model", "gpt-4o")
        chat.set_attribute("gen_ai.usage.input_tokens", 812)
        chat.set_attribute("gen_ai.usage.output_tokens", 64)
    with tracer.start_as_current_span("apply_guardrail payout-limit") as guard:
        guard.set_attribute("gen_ai.operation.name", "apply_guardrail")
        guard.set_attribute("policy.name", "payout-limit")
        guard.set_attribute("policy.decision", "allow")
    with tracer.start_as_current_span("execute_tool approve_payment") as tool:
        tool.set_attribute("gen_ai.operation.name", "execute_tool")
        tool.set_attribute("gen_ai.tool.name", "approve_payment")
        tool.set_attribute("gen_ai.tool.call.arguments", '{"claim": "C-17", "amount": 1250}')

# Exports everything before exiting; the collector answers once it is durable.
provider.shutdown()
