//! A loopback TCP proxy for fault injection: it listens on `127.0.0.1:0`, forwards every
//! connection to a target, and misbehaves on request.
//!
//! - [`Mode::Pass`]: bytes are copied both ways.
//! - [`Mode::Reset`]: a new connection is accepted and at once closed with `SO_LINGER 0`
//!   (the client sees a reset); the target is never contacted.
//! - [`Mode::Http503`]: the next `remaining` HTTP requests (on new or established
//!   connections of an [`http`](Proxy::http) proxy) are read whole and answered
//!   `HTTP/1.1 503 Slow Down` by the proxy itself, then the mode goes back to `Pass`.
//!
//! [`Proxy::reset_established`] kills every live proxied connection (both sides reset).
//!
//! An HTTP proxy reads the requests it forwards (headers, then a `Content-Length` body), so
//! that a mode change applies at the next request even on a kept-alive connection; responses
//! are copied as they come. It assumes no pipelining (true of hyper-based clients). A request
//! with a chunked body switches its connection to plain copying.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with connections and requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Reset every new connection at once.
    Reset,
    /// Answer the next `remaining` HTTP requests with a 503 (HTTP proxies only), then pass.
    Http503 {
        /// Requests still to refuse.
        remaining: u32,
    },
}

/// What the proxy did, so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections reset on accept ([`Mode::Reset`]).
    pub reset_on_accept: u64,
    /// Established connections killed by [`Proxy::reset_established`].
    pub reset_established: u64,
    /// Requests answered 503 by the proxy.
    pub answered_503: u64,
    /// HTTP requests forwarded to the target.
    pub forwarded_requests: u64,
    /// Bytes copied from the target to clients.
    pub bytes_to_clients: u64,
}

struct State {
    target: SocketAddr,
    http: bool,
    mode: Mutex<Mode>,
    /// Bumped by `reset_established`: every connection alive at that moment dies.
    kill: watch::Sender<u64>,
    accepted: AtomicU64,
    reset_on_accept: AtomicU64,
    reset_established: AtomicU64,
    answered_503: AtomicU64,
    forwarded_requests: AtomicU64,
    bytes_to_clients: AtomicU64,
}

impl State {
    /// Takes one 503 from the budget if the mode asks for one.
    fn take_503(&self) -> bool {
        let mut mode = self.mode.lock().unwrap();
        match *mode {
            Mode::Http503 { remaining } if remaining > 0 => {
                *mode = if remaining == 1 {
                    Mode::Pass
                } else {
                    Mode::Http503 {
                        remaining: remaining - 1,
                    }
                };
                true
            }
            _ => false,
        }
    }
}

/// A running proxy; stops accepting when dropped (live connections are killed too).
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept_loop: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
        self.state.kill.send_modify(|g| *g += 1);
    }
}

impl Proxy {
    /// A plain TCP proxy to `target` (any protocol; [`Mode::Http503`] acts as `Pass`).
    pub async fn tcp(target: SocketAddr) -> Proxy {
        Proxy::start(target, false).await
    }

    /// An HTTP/1.1 proxy to `target`: [`Mode::Http503`] applies at request boundaries.
    pub async fn http(target: SocketAddr) -> Proxy {
        Proxy::start(target, true).await
    }

    async fn start(target: SocketAddr, http: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            target,
            http,
            mode: Mutex::new(Mode::Pass),
            kill: watch::channel(0).0,
            accepted: AtomicU64::new(0),
            reset_on_accept: AtomicU64::new(0),
            reset_established: AtomicU64::new(0),
            answered_503: AtomicU64::new(0),
            forwarded_requests: AtomicU64::new(0),
            bytes_to_clients: AtomicU64::new(0),
        });
        let accept_state = Arc::clone(&state);
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                accept_state.accepted.fetch_add(1, Ordering::Relaxed);
                if *accept_state.mode.lock().unwrap() == Mode::Reset {
                    accept_state.reset_on_accept.fetch_add(1, Ordering::Relaxed);
                    let _ = client.set_zero_linger();
                    drop(client);
                    continue;
                }
                tokio::spawn(serve(Arc::clone(&accept_state), client));
            }
        });
        Proxy {
            addr,
            state,
            accept_loop,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the mode (applies to new connections, and for HTTP proxies to the next request
    /// on established ones).
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// The current mode (`Http503` turns into `Pass` once its budget is spent).
    pub fn mode(&self) -> Mode {
        *self.state.mode.lock().unwrap()
    }

    /// Kills every live proxied connection: both the client's and the target's side are
    /// reset (`SO_LINGER 0`).
    pub fn reset_established(&self) {
        self.state.kill.send_modify(|g| *g += 1);
    }

    /// What the proxy did so far.
    pub fn counts(&self) -> Counts {
        let s = &self.state;
        Counts {
            accepted: s.accepted.load(Ordering::Relaxed),
            reset_on_accept: s.reset_on_accept.load(Ordering::Relaxed),
            reset_established: s.reset_established.load(Ordering::Relaxed),
            answered_503: s.answered_503.load(Ordering::Relaxed),
            forwarded_requests: s.forwarded_requests.load(Ordering::Relaxed),
            bytes_to_clients: s.bytes_to_clients.load(Ordering::Relaxed),
        }
    }
}

/// One proxied connection, until either side closes or `reset_established` kills it.
async fn serve(state: Arc<State>, mut client: TcpStream) {
    let mut kill = state.kill.subscribe();
    kill.mark_unchanged();
    let Ok(mut upstream) = TcpStream::connect(state.target).await else {
        // The target is down: the client sees a reset, as if it were.
        let _ = client.set_zero_linger();
        return;
    };
    let _ = upstream.set_nodelay(true);
    let killed = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let pump = pump(
            &state,
            client_read,
            client_write,
            upstream_read,
            upstream_write,
        );
        tokio::select! {
            () = pump => false,
            _ = kill.changed() => true,
        }
    };
    if killed {
        state.reset_established.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_zero_linger();
        let _ = upstream.set_zero_linger();
    }
}

/// Copies both ways until both directions are done.
async fn pump(
    state: &State,
    mut client_read: ReadHalf<'_>,
    client_write: WriteHalf<'_>,
    upstream_read: ReadHalf<'_>,
    mut upstream_write: WriteHalf<'_>,
) {
    let client_write = tokio::sync::Mutex::new(client_write);
    let requests = async {
        if state.http {
            forward_requests(state, &mut client_read, &client_write, &mut upstream_write).await;
        } else {
            let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        }
        let _ = upstream_write.shutdown().await;
    };
    let responses = async {
        let mut upstream_read = upstream_read;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match upstream_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    state
                        .bytes_to_clients
                        .fetch_add(n as u64, Ordering::Relaxed);
                    if client_write
                        .lock()
                        .await
                        .write_all(&buf[..n])
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = client_write.lock().await.shutdown().await;
    };
    tokio::join!(requests, responses);
}

const RESPONSE_503: &[u8] = b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\n\r\n";

/// Reads HTTP requests from the client one at a time; each is answered 503 by the proxy or
/// forwarded, as the mode says at that moment.
async fn forward_requests(
    state: &State,
    client_read: &mut ReadHalf<'_>,
    client_write: &tokio::sync::Mutex<WriteHalf<'_>>,
    upstream_write: &mut WriteHalf<'_>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Headers.
        let head_end = loop {
            if let Some(pos) = find(&buf, b"\r\n\r\n") {
                break pos + 4;
            }
            match client_read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        if head.contains("transfer-encoding: chunked") {
            // Not delimited by a length: copy the rest of the connection as it comes.
            state.forwarded_requests.fetch_add(1, Ordering::Relaxed);
            if upstream_write.write_all(&buf).await.is_err() {
                return;
            }
            let _ = tokio::io::copy(client_read, upstream_write).await;
            return;
        }
        let body_len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let refuse = state.take_503();
        if refuse {
            state.answered_503.fetch_add(1, Ordering::Relaxed);
        } else {
            state.forwarded_requests.fetch_add(1, Ordering::Relaxed);
        }
        // Forward (or swallow) the head and the body, streaming large bodies.
        let mut left = head_end + body_len;
        loop {
            let take = left.min(buf.len());
            if !refuse && upstream_write.write_all(&buf[..take]).await.is_err() {
                return;
            }
            buf.drain(..take);
            left -= take;
            if left == 0 {
                break;
            }
            match client_read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        if refuse
            && client_write
                .lock()
                .await
                .write_all(RESPONSE_503)
                .await
                .is_err()
        {
            return;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
