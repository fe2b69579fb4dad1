//! Many agent connections over the one byte stream a microVM has to its
//! host (a virtio-serial port), multiplexed with yamux.
//!
//! The agent protocol is one request per connection. On the host, the VM's
//! monitor listens on the sandbox's `agent.sock` exactly as a container's
//! agent does, and turns each connection it accepts into a yamux stream;
//! in the guest, each stream becomes a connection handed to the ordinary
//! request handler. Everything above this module (exec, files, PTYs) is
//! the same code for containers and microVMs.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::poll_fn;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

mod handshake;

type Opened = oneshot::Sender<Result<yamux::Stream, yamux::ConnectionError>>;

fn config() -> yamux::Config {
    let mut c = yamux::Config::default();
    // An agent connection carries a whole exec's output; the default
    // allowance of streams is far above what one sandbox opens.
    c.set_max_num_streams(1024);
    c
}

/// The host side: serves every connection accepted on `listener` as a
/// stream over `channel`, for one session: until the channel closes (the
/// VM is gone) or the session fails.
/// Without `handshake` (a guest whose agent predates it) the session is
/// yamux from the first byte.
pub async fn serve_host<C>(channel: C, listener: &UnixListener, handshake: bool) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let channel = if handshake {
        handshake::host(channel).await?
    } else {
        handshake::Prefixed::new(Vec::new(), channel)
    };
    let mut connection = yamux::Connection::new(channel.compat(), config(), yamux::Mode::Client);
    let (open_tx, mut open_rx) = mpsc::channel::<Opened>(64);
    let mut driver = tokio::spawn(async move { drive_client(&mut connection, &mut open_rx).await });
    let accept = async {
        loop {
            let (local, _) = listener.accept().await?;
            let (tx, rx) = oneshot::channel();
            if open_tx.send(tx).await.is_err() {
                return Ok::<_, io::Error>(());
            }
            tokio::spawn(async move {
                if let Ok(Ok(stream)) = rx.await {
                    splice(local, stream).await;
                }
            });
        }
    };
    let ended = tokio::select! {
        r = accept => r,
        _ = &mut driver => Ok(()),
    };
    // The session's connection goes with it, so the next can take the port.
    driver.abort();
    ended
}

/// Drives a client connection: opens a stream for each request on
/// `open_rx` and keeps the connection's I/O moving. Returns when the
/// connection ends.
async fn drive_client<T>(
    connection: &mut yamux::Connection<T>,
    open_rx: &mut mpsc::Receiver<Opened>,
) where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let mut waiting: Option<Opened> = None;
    poll_fn(|cx| loop {
        if waiting.is_none() {
            match open_rx.poll_recv(cx) {
                Poll::Ready(Some(tx)) => waiting = Some(tx),
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => {}
            }
        }
        if let Some(tx) = waiting.take() {
            match connection.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => {
                    let _ = tx.send(Ok(stream));
                    continue;
                }
                Poll::Ready(Err(e)) => {
                    let _ = tx.send(Err(e));
                    return Poll::Ready(());
                }
                Poll::Pending => waiting = Some(tx),
            }
        }
        // Polling for inbound streams is what moves the connection's
        // bytes; the guest never opens any, so one that does is dropped.
        match connection.poll_next_inbound(cx) {
            Poll::Ready(Some(Ok(_))) => continue,
            Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// The guest side: serves streams arriving over `channel`, each handed to
/// `handle` as a unix stream, until the channel closes.
pub async fn serve_guest<C, H, F>(channel: C, handle: H) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(UnixStream) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let channel = handshake::guest(channel).await?;
    let mut connection = yamux::Connection::new(channel.compat(), config(), yamux::Mode::Server);
    while let Some(next) = poll_fn(|cx| connection.poll_next_inbound(cx)).await {
        let stream = next.map_err(io::Error::other)?;
        // A socket pair lets the handler keep its unix-stream signature.
        let (ours, theirs) = UnixStream::pair()?;
        tokio::spawn(handle(theirs));
        tokio::spawn(splice(ours, stream));
    }
    Ok(())
}

/// Copies both ways between a local connection and a yamux stream until
/// both ends are done.
async fn splice(local: UnixStream, stream: yamux::Stream) {
    let mut stream = stream.compat();
    let mut local = local;
    let _ = tokio::io::copy_bidirectional(&mut local, &mut stream).await;
}

/// The guest's end of the virtio-serial port, held open for the agent's
/// life; each host session gets its own byte stream over it.
pub struct Port {
    file: std::fs::File,
}

impl Port {
    /// Opens the port at `path` non-blocking for reading and writing.
    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Self { file })
    }

    /// Returns once a host holds the port: while none does (before the
    /// monitor connects, or after a saved VM is resumed until its new one
    /// does) it polls as hung up and reads as ended.
    pub async fn wait_for_host(&self) -> io::Result<()> {
        use std::os::fd::AsFd;
        loop {
            let mut fds = [nix::poll::PollFd::new(
                self.file.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).map_err(io::Error::from)?;
            let hung_up = fds[0]
                .revents()
                .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLHUP));
            if !hung_up {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// A byte stream over the port for one host session (a duplicate of
    /// its descriptor, so ending the session leaves the port open).
    pub fn session(&self) -> io::Result<CharDevice> {
        Ok(CharDevice {
            fd: crate::sys::async_file(self.file.try_clone()?)?,
        })
    }
}

/// A character device (a virtio-serial port) as an async byte stream.
pub struct CharDevice {
    fd: tokio::io::unix::AsyncFd<std::fs::File>,
}

impl AsyncRead for CharDevice {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        use std::io::Read;
        loop {
            let mut guard = match self.fd.poll_read_ready(cx) {
                Poll::Ready(g) => g?,
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|inner| inner.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for CharDevice {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        use std::io::Write;
        loop {
            let mut guard = match self.fd.poll_write_ready(cx) {
                Poll::Ready(g) => g?,
                Poll::Pending => return Poll::Pending,
            };
            match guard.try_io(|inner| inner.get_ref().write(data)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Connections to the host's socket reach the guest's handler, many at
    /// once, each with its own bytes.
    #[tokio::test(flavor = "current_thread")]
    async fn connections_cross_one_channel() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let (host_end, guest_end) = UnixStream::pair().expect("pair");
        tokio::spawn(async move { serve_host(host_end, &listener, true).await });
        tokio::spawn(serve_guest(guest_end, |mut s: UnixStream| async move {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            buf.reverse();
            let _ = s.write_all(&buf).await;
        }));
        let mut clients = Vec::new();
        for i in 0..20u8 {
            let path = path.clone();
            clients.push(tokio::spawn(async move {
                let mut c = UnixStream::connect(&path).await.expect("connect");
                // Big enough to need more than one window of flow control.
                let sent: Vec<u8> = (0..400_000u32).map(|n| (n % 251) as u8 ^ i).collect();
                c.write_all(&sent).await.expect("write");
                c.shutdown().await.expect("shutdown");
                let mut got = Vec::new();
                c.read_to_end(&mut got).await.expect("read");
                got.reverse();
                assert_eq!(got, sent);
            }));
        }
        for c in clients {
            c.await.expect("client");
        }
    }
}
