//! The accept loop in front of the gRPC server, plaintext or TLS.
//!
//! - A connection is handed to the HTTP/2 server only once its client has sent something (the
//!   HTTP/2 preface, or a TLS ClientHello) within [`FIRST_BYTES_TIMEOUT`]; a silent socket is
//!   closed then, and until then costs a file descriptor and a small task, nothing of the
//!   server's.
//! - At most `max_connections` connections are open (waiting or served); beyond, new ones wait
//!   in the kernel's accept queue.
//! - When the process runs out of file descriptors (`EMFILE`/`ENFILE`) the loop backs off
//!   (100 ms) instead of spinning, and says so once per 10 s with a count, not once per attempt.
//!   [`raise_fd_limit`] lifts the soft limit to the hard one at start, so that takes far more
//!   connections than the common soft default of 1,024.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
};
use tonic::transport::server::Connected;

use crate::log_limit::LogThrottle;

/// How long a new connection may stay silent before it is closed.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the accept loop pauses when the process has no file descriptor left.
const EMFILE_BACKOFF: Duration = Duration::from_millis(100);

/// Raises the soft open-files limit to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(error.message = %error, "cannot raise the open-files limit");
            None
        }
    }
}

/// Descriptors kept back from the connection cap for the database pool, files and the like.
const FD_RESERVE: u64 = 128;

/// The connection cap that fits under an open-files limit: `configured`, or fewer if the limit
/// (less a reserve for database connections and files) is lower, so that clients can never
/// take the descriptors the server needs to answer them.
pub fn connection_cap(configured: usize, fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let fits = usize::try_from(limit.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX);
    if fits < configured {
        tracing::warn!(
            configured,
            open_files_limit = limit,
            cap = fits,
            "the open-files limit allows fewer connections than --max-connections; capping"
        );
    }
    configured.min(fits)
}

/// A served connection; its slot of the connection cap is freed when it closes.
pub struct Counted<IO> {
    inner: IO,
    _slot: OwnedSemaphorePermit,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<IO: Connected> Connected for Counted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Logs an accept failure, at most one line per 10 s (the rest are counted).
fn log_failure(throttle: &LogThrottle, error: &std::io::Error, fd_exhausted: bool) {
    if fd_exhausted {
        crate::throttled!(
            throttle,
            warn,
            error.message = %error,
            "out of file descriptors: not accepting for 100 ms at a time (raise the open-files limit or --max-connections lower)"
        );
    } else {
        crate::throttled!(throttle, warn, error.message = %error, "accept failed");
    }
}

fn is_fd_exhaustion(error: &std::io::Error) -> bool {
    // EMFILE (24) and ENFILE (23) on Linux and the BSDs.
    matches!(error.raw_os_error(), Some(23 | 24))
}

/// Waits until the client has sent its first bytes (left in the socket for the server to read);
/// `false` if it closed first. (`readable()` alone may wake without data.)
pub async fn first_bytes(socket: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(socket.peek(&mut byte).await, Ok(n) if n > 0)
}

/// Accepts connections, prepares each (`prepare` gets it once the client has spoken, and may
/// refuse it with `None`), and hands them out, at most `max_connections` open at once.
pub fn incoming<IO, F, Fut>(
    listener: TcpListener,
    max_connections: usize,
    prepare: F,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Counted<IO>>>
where
    IO: Send + 'static,
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<IO>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let prepare = Arc::new(prepare);
    tokio::spawn(async move {
        let failures = LogThrottle::new();
        loop {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let (socket, peer) = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        let exhausted = is_fd_exhaustion(&error);
                        log_failure(&failures, &error, exhausted);
                        let pause = if exhausted { EMFILE_BACKOFF } else { Duration::from_millis(5) };
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                },
            };
            let _ = socket.set_nodelay(true);
            let tx = tx.clone();
            let prepare = Arc::clone(&prepare);
            tokio::spawn(async move {
                let ready = tokio::time::timeout(FIRST_BYTES_TIMEOUT, async {
                    if !first_bytes(&socket).await {
                        return None;
                    }
                    prepare(socket, peer).await
                })
                .await;
                match ready {
                    Ok(Some(io)) => {
                        let _ = tx
                            .send(Ok(Counted {
                                inner: io,
                                _slot: slot,
                            }))
                            .await;
                    }
                    Ok(None) => {}
                    Err(_) => tracing::debug!(%peer, "connection silent too long; closed"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_the_server() {
        assert_eq!(connection_cap(10_000, Some(1_048_576)), 10_000);
        assert_eq!(connection_cap(10_000, Some(1_024)), 896);
        assert_eq!(connection_cap(100, Some(1_024)), 100);
        assert_eq!(connection_cap(10_000, Some(20)), 16);
        assert_eq!(connection_cap(10_000, None), 10_000);
    }
}
