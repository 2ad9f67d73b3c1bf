//! Idle HTTP/2 connections: hyper's HTTP/1 header-read timeout closes a kept-alive connection
//! that sends no request, but its HTTP/2 server has no such timer, so an idle client could hold
//! a connection slot for ever. [`Activity`] counts a connection's open requests (until their
//! response bodies end: an `/events` stream is open for as long as it streams) and tells the
//! server when the connection has had none for the timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::Frame;
use tokio::time::Instant;

/// Open requests on one connection and when the last one ended.
#[derive(Debug)]
pub(crate) struct Activity {
    open: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            open: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }

    fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Completes once no request has been open for `timeout`.
    pub(crate) async fn idle(&self, timeout: Duration) {
        loop {
            let wait = if self.open.load(Ordering::Acquire) == 0 {
                let since = self.last().elapsed();
                if since >= timeout {
                    return;
                }
                timeout - since
            } else {
                timeout
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Held from a request's start to the end (or drop) of its response body.
struct Open(Arc<Activity>);

impl Open {
    fn start(activity: Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Ordering::AcqRel);
        Open(activity)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Middleware: counts the request as open until its response body is done.
pub(crate) async fn track(
    State(activity): State<Arc<Activity>>,
    request: Request,
    next: Next,
) -> Response {
    let open = Open::start(activity);
    next.run(request)
        .await
        .map(|body| Body::new(Tracked { body, _open: open }))
}

/// A response body that keeps its request counted as open.
struct Tracked {
    body: Body,
    _open: Open,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests;
