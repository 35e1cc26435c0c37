//! [rig](https://docs.rs/rig-core) agents with mantissa in front (feature
//! `rig`, rig-core 0.40).
//!
//! [`MantissaModel`] implements rig's `CompletionModel` (plain and
//! streaming) over an [`AgentStack`] LLM service, so a
//! `rig::agent::Agent` built on it sends every call through reset, triage,
//! the tier router and the per-model health layers. [`MeasuredTool`] wraps a
//! rig `Tool` so its calls are measured like the stack's own tools.
//!
//! # Identity
//!
//! - **Agent name:** the one given to [`MantissaModel::new`] — use the
//!   service of the same agent, `stack.llm(name)`. rig's own agent name is
//!   not passed to a completion model, so it cannot be read from there.
//! - **Session:** [`MantissaModel::session`] sets the session of every call
//!   (build one rig agent per conversation: a rig `Agent` is a cheap value);
//!   a call whose `additional_params` hold `"mantissa_session": "<id>"`
//!   overrides it (the key is removed before the call goes upstream).
//!   Defaults to a session named after the agent.
//!
//! # What is carried
//!
//! The preamble and system messages, user text, assistant text and tool
//! calls, tool results (as text), tool definitions, temperature, max
//! tokens, tool choice, the output schema (as `response_format`) and
//! additional params (verbatim). Documents are sent as one system message
//! after the preamble. Images, audio, video and documents inside messages
//! are errors; assistant reasoning blocks are not sent back (chat
//! completions take none).
//!
//! ```no_run
//! use mantissa::AgentStack;
//! use mantissa::adapters::rig::MantissaModel;
//! use rig_core::agent::AgentBuilder;
//! use rig_core::completion::Prompt;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let stack = AgentStack::demo().build()?; // or AgentStack::builder(upstream) for a provider
//! let model = MantissaModel::new(stack.llm("trader"), "trader").session("session-1");
//! let agent = AgentBuilder::new(model).preamble("You are a trader.").build();
//! let answer = agent.prompt("Should we buy ACME?").await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;

use ::rig_core::OneOrMany;
use ::rig_core::completion::message::{AssistantContent, ToolResultContent, UserContent};
use ::rig_core::completion::{
    self as rc, CompletionError, CompletionRequest, CompletionResponse, GetTokenUsage, ToolDefinition,
};
use ::rig_core::message::ToolChoice;
use ::rig_core::streaming::{RawStreamingChoice, RawStreamingToolCall, StreamingCompletionResponse};
use ::rig_core::tool::Tool;
use futures_util::{StreamExt, stream};
use mantissa_core::{
    AgentName, BoxError, FailureClass, FunctionCall, LlmError, LlmRequest, LlmResponse, Message, ModelId,
    SessionId, StreamAssembler, ToolCall, ToolRequest, ToolResponse, ToolSpec, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tower::{Layer, ServiceExt};

use crate::{AgentStack, HealthLayer, LlmService};

/// The `additional_params` key that sets the session of one call.
pub const SESSION_PARAM: &str = "mantissa_session";

/// A rig `CompletionModel` over a mantissa LLM service (see the
/// [module docs](self)).
#[derive(Clone)]
pub struct MantissaModel {
    service: LlmService,
    agent: AgentName,
    session: SessionId,
    model: Option<ModelId>,
}

impl fmt::Debug for MantissaModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MantissaModel")
            .field("agent", &self.agent)
            .field("session", &self.session)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl MantissaModel {
    /// A model whose calls are `agent`'s, sent through `service`
    /// (`stack.llm(agent)` for an [`AgentStack`]).
    pub fn new(service: LlmService, agent: impl Into<AgentName>) -> Self {
        let agent = agent.into();
        Self {
            service,
            session: SessionId::from(agent.as_str()),
            agent,
            model: None,
        }
    }

    /// The session of every call (unless a call's `additional_params`
    /// name another, see [`SESSION_PARAM`]). Defaults to the agent's name.
    pub fn session(mut self, session: impl Into<SessionId>) -> Self {
        self.session = session.into();
        self
    }

    /// Pins every call to `model` (skipping triage's choice of tier).
    /// Defaults to none: triage and the router pick the model.
    pub fn model(mut self, model: impl Into<ModelId>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// The agent whose calls these are.
    pub fn agent(&self) -> &AgentName {
        &self.agent
    }

    fn to_request(&self, req: CompletionRequest) -> Result<LlmRequest, CompletionError> {
        let mut messages = Vec::new();
        if let Some(p) = req.preamble {
            messages.push(Message::system(p));
        }
        if !req.documents.is_empty() {
            let docs: Vec<String> = req
                .documents
                .iter()
                .map(|d| format!("<document id=\"{}\">\n{}\n</document>", d.id, d.text))
                .collect();
            messages.push(Message::system(docs.join("\n")));
        }
        for m in req.chat_history.iter() {
            push_message(&mut messages, m)?;
        }
        let mut extra = match req.additional_params {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(request_error(format!(
                    "additional_params must be a JSON object, got {other}"
                )));
            }
        };
        let session = match extra.remove(SESSION_PARAM) {
            Some(Value::String(s)) => SessionId::from(s.as_str()),
            Some(other) => {
                return Err(request_error(format!(
                    "{SESSION_PARAM} must be a string, got {other}"
                )));
            }
            None => self.session.clone(),
        };
        let mut out = LlmRequest::new(session, self.agent.clone(), messages);
        out.model = req.model.map(ModelId::from).or_else(|| self.model.clone());
        out.tools = req.tools.into_iter().map(tool_spec).collect();
        out.params.temperature = req.temperature.map(|t| t as f32);
        out.params.max_tokens = req.max_tokens.map(|t| u32::try_from(t).unwrap_or(u32::MAX));
        if let Some(choice) = req.tool_choice {
            extra.insert("tool_choice".into(), tool_choice(choice)?);
        }
        if let Some(schema) = req.output_schema {
            extra.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {
                    "name": "response_schema", "schema": schema, "strict": true}}),
            );
        }
        out.params.extra = extra;
        Ok(out)
    }
}

fn request_error(message: String) -> CompletionError {
    CompletionError::RequestError(message.into())
}

fn push_message(out: &mut Vec<Message>, m: &rc::Message) -> Result<(), CompletionError> {
    match m {
        rc::Message::System { content } => out.push(Message::system(content.clone())),
        rc::Message::User { content } => {
            let mut text: Option<String> = None;
            for item in content.iter() {
                match item {
                    UserContent::Text(t) => text.get_or_insert_with(String::new).push_str(&t.text),
                    UserContent::ToolResult(r) => {
                        let mut result = String::new();
                        for c in r.content.iter() {
                            match c {
                                ToolResultContent::Text(t) => result.push_str(&t.text),
                                ToolResultContent::Image(_) => {
                                    return Err(request_error(
                                        "a tool result image cannot be carried".into(),
                                    ));
                                }
                            }
                        }
                        out.push(Message::tool(r.id.clone(), result));
                    }
                    _ => {
                        return Err(request_error(
                            "only text and tool results are carried in user messages \
                             (no images, audio, video or documents)"
                                .into(),
                        ));
                    }
                }
            }
            if let Some(t) = text {
                out.push(Message::user(t));
            }
        }
        rc::Message::Assistant { content, .. } => {
            let mut text: Option<String> = None;
            let mut calls = Vec::new();
            for item in content.iter() {
                match item {
                    AssistantContent::Text(t) => text.get_or_insert_with(String::new).push_str(&t.text),
                    AssistantContent::ToolCall(c) => calls.push(ToolCall {
                        id: c.id.clone(),
                        kind: "function".to_owned(),
                        function: FunctionCall {
                            name: c.function.name.clone(),
                            arguments: c.function.arguments.to_string(),
                        },
                    }),
                    AssistantContent::Reasoning(_) => {}
                    AssistantContent::Image(_) => {
                        return Err(request_error("an assistant image cannot be carried".into()));
                    }
                }
            }
            let mut msg = Message::assistant_tool_calls(calls);
            msg.content = text;
            out.push(msg);
        }
    }
    Ok(())
}

fn tool_spec(d: ToolDefinition) -> ToolSpec {
    ToolSpec::function(d.name, d.description, d.parameters)
}

fn tool_choice(choice: ToolChoice) -> Result<Value, CompletionError> {
    Ok(match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Specific { function_names } => match function_names.as_slice() {
            [name] => json!({"type": "function", "function": {"name": name}}),
            _ => {
                return Err(request_error(
                    "a tool choice of several specific functions cannot be carried".into(),
                ));
            }
        },
    })
}

/// The raw response of a [`MantissaModel`] call: what the stack answered
/// besides the message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MantissaResponse {
    /// The model that served the call (after routing and fallbacks).
    pub model: String,
    /// Why generation stopped.
    pub finish_reason: Option<String>,
    /// Token usage.
    pub usage: Usage,
}

impl GetTokenUsage for MantissaResponse {
    fn token_usage(&self) -> rc::Usage {
        rig_usage(&self.usage)
    }
}

fn rig_usage(u: &Usage) -> rc::Usage {
    let mut usage = rc::Usage::new();
    usage.input_tokens = u.input_tokens;
    usage.output_tokens = u.output_tokens;
    usage.total_tokens = u.total();
    usage.cached_input_tokens = u.cached_input_tokens;
    usage
}

fn provider_error(e: BoxError) -> CompletionError {
    CompletionError::ProviderError(e.to_string())
}

fn rig_tool_call(c: &ToolCall) -> rc::message::ToolCall {
    let arguments = c
        .parse_arguments()
        .unwrap_or_else(|_| Value::String(c.function.arguments.clone()));
    rc::message::ToolCall::new(
        c.id.clone(),
        rc::message::ToolFunction::new(c.function.name.clone(), arguments),
    )
}

fn choice(message: &Message) -> OneOrMany<AssistantContent> {
    let mut items = Vec::new();
    if let Some(t) = message.content.as_deref().filter(|t| !t.is_empty()) {
        items.push(AssistantContent::text(t));
    }
    items.extend(
        message
            .tool_calls
            .iter()
            .map(|c| AssistantContent::ToolCall(rig_tool_call(c))),
    );
    OneOrMany::many(items).unwrap_or_else(|_| OneOrMany::one(AssistantContent::text("")))
}

impl rc::CompletionModel for MantissaModel {
    type Response = MantissaResponse;
    type StreamingResponse = MantissaResponse;
    type Client = AgentStack;

    /// A model for the agent named `model`, over `stack.llm(model)`.
    fn make(client: &AgentStack, model: impl Into<String>) -> Self {
        let agent: String = model.into();
        MantissaModel::new(client.llm(agent.as_str()), agent.as_str())
    }

    async fn completion(
        &self,
        request: CompletionRequest,
    ) -> Result<CompletionResponse<MantissaResponse>, CompletionError> {
        let mut req = self.to_request(request)?;
        req.params.stream = false;
        let resp: LlmResponse = self.service.clone().oneshot(req).await.map_err(provider_error)?;
        Ok(CompletionResponse {
            choice: choice(&resp.message),
            usage: rig_usage(&resp.usage),
            raw_response: MantissaResponse {
                model: resp.model.to_string(),
                finish_reason: resp.finish_reason.as_ref().map(|f| f.as_str().to_owned()),
                usage: resp.usage,
            },
            message_id: None,
        })
    }

    async fn stream(
        &self,
        request: CompletionRequest,
    ) -> Result<StreamingCompletionResponse<MantissaResponse>, CompletionError> {
        let mut req = self.to_request(request)?;
        req.params.stream = true;
        let mut resp = self.service.clone().oneshot(req).await.map_err(provider_error)?;
        let model = resp.model.to_string();
        let Some(chunks) = resp.stream.take() else {
            // The service answered in one piece: replay it as a stream.
            let mut events: Vec<Result<RawStreamingChoice<MantissaResponse>, CompletionError>> = Vec::new();
            if let Some(t) = resp.message.content.clone().filter(|t| !t.is_empty()) {
                events.push(Ok(RawStreamingChoice::Message(t)));
            }
            for c in &resp.message.tool_calls {
                events.push(Ok(RawStreamingChoice::ToolCall(raw_tool_call(c))));
            }
            events.push(Ok(RawStreamingChoice::FinalResponse(MantissaResponse {
                model,
                finish_reason: resp.finish_reason.as_ref().map(|f| f.as_str().to_owned()),
                usage: resp.usage,
            })));
            return Ok(StreamingCompletionResponse::stream(Box::pin(stream::iter(
                events,
            ))));
        };
        // Text goes out as it arrives; tool calls are assembled from their
        // deltas and go out whole at the end, then the usage.
        let state = (chunks, StreamAssembler::new(), Some(model));
        let events = stream::unfold(state, |(mut chunks, mut asm, mut model)| async move {
            loop {
                let model_name = model.take()?;
                match chunks.next().await {
                    Some(Ok(chunk)) => {
                        asm.push(&chunk);
                        model = Some(model_name);
                        if let Some(t) = chunk.content.filter(|t| !t.is_empty()) {
                            return Some((vec![Ok(RawStreamingChoice::Message(t))], (chunks, asm, model)));
                        }
                    }
                    Some(Err(e)) => {
                        return Some((vec![Err(provider_error(e))], (chunks, asm, None)));
                    }
                    None => {
                        let message = asm.message();
                        let mut out: Vec<_> = message
                            .tool_calls
                            .iter()
                            .map(|c| Ok(RawStreamingChoice::ToolCall(raw_tool_call(c))))
                            .collect();
                        out.push(Ok(RawStreamingChoice::FinalResponse(MantissaResponse {
                            model: model_name,
                            finish_reason: asm.finish_reason().map(|f| f.as_str().to_owned()),
                            usage: asm.usage().unwrap_or_default(),
                        })));
                        return Some((out, (chunks, asm, None)));
                    }
                }
            }
        })
        .flat_map(stream::iter);
        Ok(StreamingCompletionResponse::stream(Box::pin(events)))
    }
}

fn raw_tool_call(c: &ToolCall) -> RawStreamingToolCall {
    let call = rig_tool_call(c);
    let mut raw = RawStreamingToolCall::empty();
    raw.id = call.id;
    raw.internal_call_id = format!("mantissa-{}", c.id);
    raw.name = call.function.name;
    raw.arguments = call.function.arguments;
    raw
}

// ---- tools ----

/// A rig `Tool` whose calls are measured by mantissa: each call runs inside a
/// [`HealthLayer`] on the stack's registry, as a call of the agent's tool
/// named `T::NAME` (calls, failures, latency, the tool's health score, the
/// `mantissa_calls_total{kind="tool"}` series).
///
/// ```no_run
/// # use mantissa::AgentStack;
/// # use mantissa::adapters::rig::{MantissaModel, MeasuredTool};
/// # fn wrap<T>(stack: &AgentStack, tool: T)
/// # where T: rig_core::tool::Tool + 'static, T::Args: 'static, T::Output: Send + Sync + 'static {
/// let agent = rig_core::agent::AgentBuilder::new(MantissaModel::new(stack.llm("trader"), "trader"))
///     .tool(MeasuredTool::new(tool, stack, "trader"))
///     .build();
/// # }
/// ```
pub struct MeasuredTool<T> {
    inner: Arc<T>,
    layer: HealthLayer,
    agent: AgentName,
    session: SessionId,
}

impl<T> fmt::Debug for MeasuredTool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeasuredTool")
            .field("agent", &self.agent)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl<T: Tool> MeasuredTool<T> {
    /// Measures `tool`'s calls as `agent`'s, in `stack`'s registry.
    pub fn new(tool: T, stack: &AgentStack, agent: impl Into<AgentName>) -> Self {
        let agent = agent.into();
        Self {
            inner: Arc::new(tool),
            layer: HealthLayer::with_registry(stack.registry().clone()),
            session: SessionId::from(agent.as_str()),
            agent,
        }
    }

    /// The session the calls are recorded under. Defaults to the agent's name.
    pub fn session(mut self, session: impl Into<SessionId>) -> Self {
        self.session = session.into();
        self
    }
}

/// The error of a measured tool call: the tool's own, as a message.
#[derive(Debug, thiserror::Error)]
#[error("tool call failed: {0}")]
pub struct MeasuredToolError(String);

impl<T> Tool for MeasuredTool<T>
where
    T: Tool + 'static,
    T::Args: 'static,
    T::Output: Send + Sync + 'static,
{
    const NAME: &'static str = T::NAME;
    type Error = MeasuredToolError;
    type Args = T::Args;
    type Output = T::Output;

    fn name(&self) -> String {
        self.inner.name()
    }

    fn description(&self) -> String {
        self.inner.description()
    }

    fn parameters(&self) -> Value {
        self.inner.parameters()
    }

    async fn call(&self, args: T::Args) -> Result<T::Output, MeasuredToolError> {
        let inner = self.inner.clone();
        // The arguments stay typed: they travel beside the request, which
        // carries only the tool's name for the measurement.
        let slot = Arc::new(std::sync::Mutex::new((Some(args), None::<T::Output>)));
        let cell = slot.clone();
        let svc = self.layer.layer(tower::service_fn(move |req: ToolRequest| {
            let inner = inner.clone();
            let cell = cell.clone();
            async move {
                let tool_error = |m: String| LlmError::new(FailureClass::ToolError, m);
                let args = cell
                    .lock()
                    .map_err(|_| tool_error("tool state poisoned".into()))?
                    .0
                    .take()
                    .ok_or_else(|| tool_error("tool called twice".into()))?;
                let output = inner.call(args).await.map_err(|e| tool_error(e.to_string()))?;
                if let Ok(mut c) = cell.lock() {
                    c.1 = Some(output);
                }
                Ok::<_, LlmError>(ToolResponse::ok(req.call_id))
            }
        }));
        let req = ToolRequest::new(
            self.session.clone(),
            self.agent.clone(),
            "rig",
            self.inner.name(),
            Value::Null,
        );
        let resp = svc
            .oneshot(req)
            .await
            .map_err(|e| MeasuredToolError(e.to_string()))?;
        if resp.is_error {
            return Err(MeasuredToolError("tool reported an error".into()));
        }
        let output = slot
            .lock()
            .map_err(|_| MeasuredToolError("tool state poisoned".into()))?
            .1
            .take();
        output.ok_or_else(|| MeasuredToolError("tool returned no output".into()))
    }
}
