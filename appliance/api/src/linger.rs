//! A lingering close for HTTP/1.1 connections.
//!
//! When hyper refuses a request it has not read to the end (a head over
//! its bounds: 431), it writes the answer and shuts the connection down.
//! Closing a socket with unread input makes the kernel send a reset, and a
//! client still sending its request (most do not read before they have
//! sent everything) loses the answer with it: a broken pipe, or an empty
//! reply. So, after the shutdown, what the client still sends is read and
//! thrown away until it closes its side, or a bound is reached (RFC 9112,
//! 9.6).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a closed connection waits for its client to stop sending.
const LINGER_FOR: Duration = Duration::from_secs(2);
/// How much it reads, at most, while it waits.
const LINGER_BYTES: usize = 4 << 20;

/// A stream whose shutdown also drains the client's input, within bounds.
#[derive(Debug)]
pub struct Lingering<S> {
    inner: S,
    linger: Option<Linger>,
}

#[derive(Debug)]
struct Linger {
    deadline: Pin<Box<Sleep>>,
    drained: usize,
}

impl<S> Lingering<S> {
    pub fn new(inner: S) -> Lingering<S> {
        Lingering { inner, linger: None }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Lingering<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let linger = match &mut this.linger {
            Some(linger) => linger,
            None => {
                ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                let deadline = Box::pin(tokio::time::sleep(LINGER_FOR));
                this.linger.insert(Linger { deadline, drained: 0 })
            }
        };
        let mut scratch = [0u8; 8192];
        loop {
            if linger.deadline.as_mut().poll(cx).is_ready() || linger.drained >= LINGER_BYTES {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf)) {
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Ok(()) => linger.drained += buf.filled().len(),
                // The client has gone; the shutdown itself went through.
                Err(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}
