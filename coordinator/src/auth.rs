//! The shared token that authenticates agents: checked on every gRPC call, in constant time.

use tonic::metadata::MetadataValue;
use tonic::{Request, Status};
use tracing::warn;

/// The metadata key agents send the token in, as `Bearer <token>`.
pub const HEADER: &str = "authorization";

/// A random token for a run whose agents the coordinator starts itself (128 bits, hex).
pub fn generate() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

/// A tonic interceptor that refuses calls without the right token. `None`: no token required.
pub fn interceptor(token: Option<String>) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    let expected = token.map(|t| format!("Bearer {t}"));
    move |req: Request<()>| {
        let Some(expected) = &expected else { return Ok(req) };
        let from = req
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        match req.metadata().get(HEADER).map(MetadataValue::as_bytes) {
            None => {
                warn!(%from, "refused an agent without a token");
                Err(Status::unauthenticated(
                    "this coordinator requires a token: start the agent with --token or BANDSYNC_TOKEN",
                ))
            }
            Some(got) if constant_time_eq(got, expected.as_bytes()) => Ok(req),
            Some(_) => {
                warn!(%from, "refused an agent with a wrong token");
                Err(Status::unauthenticated(
                    "wrong token: the agent's --token / BANDSYNC_TOKEN differs from the coordinator's",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
        assert_ne!(generate(), generate());
        assert_eq!(generate().len(), 32);
    }

    #[test]
    fn the_interceptor_refuses_missing_and_wrong_tokens() {
        let mut check = interceptor(Some("s3cret".into()));
        let err = check(Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("requires a token"));
        let mut wrong = Request::new(());
        wrong.metadata_mut().insert(HEADER, "Bearer nope".parse().unwrap());
        assert!(check(wrong).unwrap_err().message().contains("wrong token"));
        let mut right = Request::new(());
        right.metadata_mut().insert(HEADER, "Bearer s3cret".parse().unwrap());
        assert!(check(right).is_ok());
        assert!(interceptor(None)(Request::new(())).is_ok());
    }
}
