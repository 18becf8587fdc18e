//! Request bodies that are read to their end after an early answer.
//!
//! Many refusals are answered before the body is read (bad credentials, a rate limit, an
//! unknown webhook). If the server then closed the connection with the rest of the body still
//! arriving, the kernel would reset it, and a client still sending could lose the answer and
//! see only "connection reset" — a sender would retry a 401 it never saw. Instead, a body its
//! handler dropped unfinished is read to its end (and thrown away) by a task of its own, so the
//! connection stays usable: at most [`DRAIN_LIMIT`] bytes in all and for at most
//! [`DRAIN_TIME`], never past the request's own deadline. A body too large or too slow for that
//! is dropped, and hyper closes the connection as before.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

/// The most bytes of one request body (read by the handler and drained) the server reads to
/// keep a connection open after an early answer: the largest body any route accepts.
pub const DRAIN_LIMIT: u64 = 1024 * 1024;

/// The longest a dropped body is drained.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Wraps `body` so that, if its handler drops it unfinished, the rest is drained before
/// `deadline` (see the module documentation).
pub fn lingering(body: Body, deadline: Instant) -> Body {
    Body::new(Lingering {
        inner: Some(body),
        read: 0,
        deadline,
    })
}

struct Lingering {
    inner: Option<Body>,
    read: u64,
    deadline: Instant,
}

impl HttpBody for Lingering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |data| data.len() as u64);
                self.read = self.read.saturating_add(len);
            }
            // Finished or failed: nothing is left to drain.
            Poll::Ready(None | Some(Err(_))) => self.inner = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(rest) = self.inner.take() else {
            return;
        };
        if rest.is_end_stream() {
            return;
        }
        let budget = DRAIN_LIMIT.saturating_sub(self.read);
        // A body announced larger than what is left is not worth reading.
        if rest.size_hint().lower() > budget {
            return;
        }
        let deadline = self.deadline.min(Instant::now() + DRAIN_TIME);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let _ = tokio::time::timeout_at(deadline, drain(rest, budget)).await;
        });
    }
}

/// Reads `body` to its end or until more than `budget` bytes came; either way it is dropped
/// then (at the end, hyper keeps the connection; before it, hyper closes it).
async fn drain(body: Body, budget: u64) {
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        read = read.saturating_add(chunk.len() as u64);
        if read > budget {
            return;
        }
    }
}
