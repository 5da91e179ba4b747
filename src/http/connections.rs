//! The HTTP server's connections: a header read timeout (a client that sends half a request
//! header is closed), an idle timeout for keep-alive connections, and a ceiling on open
//! connections, so slow or idle clients cannot exhaust the file limit and starve the others.

use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How the server treats its connections (from `http_header_timeout`, `http_idle_timeout`
/// and `http_max_connections`).
#[derive(Debug, Clone, Copy)]
pub struct Connections {
    /// A request's headers must arrive within this long of the connection waiting for them.
    pub header_timeout: Duration,
    /// A connection with nothing read or written for this long is closed (after the response
    /// in progress, if any; dropped if still silent as long again). One waiting for its next
    /// request is also bounded by `header_timeout` (hyper starts that timer when it waits).
    pub idle_timeout: Duration,
    /// Most connections open at once; further clients wait in the listen backlog until one
    /// closes (at worst `header_timeout` for a client that sends nothing useful).
    pub max: usize,
}

/// Accepts connections until `shutdown`, then closes idle ones and waits for the requests in
/// progress.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    conns: Connections,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(conns.max));
    let max = u32::try_from(conns.max).unwrap_or(u32::MAX);
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: the connections open now will close (the
                    // timeouts see to that); try again shortly instead of spinning.
                    warn!(error = %e, "accepting a connection failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (router, shutdown) = (router.clone(), shutdown.clone());
        tokio::spawn(async move {
            serve_one(stream, peer, router, conns, shutdown).await;
            drop(permit);
        });
    }
    // Every connection gives its permit back when it ends.
    let _all = permits.acquire_many(max).await;
    Ok(())
}

async fn serve_one(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    conns: Connections,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Watched {
        inner: stream,
        started,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move { tower_service::Service::call(&mut router, req).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(conns.header_timeout)
        .keep_alive(true);
    let mut conn = pin!(builder.serve_connection(io, service));
    // Closing: asked to finish the request in progress and close. A connection still silent
    // for another idle timeout after that (a client that stopped reading its response, or
    // stalled mid-body) is dropped.
    let mut closing = false;
    let mut stopping = false;
    loop {
        let limit = if closing {
            conns.idle_timeout * 2
        } else {
            conns.idle_timeout
        };
        let left = limit.saturating_sub(since(started, &activity));
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(error = %e, %peer, "connection closed");
                }
                return;
            }
            () = shutdown.cancelled(), if !stopping => {
                conn.as_mut().graceful_shutdown();
                (closing, stopping) = (true, true);
            }
            () = tokio::time::sleep(left) => {
                if since(started, &activity) < limit {
                    continue;
                }
                if closing {
                    debug!(%peer, "silent connection dropped");
                    return;
                }
                debug!(%peer, "idle connection closed");
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// How long since the connection last read or wrote anything.
fn since(started: Instant, activity: &AtomicU64) -> Duration {
    let last = Duration::from_millis(activity.load(Ordering::Relaxed));
    started.elapsed().saturating_sub(last)
}

/// A TCP stream that notes when it last read or wrote (ms since `started`).
struct Watched {
    inner: TcpStream,
    started: Instant,
    activity: Arc<AtomicU64>,
}

impl Watched {
    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.store(now, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
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
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
