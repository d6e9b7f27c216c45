//! Request extractors: the caller (bearer token), JSON bodies with errors
//! that say what is wrong, and query strings checked against the route
//! table.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use sandboxer_core::model::{Actor, Sandbox};
use sandboxer_core::ErrorKind;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::openapi::{self, In, Operation};
use crate::ApiState;

/// The largest request body the server reads (bytes).
pub const BODY_LIMIT: usize = 64 * 1024;

/// Who is calling: the actor of the bearer token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: Actor,
    /// The token's name (never its secret).
    pub token: String,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.actor.is_admin()
    }

    /// `adm` sees every sandbox; `agt` and `atm` their own.
    pub fn sees(&self, s: &Sandbox) -> bool {
        self.is_admin() || s.actor == self.actor
    }

    /// The actor a request acts as: `asked` when given (only `adm` may name
    /// another actor), else the token's.
    pub fn acting_as(&self, asked: Option<&str>, what: &str) -> Result<Actor, ApiError> {
        let Some(a) = asked.filter(|a| !a.is_empty()) else {
            return Ok(self.actor.clone());
        };
        let a: Actor = a.parse().map_err(ApiError::from)?;
        if a != self.actor && !self.is_admin() {
            return Err(ApiError::forbidden(format!(
                "a token of {} {what} as {} only, not {a}",
                self.actor, self.actor
            )));
        }
        Ok(a)
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let hint =
        "send `Authorization: Bearer TOKEN`; `sandboxer tokens add --actor ACTOR` makes a token";
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        // The E2B SDKs send their API key as `X-API-Key`; a sandboxer token
        // there is the same token.
        if let Some(key) = parts.headers.get("x-api-key") {
            let key = key.to_str().map_err(|_| {
                ApiError::unauthorized("the X-API-Key header is not text").with_hint(hint)
            })?;
            if !key.trim().is_empty() {
                return Ok(key.trim());
            }
        }
        return Err(ApiError::unauthorized("no bearer token").with_hint(hint));
    };
    let value = value.to_str().map_err(|_| {
        ApiError::unauthorized("the Authorization header is not text").with_hint(hint)
    })?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(
            ApiError::unauthorized("the Authorization header is not `Bearer TOKEN`")
                .with_hint(hint),
        );
    }
    Ok(token.trim())
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        match state.tokens.authenticate(token) {
            Ok(Some(info)) => Ok(Caller {
                actor: info.actor,
                token: info.name,
            }),
            Ok(None) => Err(
                ApiError::unauthorized("the token is not valid (unknown or revoked)")
                    .with_hint("`sandboxer tokens list` shows the tokens the server knows"),
            ),
            Err(e) => {
                tracing::error!("no token is accepted until the tokens file is fixed: {e}");
                Err(ApiError::new(
                    ErrorKind::InvalidConfig,
                    "the server's tokens file does not parse; no token is accepted until it is fixed",
                )
                .with_status(StatusCode::INTERNAL_SERVER_ERROR)
                .with_hint("the server's log names the file, line and column"))
            }
        }
    }
}

/// A caller with an `adm` token (others get 403 before the body is read).
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl FromRequestParts<ApiState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.is_admin() {
            return Err(ApiError::forbidden(format!(
                "only adm tokens may do this; this token acts as {}",
                caller.actor
            )));
        }
        Ok(Admin(caller))
    }
}

/// A JSON body; an empty body reads as `{}`. Malformed JSON, a wrong type
/// or an unknown field is a 400 that says what and where; a body over
/// [`BODY_LIMIT`] is a 413. The Content-Type is not checked (so `curl -d`
/// works as is).
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if crate::conn::is_body_timeout(&e) {
                crate::conn::body_timeout_error()
            } else if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::invalid(format!(
                    "the body is larger than the {BODY_LIMIT} bytes the server takes"
                ))
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
            } else {
                ApiError::invalid(format!("reading the body: {}", e.body_text()))
            }
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}")))
    }
}

/// One path parameter (`{id}`, `{name}`); a bad one is a JSON 400.
#[derive(Debug, Clone)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| PathParam(p.0))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

/// A query string, checked against the operation's parameters.
#[derive(Debug, Clone)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parse `raw` for operation `op_id`; an unknown parameter is a 400
    /// naming the ones the operation takes.
    pub fn parse(op_id: crate::openapi::OpId, raw: Option<&str>) -> Result<Params, ApiError> {
        let op: &Operation = openapi::operation(op_id);
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| ApiError::invalid(format!("malformed query string: {e}")))?;
        let known: Vec<&str> = op
            .params
            .iter()
            .filter(|p| p.location == In::Query)
            .map(|p| p.name)
            .collect();
        for (k, _) in &pairs {
            if !known.contains(&k.as_str()) {
                let takes = if known.is_empty() {
                    "no query parameters".to_string()
                } else {
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{k}`; {} {} takes {takes}",
                    op.method.as_str().to_uppercase(),
                    op.path
                )));
            }
        }
        Ok(Params { pairs })
    }

    /// The one value of `name` (an empty value is as good as none); given
    /// twice is a 400.
    pub fn one(&self, name: &str) -> Result<Option<String>, ApiError> {
        let mut vals = self.pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        let first = vals.next();
        if vals.next().is_some() {
            return Err(ApiError::invalid(format!(
                "query parameter `{name}` is given twice"
            )));
        }
        Ok(first.filter(|v| !v.is_empty()).cloned())
    }

    /// Every value of a repeatable `name`, commas splitting too.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// A boolean: `true`/`false`/`1`/`0`, or present with no value (true).
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        if !self.pairs.iter().any(|(k, _)| k == name) {
            return Ok(false);
        }
        match self
            .pairs
            .iter()
            .rfind(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
        {
            Some("" | "true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(other) => Err(ApiError::invalid(format!(
                "query parameter `{name}` is `{other}`, not true or false"
            ))),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_checked_against_the_route_table() {
        let p = Params::parse(
            crate::openapi::OpId::ListSandboxes,
            Some("state=ready,failed&state=destroyed&live&actor=agt%3Ax"),
        )
        .unwrap();
        assert_eq!(p.list("state"), ["ready", "failed", "destroyed"]);
        assert!(p.flag("live").unwrap());
        assert_eq!(p.one("actor").unwrap().as_deref(), Some("agt:x"));
        assert_eq!(p.one("host").unwrap(), None);

        let e = Params::parse(crate::openapi::OpId::ListSandboxes, Some("colour=red")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("`colour`") && e.message.contains("`state`"));
        let e = Params::parse(crate::openapi::OpId::GetSandbox, Some("x=1")).unwrap_err();
        assert!(e.message.contains("no query parameters"), "{}", e.message);

        let p = Params::parse(
            crate::openapi::OpId::ListSandboxes,
            Some("live=maybe&actor=a&actor=b"),
        )
        .unwrap();
        assert!(p.flag("live").is_err());
        assert!(p.one("actor").is_err());
    }
}
