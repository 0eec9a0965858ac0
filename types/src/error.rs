//! API error codes and the JSON error body `{"error":{"code","message"}}`.
//!
//! The codes are stable strings that clients may match on; the HTTP status is derived from them.

use serde::{Deserialize, Serialize};

/// Stable, user-visible error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ErrorCode {
    /// Malformed request (bad JSON, bad field value).
    InvalidRequest,
    /// Missing or unknown bearer token.
    Unauthorized,
    /// A valid token whose role does not allow this request.
    Forbidden,
    /// The entity does not exist.
    NotFound,
    /// Uniqueness or reference conflict (duplicate MAC/IP/name, entity still in use).
    Conflict,
    /// `If-Match` version did not match the current version.
    PreconditionFailed,
    /// No leader / no quorum / leader changed: the write was not confirmed.
    Unavailable,
    /// Join token invalid, expired or already used by another node.
    JoinRejected,
    /// Something unexpected on the server.
    Internal,
    /// An `Idempotency-Key` was reused with a different request.
    IdempotencyKeyReused,
    /// The request body is larger than the node accepts (an upload beyond the blob size cap).
    TooLarge,
    /// The node has no room left to store the upload.
    InsufficientStorage,
}

impl ErrorCode {
    /// The code as it appears in error bodies (`"Unavailable"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "InvalidRequest",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::PreconditionFailed => "PreconditionFailed",
            ErrorCode::Unavailable => "Unavailable",
            ErrorCode::JoinRejected => "JoinRejected",
            ErrorCode::Internal => "Internal",
            ErrorCode::IdempotencyKeyReused => "IdempotencyKeyReused",
            ErrorCode::TooLarge => "TooLarge",
            ErrorCode::InsufficientStorage => "InsufficientStorage",
        }
    }

    /// HTTP status code for this error.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::JoinRejected => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::PreconditionFailed => 412,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
            ErrorCode::IdempotencyKeyReused => 422,
            ErrorCode::TooLarge => 413,
            ErrorCode::InsufficientStorage => 507,
        }
    }
}

/// What a client should do with a `503 Unavailable` write: the outcome is either "not applied"
/// or "unknown", and a retry carrying the same key is applied at most once.
pub const RETRY_SAME_KEY: &str = "retry with the same Idempotency-Key";

/// An API error: a code and a human-readable message. Never carries secrets.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, schemars::JsonSchema,
)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    /// A write refused because the cluster has no leader right now (an election is under
    /// way): it was certainly not applied ("not accepted").
    pub fn no_leader() -> Self {
        Self::unavailable(format!(
            "no leader at the moment (election in progress): write not accepted; {RETRY_SAME_KEY}"
        ))
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

/// Wire shape of an error response.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    pub error: ApiError,
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn as_str_is_the_code_error_bodies_carry() {
        use ErrorCode::*;
        for c in [
            InvalidRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PreconditionFailed,
            Unavailable,
            JoinRejected,
            Internal,
            IdempotencyKeyReused,
            TooLarge,
            InsufficientStorage,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str(), "{c:?}");
        }
    }
}
