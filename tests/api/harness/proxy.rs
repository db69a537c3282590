//! A small TCP proxy between one instance and Redis, so the fault run can cut
//! or slow that instance's link alone.
//!
//! - `Link::Open`: bytes pass, each chunk delayed by the configured latency
//!   (a constant delay per chunk, not a bandwidth cap: chunks are time-stamped
//!   on arrival and released in order when due).
//! - `Link::Blackhole`: a partition: connections stay up and new ones are
//!   accepted, but nothing is delivered until the link heals (as TCP would
//!   retransmit after a partition ends).
//! - `Link::Reset`: every open connection is closed and new ones are closed at
//!   once, as when the peer's host is unreachable.
//!
//! Apart from the link, [`Proxy::darken_subscribers`] blackholes only the
//! connections that sent a `SUBSCRIBE`: a pub/sub connection that dies
//! silently while commands still flow.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Open = 0,
    Blackhole = 1,
    Reset = 2,
}

struct State {
    upstream: u16,
    link: AtomicU8,
    latency_ms: AtomicU64,
    /// Whether connections that subscribed are blackholed.
    subscribers_dark: AtomicBool,
    /// Bumped to close every open connection.
    resets: watch::Sender<u64>,
}

impl State {
    fn link(&self) -> Link {
        match self.link.load(Ordering::SeqCst) {
            1 => Link::Blackhole,
            2 => Link::Reset,
            _ => Link::Open,
        }
    }
}

pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        let (resets, _) = watch::channel(0u64);
        let state = Arc::new(State {
            upstream,
            link: AtomicU8::new(Link::Open as u8),
            latency_ms: AtomicU64::new(0),
            subscribers_dark: AtomicBool::new(false),
            resets,
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if st.link() == Link::Reset {
                    drop(client);
                    continue;
                }
                tokio::spawn(connection(client, st.clone()));
            }
        });
        Self {
            port,
            state,
            accept,
        }
    }

    pub fn set_link(&self, link: Link) {
        self.state.link.store(link as u8, Ordering::SeqCst);
        if link == Link::Reset {
            self.state.resets.send_modify(|n| *n += 1);
        }
    }

    pub fn set_latency(&self, latency: Duration) {
        self.state
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// Blackholes (or no longer) the connections that sent a `SUBSCRIBE`.
    pub fn darken_subscribers(&self, dark: bool) {
        self.state.subscribers_dark.store(dark, Ordering::SeqCst);
    }

    /// Back to an open link with no added latency.
    pub fn heal(&self) {
        self.set_latency(Duration::ZERO);
        self.darken_subscribers(false);
        self.set_link(Link::Open);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.resets.send_modify(|n| *n += 1);
    }
}

async fn connection(client: TcpStream, st: Arc<State>) {
    let mut resets = st.resets.subscribe();
    let Ok(server) = TcpStream::connect(("127.0.0.1", st.upstream)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let subscriber = Arc::new(AtomicBool::new(false));
    tokio::select! {
        _ = async { tokio::join!(
            direction(cr, sw, st.clone(), subscriber.clone(), true),
            direction(sr, cw, st.clone(), subscriber.clone(), false),
        ) } => {}
        _ = resets.changed() => {}
    }
}

/// Copies one direction: a reader time-stamps chunks, a writer releases each
/// when due and while the link is not blackholed.
async fn direction(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    st: Arc<State>,
    subscriber: Arc<AtomicBool>,
    from_client: bool,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let st2 = st.clone();
    let marked = subscriber.clone();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if from_client
                        && buf[..n]
                            .windows(9)
                            .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
                    {
                        marked.store(true, Ordering::SeqCst);
                    }
                    let due = Instant::now()
                        + Duration::from_millis(st2.latency_ms.load(Ordering::SeqCst));
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            while st.link() == Link::Blackhole
                || (st.subscribers_dark.load(Ordering::SeqCst) && subscriber.load(Ordering::SeqCst))
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
