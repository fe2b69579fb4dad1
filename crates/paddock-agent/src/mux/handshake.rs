//! The start of every agent session over a microVM's port, outside yamux,
//! so that both ends begin with fresh yamux state.
//!
//! A resumed guest never saw its old host go: its port was connected when
//! the VM was saved and is connected again, so it would go on in the
//! session it had, stream ids and windows included, while the new host
//! starts a new one; the first stream id they disagree on ends the
//! session, and with it the VM. Instead each host session opens with
//! `HELLO(nonce)`, sent every [`RESEND`] until the guest answers
//! `READY(nonce)`, then `GO(nonce)`, after which both speak yamux. The
//! guest discards everything until a HELLO, answers once per nonce, and
//! discards until the GO that matches. A frame starts with 0xFF, which is
//! no yamux version: a guest still in an old session fails on it and
//! starts over, and the next HELLO finds it waiting.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

const MAGIC: [u8; 7] = *b"\xffPDKMUX";
const FRAME: usize = MAGIC.len() + 1 + 8;
/// How often the host says HELLO until the guest answers.
pub(crate) const RESEND: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hello = 1,
    Ready = 2,
    Go = 3,
}

fn frame(kind: Kind, nonce: [u8; 8]) -> [u8; FRAME] {
    let mut f = [0u8; FRAME];
    f[..MAGIC.len()].copy_from_slice(&MAGIC);
    f[MAGIC.len()] = kind as u8;
    f[MAGIC.len() + 1..].copy_from_slice(&nonce);
    f
}

/// Finds handshake frames in a byte stream, whatever comes around them.
#[derive(Default)]
struct Scanner {
    pending: Vec<u8>,
}

impl Scanner {
    /// Takes `bytes`; returns the frames completed and, after the first
    /// frame `stop` accepts, the bytes that followed it (which belong to
    /// what comes next).
    fn push(
        &mut self,
        bytes: &[u8],
        mut stop: impl FnMut(Kind, [u8; 8]) -> bool,
    ) -> Option<Vec<u8>> {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        while let Some(found) = find(&self.pending[at..], &MAGIC) {
            let start = at + found;
            if self.pending.len() < start + FRAME {
                at = start;
                break;
            }
            let kind = match self.pending[start + MAGIC.len()] {
                1 => Some(Kind::Hello),
                2 => Some(Kind::Ready),
                3 => Some(Kind::Go),
                _ => None,
            };
            let mut nonce = [0u8; 8];
            nonce.copy_from_slice(&self.pending[start + MAGIC.len() + 1..start + FRAME]);
            at = start + FRAME;
            if kind.is_some_and(|k| stop(k, nonce)) {
                let rest = self.pending[at..].to_vec();
                self.pending.clear();
                return Some(rest);
            }
        }
        // Keep only what may be the start of a frame cut by the read.
        let keep_from = if find(&self.pending[at..], &MAGIC).is_some() {
            at
        } else {
            self.pending.len().saturating_sub(FRAME - 1).max(at)
        };
        self.pending.drain(..keep_from);
        None
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A fresh nonce: the clock and the process, enough to tell one host
/// session from the one before it.
fn nonce() -> [u8; 8] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 40)).to_le_bytes()
}

/// The host's side: returns the channel, ready for yamux.
pub(crate) async fn host<C>(mut channel: C) -> io::Result<Prefixed<C>>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let nonce = nonce();
    let mut scanner = Scanner::default();
    let mut buf = [0u8; 512];
    loop {
        channel.write_all(&frame(Kind::Hello, nonce)).await?;
        channel.flush().await?;
        let read = match tokio::time::timeout(RESEND, channel.read(&mut buf)).await {
            Err(_) => continue,
            Ok(read) => read?,
        };
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let ready = |k: Kind, n: [u8; 8]| k == Kind::Ready && n == nonce;
        if let Some(rest) = scanner.push(&buf[..read], ready) {
            channel.write_all(&frame(Kind::Go, nonce)).await?;
            channel.flush().await?;
            return Ok(Prefixed::new(rest, channel));
        }
    }
}

/// The guest's side: returns the channel, ready for yamux.
pub(crate) async fn guest<C>(mut channel: C) -> io::Result<Prefixed<C>>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut scanner = Scanner::default();
    let mut answered: Option<[u8; 8]> = None;
    let mut buf = [0u8; 512];
    loop {
        let read = channel.read(&mut buf).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut hellos = Vec::new();
        let seen = answered;
        let go = scanner.push(&buf[..read], |kind, nonce| match kind {
            Kind::Hello => {
                hellos.push(nonce);
                false
            }
            Kind::Go => Some(nonce) == seen || hellos.last() == Some(&nonce),
            Kind::Ready => false,
        });
        for nonce in hellos {
            if answered != Some(nonce) {
                channel.write_all(&frame(Kind::Ready, nonce)).await?;
                channel.flush().await?;
                answered = Some(nonce);
            }
        }
        if let Some(rest) = go {
            return Ok(Prefixed::new(rest, channel));
        }
    }
}

/// A channel with bytes already read from it in front.
pub(crate) struct Prefixed<C> {
    prefix: Vec<u8>,
    at: usize,
    inner: C,
}

impl<C> Prefixed<C> {
    pub(crate) fn new(prefix: Vec<u8>, inner: C) -> Self {
        Self {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Prefixed<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = out.remaining().min(self.prefix.len() - self.at);
            let at = self.at;
            out.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Prefixed<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_found_across_reads_and_what_follows_is_kept() {
        let mut s = Scanner::default();
        let go = frame(Kind::Go, [7; 8]);
        let mut stream = b"stale yamux bytes".to_vec();
        stream.extend_from_slice(&go);
        stream.extend_from_slice(b"yamux");
        let (a, b) = stream.split_at(20);
        assert_eq!(s.push(a, |k, n| k == Kind::Go && n == [7; 8]), None);
        assert_eq!(
            s.push(b, |k, n| k == Kind::Go && n == [7; 8]),
            Some(b"yamux".to_vec())
        );
    }

    /// A guest still in an old session (here: bytes of it in front) and
    /// a host that starts over meet in a fresh session, with the bytes
    /// after the handshake intact.
    #[tokio::test]
    async fn both_ends_meet_whatever_came_before() {
        let (host_end, mut guest_end) = tokio::net::UnixStream::pair().expect("pair");
        guest_end.write_all(b"old session").await.expect("stale");
        let host = tokio::spawn(async move {
            let mut c = super::host(host_end).await.expect("host");
            c.write_all(b"after").await.expect("write");
            let mut back = [0u8; 4];
            c.read_exact(&mut back).await.expect("read");
            back
        });
        let mut g = super::guest(guest_end).await.expect("guest");
        let mut got = [0u8; 5];
        g.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"after");
        g.write_all(b"back").await.expect("write");
        assert_eq!(&host.await.expect("host"), b"back");
    }
}
