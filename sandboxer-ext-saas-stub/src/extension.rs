//! [`SaasStubExtension`] (`ext.saas-stub`): an HTTP client of the provider's
//! E2B-shaped REST API. Pointing it at another provider that speaks the same
//! subset is a change of base URL and API key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use sandboxer_core::extension::{
    Capabilities, Extension, Provisioned, ReadyInfo, Resource, SandboxCtx, SnapshotMade,
};
use sandboxer_core::model::Reachability;
use sandboxer_core::snapshot::is_snapshot_id;
use sandboxer_core::transport::Transport;
use sandboxer_core::{Error, ErrorKind, Result};
use serde_json::{json, Value};

use crate::api::{
    is_provider_id, metadata_query, ApiError, CreatedSandbox, NewSandbox, SandboxDetail,
    SetTimeout, SnapshotInfo, API_KEY_HEADER, IDEMPOTENCY_HEADER, NEXT_TOKEN_HEADER,
};
use crate::secret::ApiKey;

/// The extension id.
pub const EXTENSION_ID: &str = "ext.saas-stub";
/// Environment variable with the provider's base URL.
pub const ENV_URL: &str = "SANDBOXER_SAAS_STUB_URL";
/// Environment variable with the provider's API key.
pub const ENV_API_KEY: &str = "SANDBOXER_SAAS_STUB_API_KEY";
/// The base URL when neither the route config nor [`ENV_URL`] names one:
/// the stub's default bind address.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8790";
/// The template when neither the input nor the route config names one.
pub const DEFAULT_TEMPLATE: &str = "base";
/// The metadata key that ties a provider sandbox to its sandboxer id.
pub const META_SANDBOXER_ID: &str = "sandboxer_id";
/// [`Resource::kind`] of what `list_resources` reports.
pub const RESOURCE_KIND: &str = "saas sandbox";
/// The `kind` of a snapshot found at the provider (for the reaper).
pub const SNAPSHOT_RESOURCE_KIND: &str = "saas snapshot";

/// How many characters of a provider's error body go into an error message.
const EXCERPT_CHARS: usize = 200;

/// Where the provider is and how to talk to it.
#[derive(Debug, Clone)]
pub struct SaasConfig {
    /// The provider's base URL (`http` or `https`); a route's `base_url`
    /// config key overrides it for that route's sandboxes.
    pub base_url: String,
    /// The API key sent as `X-API-Key`. Without one every call fails with
    /// `Unauthorized` before anything is sent.
    pub api_key: Option<ApiKey>,
    /// How long a TCP (and TLS) connect may take.
    pub connect_timeout: Duration,
    /// How long one request may take in all.
    pub request_timeout: Duration,
    /// How often `wait_ready` asks whether the sandbox runs.
    pub poll_interval: Duration,
}

impl Default for SaasConfig {
    /// [`DEFAULT_BASE_URL`], no key, connect 2 s, request 10 s, poll 200 ms.
    fn default() -> Self {
        SaasConfig {
            base_url: DEFAULT_BASE_URL.to_string(),
            api_key: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(200),
        }
    }
}

impl SaasConfig {
    /// The defaults, with the base URL from [`ENV_URL`] and the key from
    /// [`ENV_API_KEY`] where they are set and not empty.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut config = SaasConfig::default();
        if let Some(url) = var(ENV_URL) {
            config.base_url = url.trim().to_string();
        }
        config.api_key = var(ENV_API_KEY).map(ApiKey::new);
        config
    }
}

/// `ext.saas-stub`: sandboxes from a metered SaaS provider.
///
/// Behaviour, beyond the [`Extension`] contract:
/// - `provision` creates one provider sandbox with metadata `sandboxer_id`,
///   `actor` and `profile`, and a timeout of the seconds left until
///   `ctx.expires_at` (at least 1), so the provider ends it by itself even if
///   sandboxer never comes back. The template is the input `template`, else
///   the route config `template`, else `base`.
/// - `teardown` deletes the handle's sandbox and then every provider
///   sandbox whose `sandboxer_id` is `ctx.id` (so a lost handle leaks
///   nothing); a 404 counts as deleted.
/// - `list_resources` lists the provider sandboxes that carry a
///   `sandboxer_id`, at the default base URL (the transport is ignored). A
///   sandbox the provider killed at its timeout is not listed, so the reaper
///   sees its record as a ghost.
/// - Errors: connect failures and timeouts are `Unreachable`, 401
///   `Unauthorized`, 403 `Forbidden`, 429 `NoPlacement` ("provider at
///   capacity"); other answers are `ProvisionFailed` (provision,
///   wait_ready) or `Io` (teardown, extend, list), with the status and an
///   excerpt of the body. The API key is in none of them.
pub struct SaasStubExtension {
    config: SaasConfig,
    http: reqwest::Client,
}

impl std::fmt::Debug for SaasStubExtension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaasStubExtension")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A validated base URL: `url` for requests (no trailing `/`), `shown` for
/// messages (without any user or password), with the API key for that
/// provider and the domain its sandboxes are reached under when it names
/// none.
struct Base {
    url: String,
    shown: String,
    key: Option<ApiKey>,
    /// Where the key comes from, for messages.
    key_var: String,
    /// The host of the base URL, or the route config `domain`.
    domain: String,
}

/// What the provider answered.
struct Answer {
    status: StatusCode,
    /// `X-Next-Token`: there is another page.
    next: Option<String>,
    body: Vec<u8>,
}

/// Sandboxes per page of `GET /v2/sandboxes` (E2B's largest).
const LIST_PAGE: usize = 100;
/// Pages read at most (10,000 sandboxes).
const MAX_LIST_PAGES: usize = 100;

#[derive(Debug, Clone, Copy)]
enum Op {
    Provision,
    WaitReady,
    Teardown,
    Extend,
    List,
    Pause,
    Resume,
    Snapshot,
    DeleteSnapshot,
}

impl Op {
    fn what(self) -> &'static str {
        match self {
            Op::Provision => "create the sandbox",
            Op::WaitReady => "wait for the sandbox",
            Op::Teardown => "delete the sandbox",
            Op::Extend => "extend the sandbox",
            Op::List => "list sandboxes",
            Op::Pause => "pause the sandbox",
            Op::Resume => "resume the sandbox",
            Op::Snapshot => "snapshot the sandbox",
            Op::DeleteSnapshot => "delete the snapshot",
        }
    }

    /// The kind of an unexpected answer.
    fn failure_kind(self) -> ErrorKind {
        match self {
            Op::Provision | Op::WaitReady => ErrorKind::ProvisionFailed,
            Op::Teardown
            | Op::Extend
            | Op::List
            | Op::Pause
            | Op::Resume
            | Op::Snapshot
            | Op::DeleteSnapshot => ErrorKind::Io,
        }
    }
}

/// Why a request got no answer.
enum SendError {
    /// Nothing was sent (no key, a key a header cannot carry).
    Local(Error),
    /// The request failed on the way.
    Http(reqwest::Error),
}

impl SaasStubExtension {
    /// An extension with `config`. Fails with `InvalidConfig` when the base
    /// URL is not an `http`/`https` URL.
    pub fn new(config: SaasConfig) -> Result<Self> {
        parse_base(&config.base_url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!(
                "sandboxer-ext-saas-stub/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| {
                Error::internal(format!("cannot build the HTTP client: {}", e.without_url()))
            })?;
        Ok(SaasStubExtension { config, http })
    }

    /// [`SaasStubExtension::new`] with [`SaasConfig::from_env`]. A missing
    /// key is not an error here: calls fail with `Unauthorized` until one is
    /// set, so a build with this extension registered works without it.
    pub fn from_env() -> Result<Self> {
        Self::new(SaasConfig::from_env())
    }

    pub fn config(&self) -> &SaasConfig {
        &self.config
    }

    /// The provider a route names: its `base_url` (else the configured
    /// one), the key in the environment variable its `api_key_env` names
    /// (else the configured key), and its `domain`.
    fn base(&self, route: Option<&serde_json::Map<String, Value>>) -> Result<Base> {
        let text = |key: &str| -> Result<Option<String>> {
            match route.and_then(|c| c.get(key)) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
                Some(_) => Err(Error::invalid_config(format!(
                    "ext.saas-stub: route config `{key}` must be a non-empty string"
                ))),
            }
        };
        let mut base = match text("base_url")? {
            None => parse_base(&self.config.base_url)?,
            Some(s) => parse_base(&s)?,
        };
        base.key = match text("api_key_env")? {
            None => self.config.api_key.clone(),
            Some(var) => std::env::var(&var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(ApiKey::new),
        };
        base.key_var = text("api_key_env")?.unwrap_or_else(|| ENV_API_KEY.to_string());
        if let Some(d) = text("domain")? {
            base.domain = d;
        }
        Ok(base)
    }

    async fn send(
        &self,
        base: &Base,
        method: Method,
        url: &str,
        body: Option<Value>,
        timeout: Duration,
        idempotency_key: Option<&str>,
    ) -> std::result::Result<Answer, SendError> {
        let key = base.key.as_ref().filter(|k| !k.is_empty()).ok_or_else(|| {
            SendError::Local(
                Error::new(ErrorKind::Unauthorized, "no API key for the SaaS provider")
                    .with_hint(format!("set {} to the provider's API key", base.key_var)),
            )
        })?;
        let mut value = HeaderValue::from_str(key.expose()).map_err(|_| {
            SendError::Local(Error::invalid_config(format!(
                "{} holds characters an HTTP header cannot carry",
                base.key_var
            )))
        })?;
        value.set_sensitive(true);
        let mut req = self
            .http
            .request(method, url)
            .header(API_KEY_HEADER, value)
            .timeout(timeout);
        if let Some(k) = idempotency_key {
            req = req.header(IDEMPOTENCY_HEADER, k);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(SendError::Http)?;
        let status = resp.status();
        let next = resp
            .headers()
            .get(NEXT_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let bytes = resp.bytes().await.map_err(SendError::Http)?;
        Ok(Answer {
            status,
            next,
            body: bytes.to_vec(),
        })
    }

    /// `send`, with failures turned into sandboxer errors.
    async fn call(
        &self,
        op: Op,
        base: &Base,
        method: Method,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>)> {
        let url = format!("{}{path}", base.url);
        tracing::debug!(op = op.what(), %method, base = %base.shown, path, "saas request");
        self.send(base, method, &url, body, timeout, None)
            .await
            .map(|a| (a.status, a.body))
            .map_err(|e| self.send_error(op, base, timeout, e))
    }

    fn send_error(&self, op: Op, base: &Base, timeout: Duration, e: SendError) -> Error {
        let e = match e {
            SendError::Local(e) => return e,
            SendError::Http(e) => e.without_url(),
        };
        let why = if e.is_connect() {
            "cannot connect".to_string()
        } else if e.is_timeout() {
            format!("no answer within {}", fmt_duration(timeout))
        } else {
            "the connection failed".to_string()
        };
        Error::new(
            ErrorKind::Unreachable,
            format!(
                "could not {} at the SaaS provider {}: {why}",
                op.what(),
                base.shown
            ),
        )
        .with_hint(format!(
            "is the provider up? The base URL comes from the route config `base_url` or {ENV_URL}"
        ))
        .with_source(e)
    }

    /// The error for an answer `op` did not expect.
    fn status_error(&self, op: Op, base: &Base, status: StatusCode, body: &[u8]) -> Error {
        let excerpt = self.excerpt(body);
        let code = status.as_u16();
        match code {
            401 => Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "the SaaS provider {} refused the API key (401): {excerpt}",
                    base.shown
                ),
            )
            .with_hint(format!("set {} to the provider's API key", base.key_var)),
            403 => Error::new(
                ErrorKind::Forbidden,
                format!(
                    "could not {}: the SaaS provider {} answered 403: {excerpt}",
                    op.what(),
                    base.shown
                ),
            ),
            429 => Error::new(
                ErrorKind::NoPlacement,
                format!(
                    "provider at capacity: the SaaS provider {} answered 429: {excerpt}",
                    base.shown
                ),
            ),
            _ => Error::new(
                op.failure_kind(),
                format!(
                    "could not {}: the SaaS provider {} answered {code}: {excerpt}",
                    op.what(),
                    base.shown
                ),
            ),
        }
    }

    /// A short, one-line excerpt of an error body: its `message` when it is
    /// an E2B error, else its text; never the API key.
    fn excerpt(&self, body: &[u8]) -> String {
        let text = match serde_json::from_slice::<ApiError>(body) {
            Ok(e) => e.message,
            Err(_) => String::from_utf8_lossy(body).into_owned(),
        };
        let mut text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if let Some(key) = self.config.api_key.as_ref().filter(|k| !k.is_empty()) {
            text = text.replace(key.expose(), "[redacted]");
        }
        if text.is_empty() {
            return "(empty body)".to_string();
        }
        match text.char_indices().nth(EXCERPT_CHARS) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None => text,
        }
    }

    /// `GET /v2/sandboxes`, every page, filtered by `sandboxer_id` when
    /// given.
    async fn list_at(
        &self,
        op: Op,
        base: &Base,
        sandboxer_id: Option<&str>,
    ) -> Result<Vec<SandboxDetail>> {
        let mut all: Vec<SandboxDetail> = Vec::new();
        let mut next: Option<String> = None;
        for _page in 0..MAX_LIST_PAGES {
            let mut query: Vec<(&str, String)> = vec![("limit", LIST_PAGE.to_string())];
            if let Some(id) = sandboxer_id {
                query.push(("metadata", metadata_query(&[(META_SANDBOXER_ID, id)])));
            }
            if let Some(t) = &next {
                query.push(("nextToken", t.clone()));
            }
            let path = format!(
                "/v2/sandboxes?{}",
                serde_urlencoded::to_string(&query).unwrap_or_default()
            );
            let url = format!("{}{path}", base.url);
            let timeout = self.config.request_timeout;
            tracing::debug!(op = op.what(), base = %base.shown, path, "saas request");
            let answer = self
                .send(base, Method::GET, &url, None, timeout, None)
                .await
                .map_err(|e| self.send_error(op, base, timeout, e))?;
            if !answer.status.is_success() {
                return Err(self.status_error(op, base, answer.status, &answer.body));
            }
            let page: Vec<SandboxDetail> = serde_json::from_slice(&answer.body).map_err(|e| {
                Error::new(
                    op.failure_kind(),
                    format!(
                        "could not {}: the SaaS provider {} sent a list it cannot read: {e}",
                        op.what(),
                        base.shown
                    ),
                )
            })?;
            all.extend(page);
            next = answer.next;
            if next.is_none() {
                break;
            }
        }
        // Filter here too: a provider that ignores the filter must not make
        // us touch sandboxes that are not this one's.
        Ok(all
            .into_iter()
            .filter(|d| {
                sandboxer_id.is_none_or(|id| {
                    d.metadata.get(META_SANDBOXER_ID).map(String::as_str) == Some(id)
                })
            })
            .collect())
    }

    /// The provider ids of every sandbox labelled with `sandboxer_id`.
    async fn find(&self, op: Op, base: &Base, sandboxer_id: &str) -> Result<Vec<String>> {
        let found = self.list_at(op, base, Some(sandboxer_id)).await?;
        Ok(found
            .into_iter()
            .filter_map(|d| {
                if is_provider_id(&d.sandbox_id) {
                    Some(d.sandbox_id)
                } else {
                    tracing::warn!(
                        sandbox = sandboxer_id,
                        "provider sandbox id is not URL-safe, skipped"
                    );
                    None
                }
            })
            .collect())
    }

    /// DELETE one provider sandbox; gone already is fine.
    async fn delete(&self, base: &Base, provider_id: &str) -> Result<()> {
        let (status, body) = self
            .call(
                Op::Teardown,
                base,
                Method::DELETE,
                &format!("/sandboxes/{provider_id}"),
                None,
                self.config.request_timeout,
            )
            .await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            tracing::debug!(provider_id, %status, "saas sandbox deleted");
            Ok(())
        } else {
            Err(self.status_error(Op::Teardown, base, status, &body))
        }
    }

    /// Delete every sandbox labelled with `sandboxer_id`; how many there were.
    async fn sweep(&self, base: &Base, sandboxer_id: &str) -> Result<usize> {
        let ids = self.find(Op::Teardown, base, sandboxer_id).await?;
        for id in &ids {
            self.delete(base, id).await?;
        }
        Ok(ids.len())
    }
}

/// The handle `provision` returns: `{"sandboxID": ..., "domain": ...}`.
struct Handle {
    sandbox_id: String,
    domain: Option<String>,
}

impl Handle {
    fn to_value(&self) -> Value {
        json!({ "sandboxID": self.sandbox_id, "domain": self.domain })
    }

    /// `None` for a `Null` handle (never saved) and for one that is not
    /// ours or whose id is not URL-safe: the callers then find the sandbox
    /// by its `sandboxer_id` metadata, so an odd handle never leaks one.
    fn parse(handle: &Value) -> Option<Handle> {
        if handle.is_null() {
            return None;
        }
        let id = handle
            .get("sandboxID")
            .and_then(Value::as_str)
            .filter(|id| is_provider_id(id));
        let Some(id) = id else {
            tracing::warn!("not a handle of {EXTENSION_ID}; finding the sandbox by its metadata");
            return None;
        };
        Some(Handle {
            sandbox_id: id.to_string(),
            domain: handle
                .get("domain")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

fn parse_base(raw: &str) -> Result<Base> {
    let bad = |why: &str| {
        Error::invalid_config(format!("ext.saas-stub: bad base URL: {why}")).with_hint(format!(
            "set the route config `base_url` or {ENV_URL} to e.g. {DEFAULT_BASE_URL}"
        ))
    };
    let mut url = reqwest::Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("it must be an http:// or https:// URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it may not have a query or fragment"));
    }
    let full = url.as_str().trim_end_matches('/').to_string();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok(Base {
        url: full,
        shown: url.as_str().trim_end_matches('/').to_string(),
        key: None,
        key_var: ENV_API_KEY.to_string(),
        domain: url.host_str().unwrap_or_default().to_string(),
    })
}

/// Whole seconds from now until `expires_at`, rounded up, at least 1.
fn seconds_until(expires_at: DateTime<Utc>) -> u64 {
    let ms = (expires_at - Utc::now()).num_milliseconds();
    (ms.max(0) as u64).div_ceil(1000).max(1)
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn template(ctx: &SandboxCtx) -> Result<String> {
    if let Some(t) = ctx.inputs.get("template").filter(|t| !t.trim().is_empty()) {
        return Ok(t.clone());
    }
    match ctx.config.get("template") {
        None | Some(Value::Null) => Ok(DEFAULT_TEMPLATE.to_string()),
        Some(Value::String(t)) if !t.trim().is_empty() => Ok(t.clone()),
        Some(_) => Err(Error::invalid_config(
            "ext.saas-stub: route config `template` must be a non-empty string",
        )),
    }
}

#[async_trait]
impl Extension for SaasStubExtension {
    fn id(&self) -> &str {
        EXTENSION_ID
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: true,
            list_resources: true,
            uses_host: false,
            pause: true,
            snapshot: true,
        }
    }

    /// Create the sandbox (from the template of the route, or from the
    /// provider snapshot of `ctx.restore`).
    async fn provision(&self, ctx: &SandboxCtx) -> Result<Provisioned> {
        let base = self.base(Some(&ctx.config))?;
        let template_id = match &ctx.restore {
            Some(r) => SnapHandle::parse(&r.handle).ok_or_else(|| {
                Error::not_found(format!(
                    "snapshot {} has no snapshot at the SaaS provider {}",
                    r.snapshot_id, base.shown
                ))
            })?,
            None => template(ctx)?,
        };
        let body = NewSandbox {
            template_id,
            timeout: Some(seconds_until(ctx.expires_at)),
            metadata: BTreeMap::from([
                (META_SANDBOXER_ID.to_string(), ctx.id.clone()),
                ("actor".to_string(), ctx.actor.to_string()),
                ("profile".to_string(), ctx.profile.clone()),
            ]),
        };
        let body = serde_json::to_value(&body).map_err(|e| Error::internal(e.to_string()))?;
        let url = format!("{}/v2/sandboxes", base.url);
        let timeout = self.config.request_timeout;
        // The sandboxer id is the idempotency key: when the answer is lost
        // (a timeout, a reset after sending), the create is sent once more
        // and the provider answers the sandbox the first one made.
        let mut sent = self
            .send(
                &base,
                Method::POST,
                &url,
                Some(body.clone()),
                timeout,
                Some(&ctx.id),
            )
            .await;
        if matches!(&sent, Err(SendError::Http(h)) if !h.is_connect()) {
            tracing::debug!(sandbox = %ctx.id, "saas create: no answer; sending it again with the same idempotency key");
            sent = self
                .send(
                    &base,
                    Method::POST,
                    &url,
                    Some(body),
                    timeout,
                    Some(&ctx.id),
                )
                .await;
        }
        let (status, resp) = match sent {
            Ok(answer) => (answer.status, answer.body),
            Err(e) => {
                // The request may have reached the provider: remove whatever
                // it made.
                if matches!(&e, SendError::Http(h) if !h.is_connect()) {
                    self.sweep_quietly(&base, &ctx.id).await;
                }
                return Err(self.send_error(Op::Provision, &base, timeout, e));
            }
        };
        if !status.is_success() {
            return Err(self.status_error(Op::Provision, &base, status, &resp));
        }
        let created = serde_json::from_slice::<CreatedSandbox>(&resp)
            .ok()
            .filter(|c| is_provider_id(&c.sandbox_id));
        let Some(created) = created else {
            self.sweep_quietly(&base, &ctx.id).await;
            return Err(Error::new(
                ErrorKind::ProvisionFailed,
                format!(
                    "could not create the sandbox: the SaaS provider {} answered {status} without a usable sandboxID: {}",
                    base.shown,
                    self.excerpt(&resp)
                ),
            ));
        };
        tracing::debug!(sandbox = %ctx.id, provider_id = %created.sandbox_id, "saas sandbox created");
        let handle = Handle {
            sandbox_id: created.sandbox_id,
            domain: created.domain,
        };
        Ok(Provisioned {
            handle: handle.to_value(),
        })
    }

    async fn wait_ready(
        &self,
        ctx: &SandboxCtx,
        handle: &Value,
        deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo> {
        let base = self.base(Some(&ctx.config))?;
        let (handle, learned) = match Handle::parse(handle) {
            Some(h) => (h, false),
            None => {
                let ids = self.find(Op::WaitReady, &base, &ctx.id).await?;
                let Some(id) = ids.into_iter().next() else {
                    return Err(Error::new(
                        ErrorKind::ProvisionFailed,
                        format!(
                            "the SaaS provider {} has no sandbox for {}",
                            base.shown, ctx.id
                        ),
                    ));
                };
                (
                    Handle {
                        sandbox_id: id,
                        domain: None,
                    },
                    true,
                )
            }
        };
        let id = &handle.sandbox_id;
        let path = format!("/sandboxes/{id}");
        let mut last: Option<Error> = None;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                let mut msg = format!(
                    "sandbox {id} at the SaaS provider {} was not running in time",
                    base.shown
                );
                if let Some(e) = last {
                    msg.push_str(&format!(" (last error: {e})"));
                }
                return Err(Error::new(ErrorKind::Timeout, msg));
            }
            let timeout = left.min(self.config.request_timeout);
            match self
                .call(Op::WaitReady, &base, Method::GET, &path, None, timeout)
                .await
            {
                Ok((status, body)) if status.is_success() => {
                    let detail: SandboxDetail = serde_json::from_slice(&body).map_err(|e| {
                        Error::new(
                            ErrorKind::ProvisionFailed,
                            format!(
                                "the SaaS provider {} sent a sandbox it cannot read: {e}",
                                base.shown
                            ),
                        )
                    })?;
                    if detail.running() {
                        // The provider's domain; one that names none (another
                        // sandboxer) is reached at the route's `domain` or
                        // the host of its base URL.
                        let domain = detail
                            .domain
                            .clone()
                            .or_else(|| handle.domain.clone())
                            .filter(|d| !d.is_empty())
                            .unwrap_or_else(|| base.domain.clone());
                        let address = format!("{id}.{domain}");
                        let mut reachability = Reachability {
                            address: address.clone(),
                            ..Default::default()
                        };
                        reachability
                            .urls
                            .insert("sandbox".into(), format!("https://{address}"));
                        reachability.details.insert("provider_id".into(), json!(id));
                        let handle = learned.then(|| {
                            Handle {
                                sandbox_id: id.clone(),
                                domain: Some(domain),
                            }
                            .to_value()
                        });
                        return Ok(ReadyInfo {
                            reachability,
                            telemetry: None,
                            handle,
                        });
                    }
                    last = None;
                }
                Ok((StatusCode::NOT_FOUND, _)) => {
                    return Err(Error::new(
                        ErrorKind::ProvisionFailed,
                        format!(
                            "sandbox {id} is gone from the SaaS provider {} before it was ready",
                            base.shown
                        ),
                    ));
                }
                Ok((status, body)) => {
                    let e = self.status_error(Op::WaitReady, &base, status, &body);
                    if !status.is_server_error() {
                        return Err(e);
                    }
                    last = Some(e);
                }
                Err(e) if e.kind() == ErrorKind::Unreachable => last = Some(e),
                Err(e) => return Err(e),
            }
            tokio::time::sleep_until(
                (tokio::time::Instant::now() + self.config.poll_interval).min(deadline),
            )
            .await;
        }
    }

    async fn teardown(&self, ctx: &SandboxCtx, handle: &Value) -> Result<()> {
        let base = self.base(Some(&ctx.config))?;
        if let Some(h) = Handle::parse(handle) {
            self.delete(&base, &h.sandbox_id).await?;
        }
        // Also whatever carries this sandbox's id (a lost handle, a create
        // whose answer never arrived).
        let swept = self.sweep(&base, &ctx.id).await?;
        if swept > 0 {
            tracing::debug!(sandbox = %ctx.id, swept, "saas sandboxes found by metadata and deleted");
        }
        Ok(())
    }

    async fn extend(
        &self,
        ctx: &SandboxCtx,
        handle: &Value,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let base = self.base(Some(&ctx.config))?;
        let ids = match Handle::parse(handle) {
            Some(h) => vec![h.sandbox_id],
            None => self.find(Op::Extend, &base, &ctx.id).await?,
        };
        let gone = || {
            Error::not_found(format!(
                "the SaaS provider {} has no sandbox for {} (it may have ended at its timeout)",
                base.shown, ctx.id
            ))
        };
        if ids.is_empty() {
            return Err(gone());
        }
        let body = serde_json::to_value(SetTimeout {
            timeout: seconds_until(expires_at),
        })
        .map_err(|e| Error::internal(e.to_string()))?;
        for id in ids {
            let (status, resp) = self
                .call(
                    Op::Extend,
                    &base,
                    Method::POST,
                    &format!("/sandboxes/{id}/timeout"),
                    Some(body.clone()),
                    self.config.request_timeout,
                )
                .await?;
            if status == StatusCode::NOT_FOUND {
                return Err(gone());
            }
            if !status.is_success() {
                return Err(self.status_error(Op::Extend, &base, status, &resp));
            }
        }
        Ok(())
    }

    async fn list_resources(&self, _transport: Arc<dyn Transport>) -> Result<Vec<Resource>> {
        let base = self.base(None)?;
        let all = self.list_at(Op::List, &base, None).await?;
        let mut out: Vec<Resource> = all
            .into_iter()
            .filter_map(|d| {
                let sandbox_id = d.metadata.get(META_SANDBOXER_ID)?.clone();
                Some(Resource {
                    sandbox_id,
                    kind: RESOURCE_KIND.to_string(),
                    running: d.running(),
                    name: d.sandbox_id,
                })
            })
            .collect();
        // Snapshots sandboxer made carry its `snap-...` id as their name.
        for s in self.snapshots_at(Op::List, &base, None).await? {
            if let Some(ours) = s.names.iter().find(|n| is_snapshot_id(n)) {
                out.push(Resource {
                    sandbox_id: ours.clone(),
                    kind: SNAPSHOT_RESOURCE_KIND.to_string(),
                    name: s.snapshot_id.clone(),
                    running: false,
                });
            }
        }
        Ok(out)
    }

    /// `POST /sandboxes/{id}/pause`; paused already (409) is fine.
    async fn pause(&self, ctx: &SandboxCtx, handle: &Value) -> Result<()> {
        let base = self.base(Some(&ctx.config))?;
        for id in self.provider_ids(Op::Pause, &base, ctx, handle).await? {
            let (status, resp) = self
                .call(
                    Op::Pause,
                    &base,
                    Method::POST,
                    &format!("/sandboxes/{id}/pause"),
                    None,
                    self.config.request_timeout,
                )
                .await?;
            if !(status.is_success() || status == StatusCode::CONFLICT) {
                return Err(self.gone_or(Op::Pause, &base, ctx, status, &resp));
            }
        }
        Ok(())
    }

    /// `POST /sandboxes/{id}/connect` with the time until its new expiry
    /// (which resumes a paused sandbox), then what `wait_ready` confirms.
    async fn resume(
        &self,
        ctx: &SandboxCtx,
        handle: &Value,
        deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo> {
        let base = self.base(Some(&ctx.config))?;
        let body = json!({ "timeout": seconds_until(ctx.expires_at) });
        for id in self.provider_ids(Op::Resume, &base, ctx, handle).await? {
            let (status, resp) = self
                .call(
                    Op::Resume,
                    &base,
                    Method::POST,
                    &format!("/sandboxes/{id}/connect"),
                    Some(body.clone()),
                    self.config.request_timeout,
                )
                .await?;
            if !status.is_success() {
                return Err(self.gone_or(Op::Resume, &base, ctx, status, &resp));
            }
        }
        self.wait_ready(ctx, handle, deadline).await
    }

    /// `POST /sandboxes/{id}/snapshots`, named with the snapshot's id (so
    /// the reaper can tell ours); the handle is the provider's snapshot id.
    async fn snapshot(
        &self,
        ctx: &SandboxCtx,
        handle: &Value,
        snapshot_id: &str,
    ) -> Result<SnapshotMade> {
        let base = self.base(Some(&ctx.config))?;
        let ids = self.provider_ids(Op::Snapshot, &base, ctx, handle).await?;
        let id = ids.first().ok_or_else(|| self.gone(&base, ctx))?;
        let (status, resp) = self
            .call(
                Op::Snapshot,
                &base,
                Method::POST,
                &format!("/sandboxes/{id}/snapshots"),
                Some(json!({ "name": snapshot_id })),
                self.config.request_timeout,
            )
            .await?;
        if !status.is_success() {
            return Err(self.gone_or(Op::Snapshot, &base, ctx, status, &resp));
        }
        let info = serde_json::from_slice::<SnapshotInfo>(&resp)
            .ok()
            .filter(|i| is_provider_id(&i.snapshot_id))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Io,
                    format!(
                        "the SaaS provider {} answered a snapshot without a usable snapshotID: {}",
                        base.shown,
                        self.excerpt(&resp)
                    ),
                )
            })?;
        Ok(SnapshotMade {
            handle: json!({ "snapshotID": info.snapshot_id }),
            location: Some(format!("{} snapshot {}", base.shown, info.snapshot_id)),
            size_bytes: None,
        })
    }

    /// `DELETE /templates/{snapshotID}` of the provider snapshot in the
    /// handle, or of every one named with `snapshot_id`; gone is fine.
    async fn delete_snapshot(
        &self,
        _transport: Arc<dyn Transport>,
        snapshot_id: &str,
        handle: &Value,
    ) -> Result<()> {
        let base = self.base(None)?;
        let mut ids: Vec<String> = SnapHandle::parse(handle).into_iter().collect();
        for s in self
            .snapshots_at(Op::DeleteSnapshot, &base, Some(snapshot_id))
            .await?
        {
            if s.names.iter().any(|n| n == snapshot_id) && !ids.contains(&s.snapshot_id) {
                ids.push(s.snapshot_id);
            }
        }
        for id in ids.iter().filter(|i| is_provider_id(i)) {
            let (status, resp) = self
                .call(
                    Op::DeleteSnapshot,
                    &base,
                    Method::DELETE,
                    &format!("/templates/{id}"),
                    None,
                    self.config.request_timeout,
                )
                .await?;
            if !(status.is_success() || status == StatusCode::NOT_FOUND) {
                return Err(self.status_error(Op::DeleteSnapshot, &base, status, &resp));
            }
        }
        Ok(())
    }
}

/// A snapshot's handle: `{"snapshotID": ...}`, the provider's id.
struct SnapHandle;

impl SnapHandle {
    fn parse(handle: &Value) -> Option<String> {
        handle
            .get("snapshotID")
            .and_then(Value::as_str)
            .filter(|id| is_provider_id(id))
            .map(str::to_string)
    }
}

impl SaasStubExtension {
    /// The provider ids of the sandbox: the handle's, else found by its
    /// metadata.
    async fn provider_ids(
        &self,
        op: Op,
        base: &Base,
        ctx: &SandboxCtx,
        handle: &Value,
    ) -> Result<Vec<String>> {
        let ids = match Handle::parse(handle) {
            Some(h) => vec![h.sandbox_id],
            None => self.find(op, base, &ctx.id).await?,
        };
        if ids.is_empty() {
            return Err(self.gone(base, ctx));
        }
        Ok(ids)
    }

    fn gone(&self, base: &Base, ctx: &SandboxCtx) -> Error {
        Error::not_found(format!(
            "the SaaS provider {} has no sandbox for {} (it may have ended at its timeout)",
            base.shown, ctx.id
        ))
    }

    /// A 404 is the sandbox gone; any other status its own error.
    fn gone_or(
        &self,
        op: Op,
        base: &Base,
        ctx: &SandboxCtx,
        status: StatusCode,
        body: &[u8],
    ) -> Error {
        if status == StatusCode::NOT_FOUND {
            self.gone(base, ctx)
        } else {
            self.status_error(op, base, status, body)
        }
    }

    /// `GET /snapshots`, those named `name` when given.
    async fn snapshots_at(
        &self,
        op: Op,
        base: &Base,
        name: Option<&str>,
    ) -> Result<Vec<SnapshotInfo>> {
        let path = match name {
            Some(n) => format!(
                "/snapshots?{}",
                serde_urlencoded::to_string([("name", n)]).unwrap_or_default()
            ),
            None => "/snapshots".to_string(),
        };
        let (status, body) = self
            .call(
                op,
                base,
                Method::GET,
                &path,
                None,
                self.config.request_timeout,
            )
            .await?;
        if !status.is_success() {
            return Err(self.status_error(op, base, status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                op.failure_kind(),
                format!(
                    "could not {}: the SaaS provider {} sent snapshots it cannot read: {e}",
                    op.what(),
                    base.shown
                ),
            )
        })
    }

    /// Best effort, for rollback inside `provision`: the error that made us
    /// roll back is the one the caller gets.
    async fn sweep_quietly(&self, base: &Base, sandboxer_id: &str) {
        if let Err(e) = self.sweep(base, sandboxer_id).await {
            tracing::warn!(sandbox = sandboxer_id, error = %e, "rollback at the SaaS provider failed; teardown or the reaper will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = parse_base("http://127.0.0.1:8790/").unwrap();
        assert_eq!(b.url, "http://127.0.0.1:8790");
        let b = parse_base("https://user:pw@api.example.com/v1/").unwrap();
        assert_eq!(b.url, "https://user:pw@api.example.com/v1");
        assert_eq!(b.shown, "https://api.example.com/v1");
        for bad in [
            "",
            "127.0.0.1:8790",
            "ftp://x",
            "http://x/?a=b",
            "not a url",
        ] {
            let e = parse_base(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad}");
        }
    }

    #[test]
    fn seconds_round_up_and_stay_positive() {
        assert_eq!(seconds_until(Utc::now() - chrono::Duration::hours(1)), 1);
        let s = seconds_until(Utc::now() + chrono::Duration::milliseconds(1500));
        assert_eq!(s, 2);
        let s = seconds_until(Utc::now() + chrono::Duration::minutes(5));
        assert!((299..=300).contains(&s), "{s}");
    }

    #[test]
    fn handles() {
        assert!(Handle::parse(&Value::Null).is_none());
        let h = Handle::parse(&json!({"sandboxID": "iabc", "domain": "d"})).unwrap();
        assert_eq!(
            (h.sandbox_id.as_str(), h.domain.as_deref()),
            ("iabc", Some("d"))
        );
        for odd in [json!({}), json!({"sandboxID": "../x"}), json!("iabc")] {
            assert!(Handle::parse(&odd).is_none(), "{odd}");
        }
    }

    #[test]
    fn excerpts_are_short_one_line_and_keyless() {
        let ext = SaasStubExtension::new(SaasConfig {
            api_key: Some(ApiKey::new("k3y-value")),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ext.excerpt(br#"{"code": 500, "message": "boom"}"#), "boom");
        assert_eq!(
            ext.excerpt(b"bad\n  key k3y-value here"),
            "bad key [redacted] here"
        );
        assert_eq!(ext.excerpt(b""), "(empty body)");
        let long = "x".repeat(500);
        assert_eq!(ext.excerpt(long.as_bytes()).len(), EXCERPT_CHARS + 3);
        assert!(!format!("{ext:?}").contains("k3y-value"));
    }
}
