//! Why a call failed, and whether repeating it may help.

use std::time::Duration;

use http::StatusCode;

use crate::problem::Problem;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No complete answer within the deadline.
    #[error("{service} did not answer within {timeout:?}")]
    Timeout {
        /// The service called.
        service: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The connection could not be made or broke.
    #[error("cannot reach {service}: {message}")]
    Connect {
        /// The service called.
        service: String,
        /// The transport's error.
        message: String,
    },
    /// The call was refused before it left: no replica is registered, or every one the
    /// call could go to has its circuit breaker open, or too many calls are in flight.
    #[error("{service} is unavailable: {reason}")]
    Unavailable {
        /// The service called.
        service: String,
        /// Why.
        reason: String,
    },
    /// The service answered with an error status.
    #[error("{service} answered {status}")]
    Status {
        /// The service called.
        service: String,
        /// Its status.
        status: StatusCode,
        /// Its problem document, when it sent one.
        problem: Option<Box<Problem>>,
    },
    /// The answer could not be read or decoded.
    #[error("cannot decode the answer of {service}: {message}")]
    Decode {
        /// The service called.
        service: String,
        /// What went wrong.
        message: String,
    },
    /// The request could not be built (a bad base URL or path).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl ClientError {
    /// Whether repeating an idempotent call may succeed: timeouts, connection errors, a
    /// refusal before sending, and 502, 503 and 504 answers.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Connect { .. } | Self::Unavailable { .. } => true,
            Self::Status { status, .. } => matches!(
                *status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
            Self::Decode { .. } | Self::InvalidRequest(_) => false,
        }
    }

    /// The status the service answered, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The problem document the service answered, if it sent one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Status { problem, .. } => problem.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retryable() {
        let status = |status| ClientError::Status {
            service: "s".into(),
            status,
            problem: None,
        };
        assert!(
            ClientError::Timeout {
                service: "s".into(),
                timeout: Duration::from_secs(1)
            }
            .is_retryable()
        );
        assert!(
            ClientError::Connect {
                service: "s".into(),
                message: "refused".into()
            }
            .is_retryable()
        );
        for retryable in [
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::GATEWAY_TIMEOUT,
        ] {
            assert!(status(retryable).is_retryable(), "{retryable}");
        }
        for final_answer in [
            StatusCode::BAD_REQUEST,
            StatusCode::NOT_FOUND,
            StatusCode::CONFLICT,
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::INTERNAL_SERVER_ERROR,
        ] {
            assert!(!status(final_answer).is_retryable(), "{final_answer}");
        }
        assert!(!ClientError::InvalidRequest("x".into()).is_retryable());
    }
}
