//! One mapping from a span — name, ids, times, status, attributes, events,
//! resource — to a [`TraceRecord`], shared by the `tracing` layer and the
//! OTLP collector. It classifies the record's [`Kind`] from well-known
//! attribute conventions and resolves the session id. The whole table is in
//! docs/MAPPING.md; each row has a unit test below.

use crate::chain::MAX_SESSION_LEN;
use crate::record::{Attributes, Event, Kind, Status, TraceRecord, Value, GAP_SESSION};

/// `audit.kind`: an explicit kind (`llm_call`, `tool_call`, `policy_check`, `agent`, `human`, `data_access`, `span`).
pub const AUDIT_KIND: &str = "audit.kind";
/// `audit.session_id`: an explicit session id.
pub const AUDIT_SESSION_ID: &str = "audit.session_id";
/// OpenTelemetry GenAI operation name.
pub const GEN_AI_OPERATION: &str = "gen_ai.operation.name";
/// OpenTelemetry GenAI conversation id.
pub const GEN_AI_CONVERSATION_ID: &str = "gen_ai.conversation.id";
/// OpenInference span kind.
pub const OPENINFERENCE_KIND: &str = "openinference.span.kind";
/// OpenInference (and generic) session id.
pub const SESSION_ID: &str = "session.id";
/// OpenLLMetry span kind.
pub const TRACELOOP_KIND: &str = "traceloop.span.kind";
/// OpenLLMetry session id.
pub const TRACELOOP_SESSION_ID: &str = "traceloop.association.properties.session_id";
/// Langfuse observation type.
pub const LANGFUSE_TYPE: &str = "langfuse.observation.type";
/// Langfuse session id.
pub const LANGFUSE_SESSION_ID: &str = "langfuse.session.id";
/// Policy decision (`allow`, `deny`, `error`).
pub const POLICY_DECISION: &str = "policy.decision";
/// Policy name.
pub const POLICY_NAME: &str = "policy.name";
/// Policy reason.
pub const POLICY_REASON: &str = "policy.reason";
/// The attribute holding a span's links (OTLP links; `Span::follows_from`
/// in the layer): an array of maps with `trace_id` and `span_id` in hex.
pub const OTEL_LINKS: &str = "otel.links";

/// Attribute name prefixes that make a span part of the audit trail by default.
pub const CAPTURE_PREFIXES: &[&str] = &[
    "gen_ai.",
    "audit.",
    "openinference.",
    "traceloop.",
    "langfuse.",
];

/// The session keys tried, in order, by default.
pub const DEFAULT_SESSION_KEYS: &[&str] = &[
    AUDIT_SESSION_ID,
    GEN_AI_CONVERSATION_ID,
    SESSION_ID,
    TRACELOOP_SESSION_ID,
    LANGFUSE_SESSION_ID,
];

/// Whether an attribute name marks a span for capture by default.
pub fn is_capture_key(name: &str) -> bool {
    CAPTURE_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn str_attr<'a>(a: &'a Attributes, key: &str) -> Option<&'a str> {
    match a.get(key)? {
        Value::Str(s) => Some(s.as_str()),
        _ => None,
    }
}

/// The kind of a span with these attributes (docs/MAPPING.md).
pub fn classify(a: &Attributes) -> Kind {
    if let Some(k) = str_attr(a, AUDIT_KIND).and_then(kind_from_name) {
        return k;
    }
    if let Some(op) = str_attr(a, GEN_AI_OPERATION) {
        match op {
            "chat" | "text_completion" | "generate_content" | "embeddings" => return Kind::LlmCall,
            "execute_tool" => return Kind::ToolCall,
            "invoke_agent" | "create_agent" | "invoke_workflow" | "plan" => return Kind::Agent,
            "apply_guardrail" => return Kind::PolicyCheck,
            _ => {}
        }
    }
    if let Some(k) = str_attr(a, OPENINFERENCE_KIND) {
        match k.to_ascii_uppercase().as_str() {
            "LLM" | "EMBEDDING" => return Kind::LlmCall,
            "TOOL" => return Kind::ToolCall,
            "AGENT" | "CHAIN" => return Kind::Agent,
            "GUARDRAIL" => return Kind::PolicyCheck,
            "RETRIEVER" | "RERANKER" => return Kind::DataAccess,
            _ => {}
        }
    }
    if let Some(k) = str_attr(a, TRACELOOP_KIND) {
        match k {
            "workflow" | "task" | "agent" => return Kind::Agent,
            "tool" => return Kind::ToolCall,
            _ => {}
        }
    }
    if let Some(k) = str_attr(a, LANGFUSE_TYPE) {
        match k.to_ascii_lowercase().as_str() {
            "generation" | "embedding" => return Kind::LlmCall,
            "tool" => return Kind::ToolCall,
            "agent" | "chain" => return Kind::Agent,
            "guardrail" => return Kind::PolicyCheck,
            "retriever" => return Kind::DataAccess,
            _ => {}
        }
    }
    if a.get(POLICY_DECISION).is_some() {
        return Kind::PolicyCheck;
    }
    // OpenLLMetry LLM spans, and GenAI attributes from before the operation name.
    let llm_hints = [
        "llm.request.type",
        "gen_ai.system",
        "gen_ai.request.model",
        "gen_ai.usage.prompt_tokens",
        "gen_ai.usage.input_tokens",
        "gen_ai.prompt",
        "gen_ai.completion",
    ];
    if llm_hints.iter().any(|k| a.get(k).is_some()) {
        return Kind::LlmCall;
    }
    Kind::Span
}

fn kind_from_name(s: &str) -> Option<Kind> {
    Some(match s {
        "llm_call" => Kind::LlmCall,
        "tool_call" => Kind::ToolCall,
        "policy_check" => Kind::PolicyCheck,
        "agent" => Kind::Agent,
        "human" => Kind::Human,
        "data_access" => Kind::DataAccess,
        "span" => Kind::Span,
        _ => return None,
    })
}

/// The session id carried by these attributes under the first of `keys` present.
pub fn session_of(a: &Attributes, keys: &[impl AsRef<str>]) -> Option<String> {
    session_from(|k| a.get(k), keys)
}

/// [`session_of`] over any attribute lookup.
pub fn session_from<'a>(
    lookup: impl Fn(&str) -> Option<&'a Value>,
    keys: &[impl AsRef<str>],
) -> Option<String> {
    keys.iter().find_map(|k| match lookup(k.as_ref())? {
        Value::Str(s) if !s.is_empty() => Some(storable_session(s.clone())),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    })
}

/// The session a user names (`verify --session`, `show --session`) as the
/// archive holds it: an id over [`MAX_SESSION_LEN`] bytes by its digest
/// (see [`storable_session`]); any other as it is.
pub fn named_session(id: &str) -> String {
    if id.len() > MAX_SESSION_LEN {
        storable_session(id.to_owned())
    } else {
        id.to_owned()
    }
}

/// A session id as the archive holds it: the id itself, unless it is
/// longer than [`MAX_SESSION_LEN`] bytes or is the reserved
/// [`GAP_SESSION`]; then `sha256:` and the hex SHA-256 of the id (the
/// record's attribute still holds the id itself). So no span is refused for
/// its session id, and no span can pose as a statement of loss.
pub fn storable_session(id: String) -> String {
    if id.len() > MAX_SESSION_LEN || id == GAP_SESSION {
        format!(
            "sha256:{}",
            crate::digest::Digest::sha256(id.as_bytes()).to_hex()
        )
    } else {
        id
    }
}

/// A span as the layer or a receiver saw it.
#[derive(Clone, Debug, Default)]
pub struct SpanData {
    /// Span name.
    pub name: String,
    /// Trace id, hex.
    pub trace_id: Option<String>,
    /// Span id, hex.
    pub span_id: Option<String>,
    /// Parent span id, hex.
    pub parent_span_id: Option<String>,
    /// Start, unix ns.
    pub start_ns: u64,
    /// End, unix ns.
    pub end_ns: u64,
    /// Outcome.
    pub status: Status,
    /// Attributes.
    pub attributes: Attributes,
    /// Events.
    pub events: Vec<Event>,
    /// Resource attributes.
    pub resource: Attributes,
}

/// Turns a span into a record of `session` (chain fields are set later by the chain).
pub fn to_record(span: SpanData, session: String, source: &str, received_ns: u64) -> TraceRecord {
    let kind = classify(&span.attributes);
    let mut r = TraceRecord::new(session, kind, span.name);
    r.attributes = span.attributes;
    r.events = span.events;
    r.resource = span.resource;
    r.trace_id = span.trace_id;
    r.span_id = span.span_id;
    r.parent_span_id = span.parent_span_id;
    r.start_ns = span.start_ns;
    r.end_ns = span.end_ns;
    r.status = span.status;
    r.source = source.to_owned();
    r.received_ns = received_ns;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(kv: &[(&str, &str)]) -> Kind {
        classify(&kv.iter().map(|(k, v)| (*k, Value::from(*v))).collect())
    }

    // One test per row of docs/MAPPING.md.
    #[test]
    fn audit_kind_wins() {
        assert_eq!(
            kind_of(&[("audit.kind", "human"), ("gen_ai.operation.name", "chat")]),
            Kind::Human
        );
        assert_eq!(kind_of(&[("audit.kind", "data_access")]), Kind::DataAccess);
        assert_eq!(
            kind_of(&[("audit.kind", "policy_check")]),
            Kind::PolicyCheck
        );
        assert_eq!(kind_of(&[("audit.kind", "nonsense")]), Kind::Span);
    }
    #[test]
    fn genai_llm_operations() {
        for op in ["chat", "text_completion", "generate_content", "embeddings"] {
            assert_eq!(
                kind_of(&[("gen_ai.operation.name", op)]),
                Kind::LlmCall,
                "{op}"
            );
        }
    }
    #[test]
    fn genai_execute_tool() {
        assert_eq!(
            kind_of(&[("gen_ai.operation.name", "execute_tool")]),
            Kind::ToolCall
        );
    }
    #[test]
    fn genai_agent_operations() {
        for op in ["invoke_agent", "create_agent", "invoke_workflow", "plan"] {
            assert_eq!(
                kind_of(&[("gen_ai.operation.name", op)]),
                Kind::Agent,
                "{op}"
            );
        }
    }
    #[test]
    fn genai_apply_guardrail() {
        assert_eq!(
            kind_of(&[("gen_ai.operation.name", "apply_guardrail")]),
            Kind::PolicyCheck
        );
    }
    #[test]
    fn genai_deprecated_names() {
        for k in [
            "gen_ai.system",
            "gen_ai.usage.prompt_tokens",
            "gen_ai.prompt",
            "gen_ai.completion",
        ] {
            assert_eq!(kind_of(&[(k, "x")]), Kind::LlmCall, "{k}");
        }
    }
    #[test]
    fn openinference_kinds() {
        for (v, k) in [
            ("LLM", Kind::LlmCall),
            ("EMBEDDING", Kind::LlmCall),
            ("TOOL", Kind::ToolCall),
            ("AGENT", Kind::Agent),
            ("CHAIN", Kind::Agent),
            ("GUARDRAIL", Kind::PolicyCheck),
            ("RETRIEVER", Kind::DataAccess),
        ] {
            assert_eq!(kind_of(&[("openinference.span.kind", v)]), k, "{v}");
        }
    }
    #[test]
    fn openllmetry_kinds() {
        for (v, k) in [
            ("workflow", Kind::Agent),
            ("task", Kind::Agent),
            ("agent", Kind::Agent),
            ("tool", Kind::ToolCall),
        ] {
            assert_eq!(kind_of(&[("traceloop.span.kind", v)]), k, "{v}");
        }
        assert_eq!(kind_of(&[("llm.request.type", "chat")]), Kind::LlmCall);
    }
    #[test]
    fn langfuse_types() {
        for (v, k) in [
            ("generation", Kind::LlmCall),
            ("embedding", Kind::LlmCall),
            ("tool", Kind::ToolCall),
            ("agent", Kind::Agent),
            ("chain", Kind::Agent),
            ("guardrail", Kind::PolicyCheck),
            ("retriever", Kind::DataAccess),
        ] {
            assert_eq!(kind_of(&[("langfuse.observation.type", v)]), k, "{v}");
        }
    }
    #[test]
    fn policy_fields() {
        assert_eq!(
            kind_of(&[
                ("policy.name", "payments"),
                ("policy.decision", "deny"),
                ("policy.reason", "limit")
            ]),
            Kind::PolicyCheck
        );
    }
    #[test]
    fn anything_else_is_a_span() {
        assert_eq!(kind_of(&[("http.method", "GET")]), Kind::Span);
    }
    #[test]
    fn over_long_and_reserved_session_ids_are_stored_as_their_digest() {
        let long = "x".repeat(MAX_SESSION_LEN + 1);
        for id in [long.as_str(), GAP_SESSION] {
            let a: Attributes = [(AUDIT_SESSION_ID, Value::from(id))].into_iter().collect();
            let s = session_of(&a, DEFAULT_SESSION_KEYS).unwrap();
            assert_eq!(
                s,
                format!(
                    "sha256:{}",
                    crate::digest::Digest::sha256(id.as_bytes()).to_hex()
                )
            );
        }
        let at_limit = "y".repeat(MAX_SESSION_LEN);
        assert_eq!(storable_session(at_limit.clone()), at_limit);
        // What a user names on the command line: the long id by its digest,
        // the gap session as it is (to read the statements of loss).
        assert_eq!(named_session(&long), storable_session(long.clone()));
        assert_eq!(named_session(GAP_SESSION), GAP_SESSION);
    }

    #[test]
    fn session_keys_in_order() {
        let a: Attributes = [
            ("session.id", Value::from("oi")),
            ("gen_ai.conversation.id", Value::from("conv")),
            ("langfuse.session.id", Value::from("lf")),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            session_of(&a, DEFAULT_SESSION_KEYS).as_deref(),
            Some("conv")
        );
        assert_eq!(
            session_of(&a, &["langfuse.session.id"]).as_deref(),
            Some("lf")
        );
        for key in DEFAULT_SESSION_KEYS {
            let one: Attributes = [(*key, Value::from("s"))].into_iter().collect();
            assert_eq!(
                session_of(&one, DEFAULT_SESSION_KEYS).as_deref(),
                Some("s"),
                "{key}"
            );
        }
        let int: Attributes = [("audit.session_id", Value::Int(42))].into_iter().collect();
        assert_eq!(
            session_of(&int, DEFAULT_SESSION_KEYS).as_deref(),
            Some("42")
        );
        let empty: Attributes = [("session.id", Value::from(""))].into_iter().collect();
        assert_eq!(session_of(&empty, DEFAULT_SESSION_KEYS), None);
    }
    #[test]
    fn capture_prefixes() {
        assert!(is_capture_key("gen_ai.request.model") && is_capture_key("audit.kind"));
        assert!(is_capture_key("langfuse.session.id") && is_capture_key("openinference.span.kind"));
        assert!(!is_capture_key("http.method") && !is_capture_key("gen_aix"));
    }
}
