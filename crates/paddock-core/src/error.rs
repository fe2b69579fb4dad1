//! The core's typed errors. Each surface renders [`CoreError`] in its own
//! format, in one function; nothing here knows about HTTP.

use std::io;

/// A failure of the record store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database operation failed")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("stored row is not valid: {0}")]
    Corrupt(String),
    #[error("a record with this key already exists")]
    Duplicate,
}

/// A failure of a sandbox provider.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the sandbox is not running")]
    SandboxGone,
    #[error("no such file or directory: {0}")]
    FileNotFound(String),
    // The next four carry the agent's message, which names the path or the
    // session and the cause; they are shown as they are.
    #[error("{0}")]
    IsADirectory(String),
    #[error("{0}")]
    NotADirectory(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("no such PTY session: {0}")]
    PtyNotFound(String),
    /// A PTY session or job with the id exists, or a file is in the way.
    #[error("{0}")]
    Exists(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("the sandbox could not be set up: {0}")]
    Setup(String),
    /// The provider cannot do this (a PTY in a Docker sandbox).
    #[error("{0}")]
    Unsupported(String),
    #[error("the in-sandbox agent failed: {0}")]
    Agent(String),
    /// The agent did not answer within its deadline (stuck, stopped, or
    /// starved): never a hung request.
    #[error("the in-sandbox agent did not answer in time: {0}")]
    AgentTimeout(String),
    /// What a suspended sandbox was saved into no longer opens (altered,
    /// cut short, or its key is gone): it stays suspended.
    #[error("{0}")]
    SavedStateDamaged(String),
    /// The sandbox is another node's (in a store several share).
    #[error("{0}")]
    Unavailable(String),
    #[error("host resource {what} could not be managed")]
    Host {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl RuntimeError {
    pub fn host(what: impl Into<String>, source: io::Error) -> Self {
        Self::Host {
            what: what.into(),
            source,
        }
    }
}

/// What any core operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{kind} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller is known but may not do this (another user's setting).
    #[error("{0}")]
    PermissionDenied(String),
    /// A quota or capacity is used up (a node pool's ranks).
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("invalid or missing API key")]
    Unauthenticated,
    /// The account's request rate is spent; it may call again after this.
    #[error("too many requests: the account's rate limit is reached; retry in {} ms", retry_after.as_millis().max(1))]
    RateLimited { retry_after: std::time::Duration },
    #[error("{0}")]
    Unavailable(String),
    /// A system paddock depends on (a registry) failed or misbehaved.
    #[error("{0}")]
    Upstream(String),
    /// A sandbox did not answer in time.
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("sandbox runtime error")]
    Runtime(#[source] RuntimeError),
    #[error("store error")]
    Store(#[from] StoreError),
}

impl CoreError {
    pub fn not_found(kind: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<RuntimeError> for CoreError {
    /// Errors the caller caused become the caller's errors; the rest stay
    /// runtime failures (a 500 on every surface, with the cause logged).
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::SandboxGone => Self::FailedPrecondition("the VM is not running".into()),
            RuntimeError::FileNotFound(p) => Self::not_found("file", p),
            RuntimeError::PtyNotFound(p) => Self::not_found("PTY session", p),
            RuntimeError::Exists(m) => Self::Conflict(m),
            RuntimeError::IsADirectory(m) | RuntimeError::NotADirectory(m) => {
                Self::invalid("path", m)
            }
            RuntimeError::PermissionDenied(m) => Self::FailedPrecondition(m),
            RuntimeError::Invalid(m) => Self::invalid("request", m),
            // What this sandbox's provider cannot do is the caller's to
            // change (another provider), not a server fault.
            RuntimeError::Unsupported(m) => Self::FailedPrecondition(m),
            RuntimeError::SavedStateDamaged(m) => Self::FailedPrecondition(m),
            RuntimeError::Unavailable(m) => Self::Unavailable(m),
            e @ RuntimeError::AgentTimeout(_) => Self::DeadlineExceeded(e.to_string()),
            other => Self::Runtime(other),
        }
    }
}

/// An error and its causes on one line, for logs and failure reasons.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let causes = std::iter::successors(Some(e), |e| e.source());
    causes
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
