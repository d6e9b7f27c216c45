//! The one error type of the libraries: a [`ErrorKind`] a caller can act on,
//! a message for people, an optional hint and an optional source.

use std::fmt;

/// What went wrong, coarse enough to act on. The CLI maps each kind to a
/// documented exit code and the HTTP API to a status.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No sandbox, profile, host or extension by that name.
    NotFound,
    /// A request value is wrong (input, TTL, actor, amount, ...).
    InvalidInput,
    /// A configuration file (profile, hosts, tokens) is wrong.
    InvalidConfig,
    /// The request conflicts with the current state (idempotency key reused
    /// for another request, extending a destroyed sandbox, ...).
    Conflict,
    /// The extension does not have this ability.
    Unsupported,
    /// A host or provider could not be reached.
    Unreachable,
    /// Something did not happen in the time allowed.
    Timeout,
    /// No candidate (route and place) can take the sandbox now.
    NoPlacement,
    /// Provisioning failed; the sandbox ended `failed`.
    ProvisionFailed,
    /// The actor's balance does not cover the hold.
    InsufficientCredits,
    /// The store or ledger file is unreadable or of an unknown version; it
    /// was left untouched.
    StoreCorrupt,
    /// Missing or bad credentials.
    Unauthorized,
    /// The caller may not do this.
    Forbidden,
    /// An I/O error outside the cases above.
    Io,
    /// A bug or an unexpected state.
    Internal,
}

impl ErrorKind {
    /// The stable snake_case name used in `--json` errors and the HTTP API.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NoPlacement => "no_placement",
            ErrorKind::ProvisionFailed => "provision_failed",
            ErrorKind::InsufficientCredits => "insufficient_credits",
            ErrorKind::StoreCorrupt => "store_corrupt",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Io => "io",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every sandboxer library.
pub struct Error {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
            source: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfig, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// An I/O error with what was being done (`context`) in the message.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        Error::new(ErrorKind::Io, format!("{context}: {source}")).with_source(source)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Prefix the message with what was being done.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("hint", &self.hint)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}
