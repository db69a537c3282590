//! The TCP connection under the HTTP library, for the two things it cannot be
//! told from above:
//!
//! - **Errors it makes before any middleware runs.** actix-http refuses a head
//!   it cannot parse or hold (a request target over 64 KiB, a head over
//!   128 KiB, more than 96 fields, a head that never completes) with a bare
//!   `400` / `431` / `408` and no body, then closes the connection. That answer
//!   is the last thing written on the connection, so [`Conn`] recognises it at
//!   the end of what is written (a response head with `content-length: 0` and
//!   no `x-request-id`, which every response of the service carries) and
//!   writes the contract's JSON error instead: `414 URI_TOO_LONG` when the
//!   request line was over [`MAX_URI_BYTES`](super::middleware::MAX_URI_BYTES),
//!   else `431 HEADERS_TOO_LARGE`, `400 INVALID_REQUEST` or
//!   `408 REQUEST_TIMEOUT`.
//! - **Draining.** On SIGTERM the library would close idle keep-alive
//!   connections at once, racing a proxy that has just sent a request on one
//!   (nginx answers that `502` and never retries a POST). Instead the server
//!   is built without that signal: idle connections stay open, the next
//!   request on each is answered with `Connection: close` (see the front-door
//!   middleware), and a connection that stays quiet for [`DRAIN_IDLE_CLOSE`]
//!   (from its last answer or the start of the drain, whichever is later) is
//!   closed (or at the shutdown bound).

use super::middleware::MAX_URI_BYTES;
use actix_web::rt::net::TcpStream;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// While draining, an idle connection is closed this long after its last
/// answer. Shorter than a proxy's fail timeout (nginx's `fail_timeout=2s` in
/// `deploy/nginx.conf`), so by the time the proxy tries this instance again
/// the connection is gone from its pool rather than closing under it.
pub const DRAIN_IDLE_CLOSE: Duration = Duration::from_secs(1);

/// Longest bare error head of the HTTP library looked for.
const MAX_BARE_HEAD: usize = 512;

/// Written bytes held at most before they must reach the socket.
const MAX_PENDING: usize = 64 * 1024;

/// One accepted connection (see the module documentation).
pub struct Conn {
    io: TcpStream,
    /// Bytes the library wrote that have not reached the socket yet.
    pending: Vec<u8>,
    /// Set by a write, cleared by the next read: the last thing that
    /// happened was an answer, so the connection is between requests.
    answered: bool,
    /// When the last answer was written.
    last_write: Instant,
    /// Length of the first line read since the last answer (the request
    /// line), and whether it has ended.
    line_len: usize,
    line_done: bool,
    draining: watch::Receiver<bool>,
    /// Resolves when draining starts (so an idle connection wakes up).
    drain_started: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// When this connection first saw the drain.
    drain_seen: Option<Instant>,
    idle_close: Option<Pin<Box<Sleep>>>,
}

impl Conn {
    pub fn new(io: TcpStream, draining: watch::Receiver<bool>) -> Self {
        let mut rx = draining.clone();
        Self {
            io,
            pending: Vec::new(),
            answered: false,
            last_write: Instant::now(),
            line_len: 0,
            line_done: false,
            draining,
            drain_started: Some(Box::pin(async move {
                let _ = rx.wait_for(|d| *d).await;
            })),
            drain_seen: None,
            idle_close: None,
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.io
    }

    fn on_read(&mut self, bytes: &[u8]) {
        if self.answered {
            self.answered = false;
            self.line_len = 0;
            self.line_done = false;
        }
        self.idle_close = None;
        if self.line_done {
            return;
        }
        match bytes.iter().position(|b| *b == b'\n') {
            Some(i) => {
                self.line_len += i;
                // Empty lines before the request line are allowed (RFC 9112).
                self.line_done = self.line_len > 1;
                if !self.line_done {
                    self.line_len = 0;
                }
            }
            None => self.line_len += bytes.len(),
        }
    }

    /// Whether the connection should end now: draining, and quiet for
    /// [`DRAIN_IDLE_CLOSE`] since its last answer and since the drain began.
    /// Registers the wake-ups that matter.
    fn poll_idle_close(&mut self, cx: &mut Context<'_>) -> bool {
        if !*self.draining.borrow() {
            let started = self
                .drain_started
                .as_mut()
                .is_some_and(|f| f.as_mut().poll(cx).is_ready());
            if !started {
                return false;
            }
            self.drain_started = None;
        }
        let drain_seen = *self.drain_seen.get_or_insert_with(Instant::now);
        if !self.answered {
            return false;
        }
        // Quiet for the whole period, counted from the later of the last
        // answer and the start of the drain: a connection that was idle long
        // before SIGTERM is not closed at once (a proxy may be about to use it).
        let at = self.last_write.max(drain_seen) + DRAIN_IDLE_CLOSE;
        let timer = self
            .idle_close
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// Replaces a bare error answer of the HTTP library at the end of
    /// `pending` with the contract's JSON error.
    fn rewrite_bare_error(&mut self) {
        let Some(start) = bare_error_start(&self.pending) else {
            return;
        };
        let status = &self.pending[start + 9..start + 12];
        let (status_line, code, message) = match status {
            b"431" | b"400" if self.line_len > MAX_URI_BYTES => (
                "414 URI Too Long",
                "URI_TOO_LONG",
                format!("the request URI is longer than {MAX_URI_BYTES} bytes"),
            ),
            b"431" => (
                "431 Request Header Fields Too Large",
                "HEADERS_TOO_LARGE",
                "the request head is too large (at most 64 header fields and 32 KiB of headers)"
                    .to_string(),
            ),
            b"408" => (
                "408 Request Timeout",
                "REQUEST_TIMEOUT",
                "the request head did not arrive in time".to_string(),
            ),
            _ => (
                "400 Bad Request",
                "INVALID_REQUEST",
                "the request is not valid HTTP/1.1".to_string(),
            ),
        };
        let body = serde_json::json!({
            "error": {"code": code, "message": message, "details": []}
        })
        .to_string();
        let head = format!(
            "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        self.pending.truncate(start);
        self.pending.extend_from_slice(head.as_bytes());
        self.pending.extend_from_slice(body.as_bytes());
    }

    /// Writes `pending` to the socket.
    fn poll_drain_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.rewrite_bare_error();
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

/// Where a bare error answer of the HTTP library starts, if `buf` ends with
/// one: a `400`, `408` or `431` response head with an empty body and without
/// the `x-request-id` every answer of the service carries.
fn bare_error_start(buf: &[u8]) -> Option<usize> {
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let body_end = buf.len() - 4;
    // The last status line, with nothing but header lines after it. The
    // library's error heads are short: look only at the tail (so the end of a
    // large chunked response costs no scan of all of it).
    let from = body_end.saturating_sub(MAX_BARE_HEAD);
    let start = from
        + buf[from..body_end]
            .windows(7)
            .rposition(|w| w == b"HTTP/1.")?;
    if buf[start..body_end].windows(4).any(|w| w == b"\r\n\r\n") {
        return None;
    }
    let head = &buf[start..];
    let status_ok = head.len() > 12
        && (head.starts_with(b"HTTP/1.1 ") || head.starts_with(b"HTTP/1.0 "))
        && matches!(&head[9..12], b"400" | b"408" | b"431");
    if !status_ok {
        return None;
    }
    let lower = head.to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    (has(b"\r\ncontent-length: 0\r\n") && !has(b"\r\nx-request-id:")).then_some(start)
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        // Read first: a request that has arrived is always served, never
        // dropped by an idle close decided a moment too late.
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                result?;
                let new = &buf.filled()[before..];
                if !new.is_empty() {
                    this.on_read(new);
                }
                Poll::Ready(Ok(()))
            }
            // Nothing to read: end of stream if the drain says so (the
            // library then closes the connection cleanly).
            Poll::Pending if this.poll_idle_close(cx) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() >= MAX_PENDING {
            ready!(this.poll_drain_pending(cx))?;
        }
        this.pending.extend_from_slice(buf);
        this.answered = true;
        this.last_write = Instant::now();
        this.idle_close = None;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain_pending(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain_pending(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::bare_error_start;

    #[test]
    fn only_a_bare_library_error_at_the_end_is_recognised() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\ndate: x\r\n\r\n";
        assert_eq!(bare_error_start(bare), Some(0));
        let mut after_ok =
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-request-id: a\r\n\r\n{}".to_vec();
        let at = after_ok.len();
        after_ok.extend_from_slice(bare);
        assert_eq!(bare_error_start(&after_ok), Some(at));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-request-id: a\r\n\r\n";
        assert_eq!(bare_error_start(ours), None);
        let ok = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(bare_error_start(ok), None);
        assert_eq!(bare_error_start(b"data: {}\n\n"), None);
    }
}
