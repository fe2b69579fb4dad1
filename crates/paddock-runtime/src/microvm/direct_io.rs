//! Reading and writing a suspended VM's memory image past the page cache
//! (`O_DIRECT`). The image is as large as the guest's memory and read
//! once: cached, it would take host memory a suspend is meant to free,
//! and filling the cache takes the recently freed pages that the resumed
//! guest's memory would otherwise get. On a host whose hypervisor takes
//! back free memory (free page reporting), fresh pages cost a fault in
//! the hypervisor each: a resume that went through the cache was 4-7
//! times slower than one that did not.
//!
//! Direct I/O wants buffers, offsets and lengths aligned to the device's
//! block; the buffers here are aligned to 4 KiB inside a larger vector
//! (no allocator call needed), whole blocks go direct, and only the
//! file's tail goes through the cache. Where the filesystem refuses
//! `O_DIRECT` (tmpfs), the cache is used.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// Every device's logical block divides this.
const ALIGN: usize = 4096;
/// How much one read or write moves.
const BLOCK: usize = 4 << 20;

/// A buffer of [`BLOCK`] bytes starting at an [`ALIGN`]ed address.
struct AlignedBuffer {
    bytes: Vec<u8>,
    start: usize,
}

impl AlignedBuffer {
    fn new() -> Self {
        let bytes = vec![0u8; BLOCK + ALIGN];
        let start = bytes.as_ptr().align_offset(ALIGN);
        Self { bytes, start }
    }

    fn get(&self) -> &[u8] {
        &self.bytes[self.start..self.start + BLOCK]
    }

    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + BLOCK]
    }
}

/// Opens `path` for reading past the cache where its filesystem allows.
/// A thread reads ahead of the caller, so the disk and the caller's work
/// (opening the image) overlap.
pub fn open_reader(path: &Path) -> std::io::Result<DirectReader> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => File::open(path)?,
        other => other?,
    };
    let (blocks, received) = mpsc::sync_channel(AHEAD);
    std::thread::Builder::new()
        .name("image-reader".into())
        .spawn(move || {
            let mut buffer = AlignedBuffer::new();
            loop {
                // Whole blocks from block-aligned offsets: the file's end
                // is the only short read.
                let block = match file.read(buffer.get_mut()) {
                    Ok(0) => break,
                    Ok(n) => Ok(buffer.get()[..n].to_vec()),
                    Err(e) => Err(e),
                };
                let failed = block.is_err();
                // The reader was dropped: nobody wants the rest.
                if blocks.send(block).is_err() || failed {
                    break;
                }
            }
        })?;
    Ok(DirectReader {
        blocks: received,
        current: Vec::new(),
        at: 0,
    })
}

/// Blocks read ahead, up to this many.
const AHEAD: usize = 4;

/// Reads a file in aligned blocks of [`BLOCK`], from a thread ahead.
pub struct DirectReader {
    blocks: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for DirectReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.current.len() {
            match self.blocks.recv() {
                Ok(block) => self.current = block?,
                // The thread is done: the end of the file.
                Err(_) => return Ok(0),
            }
            self.at = 0;
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Creates `path` (mode 0600, truncated) for writing past the cache
/// where its filesystem allows. A thread writes behind the caller.
pub fn create_writer(path: &Path) -> std::io::Result<DirectWriter> {
    let create = |direct: bool| {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(if direct { libc::O_DIRECT } else { 0 })
            .open(path)
    };
    let (mut file, direct) = match create(true) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (create(false)?, false),
        other => (other?, true),
    };
    let (blocks, received) = mpsc::sync_channel::<Vec<u8>>(AHEAD);
    let writer = std::thread::Builder::new()
        .name("image-writer".into())
        .spawn(move || -> std::io::Result<File> {
            let mut buffer = AlignedBuffer::new();
            for block in received {
                if direct && block.len() < BLOCK {
                    // The tail, which is not a whole block: through the
                    // cache.
                    let flags = fcntl(file.as_fd(), FcntlArg::F_GETFL)?;
                    let cached = OFlag::from_bits_truncate(flags) & !OFlag::O_DIRECT;
                    fcntl(file.as_fd(), FcntlArg::F_SETFL(cached))?;
                    file.write_all(&block)?;
                } else {
                    buffer.get_mut()[..block.len()].copy_from_slice(&block);
                    file.write_all(&buffer.get()[..block.len()])?;
                }
            }
            file.sync_data()?;
            Ok(file)
        })?;
    Ok(DirectWriter {
        blocks: Some(blocks),
        writer,
        pending: Vec::with_capacity(BLOCK),
    })
}

/// Writes a file in aligned blocks of [`BLOCK`] from a thread behind;
/// [`DirectWriter::finish`] writes the tail and makes it all durable.
pub struct DirectWriter {
    blocks: Option<mpsc::SyncSender<Vec<u8>>>,
    writer: std::thread::JoinHandle<std::io::Result<File>>,
    pending: Vec<u8>,
}

impl DirectWriter {
    /// Writes the tail (through the cache: it is not a whole block) and
    /// syncs the file. The file, for the caller to drop from the cache
    /// what the tail put there.
    pub fn finish(mut self) -> std::io::Result<File> {
        if !self.pending.is_empty() {
            self.send_pending()?;
        }
        // Closing the channel ends the writer's loop.
        drop(self.blocks.take());
        self.writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the image writer panicked")))
    }

    fn send_pending(&mut self) -> std::io::Result<()> {
        let block = std::mem::replace(&mut self.pending, Vec::with_capacity(BLOCK));
        let sent = self.blocks.as_ref().map(|b| b.send(block));
        match sent {
            Some(Ok(())) => Ok(()),
            // The writer stopped on an error, which `finish` returns.
            _ => Err(std::io::Error::other("the image writer stopped")),
        }
    }
}

impl Write for DirectWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(BLOCK - self.pending.len());
        self.pending.extend_from_slice(&data[..n]);
        if self.pending.len() == BLOCK {
            self.send_pending()?;
        }
        Ok(n)
    }

    /// Whole blocks are written as they fill; the tail waits for
    /// [`DirectWriter::finish`].
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_past_the_cache_reads_back_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        for len in [0, 1, ALIGN + 3, BLOCK, 2 * BLOCK + 12_345] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let path = dir.path().join(format!("image-{len}"));
            let mut w = create_writer(&path).expect("create");
            // In odd pieces, as a sealer writes.
            for piece in data.chunks(1_048_592) {
                w.write_all(piece).expect("write");
            }
            w.finish().expect("finish");
            let mut back = Vec::new();
            open_reader(&path)
                .expect("open")
                .read_to_end(&mut back)
                .expect("read");
            assert_eq!(back, data, "{len} bytes");
        }
    }
}
