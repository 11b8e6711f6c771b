//! A deadline on reading a request body: a client that sends its headers and then trickles
//! (or never sends) the body gets 408 `body_timeout` after `api.body_timeout_ms`, and the
//! connection is closed, instead of holding a worker's connection for as long as it likes.
//! actix-web's own `client_request_timeout` covers only the head.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::web::{self, Bytes};
use actix_web::HttpMessage;

/// How long a request body may take to arrive (app data).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// The message of the I/O error a late body ends with ([`crate::error::json_error`] turns it
/// into 408).
pub const LATE: &str = "the request body did not arrive in time";

struct Deadline {
    inner: Payload,
    sleep: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl futures_core::Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(x) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(x);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                LATE,
            )))));
        }
        Poll::Pending
    }
}

/// Middleware: put the deadline on the request's body, if it has one.
pub async fn deadline<B: actix_web::body::MessageBody + 'static>(
    mut req: ServiceRequest,
    next: actix_web::middleware::Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    if let Some(t) = req.app_data::<web::Data<BodyTimeout>>().map(|t| t.0) {
        let inner = req.take_payload();
        if matches!(inner, Payload::None) {
            req.set_payload(inner);
        } else {
            let stream: Pin<Box<dyn futures_core::Stream<Item = Result<Bytes, PayloadError>>>> =
                Box::pin(Deadline {
                    inner,
                    sleep: Box::pin(tokio::time::sleep(t)),
                    done: false,
                });
            req.set_payload(Payload::Stream { payload: stream });
        }
    }
    next.call(req).await
}

/// A route's whole body, up to `limit` bytes (413 past it): for routes with a limit of their
/// own (stream records, module uploads) instead of `api.max_body_bytes`. A body that arrives
/// late is 408, one that breaks off 400.
pub async fn read_capped(
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, crate::error::ApiError> {
    use crate::error::{ApiError, ErrorCode};
    let mut body = Vec::new();
    while let Some(chunk) =
        std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut payload), cx)).await
    {
        let chunk = chunk.map_err(|e| {
            if e.to_string().contains(LATE) {
                ApiError::BodyTimeout(LATE.into())
            } else {
                ApiError::bad_request(ErrorCode::InvalidBody, format!("reading the body: {e}"))
            }
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
