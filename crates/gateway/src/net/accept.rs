//! The bounded accept loop both TCP listeners (HTTP and gRPC) share: a slot (a semaphore
//! permit) is taken before `accept`, so excess clients wait in the kernel backlog instead of
//! costing memory, and accept errors (EMFILE) back off instead of spinning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Takes a slot from `slots`, then accepts a connection (backing off on accept errors);
/// `None` once `cancel` fires or `slots` is closed.
pub(crate) async fn accept_bounded(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    cancel: &CancellationToken,
    what: &'static str,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = tokio::select! {
        permit = Arc::clone(slots).acquire_owned() => permit.ok()?,
        () = cancel.cancelled() => return None,
    };
    let mut backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((permit, stream, peer));
                }
                Err(err) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tracing::warn!(%err, ?backoff, "{what} accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
            () = cancel.cancelled() => return None,
        }
    }
}
