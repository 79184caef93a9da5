//! Serial ports for the MCU handlers: open a tty at a baud rate (raw, 8N1, no flow
//! control), drive DTR/RTS for bootloader entry, and read with deadlines — all on
//! the async runtime (tokio-serial), so a slow UART never blocks other updates.
//!
//! Protocol code is written against [`Link`] (async bytes plus modem control) so it
//! runs the same over a real UART, a pty, or an in-memory pipe.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("cannot open serial port {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: tokio_serial::Error,
    },
    #[error("serial port {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Control of the modem lines a bootloader reset uses. On a pty these are not
/// available; implementations return an error the caller may ignore when
/// `reset = "none"`.
pub trait ModemControl {
    fn set_dtr(&mut self, on: bool) -> io::Result<()>;
    fn set_rts(&mut self, on: bool) -> io::Result<()>;
    /// Discards bytes received but not yet read (stale output of the application).
    fn clear_input(&mut self) -> io::Result<()>;
}

/// What protocol code talks to.
pub trait Link: AsyncRead + AsyncWrite + ModemControl + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + ModemControl + Unpin + Send> Link for T {}

/// An open serial port.
pub struct SerialLink {
    stream: SerialStream,
    path: PathBuf,
}

impl SerialLink {
    /// Opens `path` raw at `baud`, 8 data bits, no parity, 1 stop bit, no flow
    /// control, for exclusive use.
    pub fn open(path: &Path, baud: u32) -> Result<SerialLink, SerialError> {
        let stream = tokio_serial::new(path.to_string_lossy(), baud)
            .data_bits(tokio_serial::DataBits::Eight)
            .parity(tokio_serial::Parity::None)
            .stop_bits(tokio_serial::StopBits::One)
            .flow_control(tokio_serial::FlowControl::None)
            .timeout(Duration::from_millis(10))
            .open_native_async()
            .map_err(|source| SerialError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(SerialLink {
            stream,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes the baud rate of the open port.
    pub fn set_baud(&mut self, baud: u32) -> Result<(), SerialError> {
        self.stream
            .set_baud_rate(baud)
            .map_err(|e| SerialError::Io {
                path: self.path.clone(),
                source: e.into(),
            })
    }
}

impl ModemControl for SerialLink {
    fn set_dtr(&mut self, on: bool) -> io::Result<()> {
        self.stream
            .write_data_terminal_ready(on)
            .map_err(io::Error::from)
    }

    fn set_rts(&mut self, on: bool) -> io::Result<()> {
        self.stream
            .write_request_to_send(on)
            .map_err(io::Error::from)
    }

    fn clear_input(&mut self) -> io::Result<()> {
        self.stream
            .clear(tokio_serial::ClearBuffer::Input)
            .map_err(io::Error::from)
    }
}

impl AsyncRead for SerialLink {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SerialLink {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Reads one byte, or `None` when nothing arrives within `timeout`.
pub async fn read_byte<R: AsyncRead + Unpin>(
    reader: &mut R,
    timeout: Duration,
) -> io::Result<Option<u8>> {
    match tokio::time::timeout(timeout, reader.read_u8()).await {
        Ok(Ok(b)) => Ok(Some(b)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "serial link closed",
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn talks_over_a_pty() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).unwrap();
        let mut link = SerialLink::open(&slave, 115_200).unwrap();
        let mut master = tokio::fs::File::from_std(std::fs::File::from(pty.master));
        master.write_all(b"\x55").await.unwrap();
        assert_eq!(
            read_byte(&mut link, Duration::from_secs(5)).await.unwrap(),
            Some(0x55)
        );
        assert_eq!(
            read_byte(&mut link, Duration::from_millis(20))
                .await
                .unwrap(),
            None
        );
        link.write_all(b"ok").await.unwrap();
        let mut buf = [0u8; 2];
        master.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ok");
        // Modem lines do not exist on a pty: an error, not a panic.
        let _ = link.set_dtr(true);
    }

    #[test]
    fn missing_port_names_the_path() {
        let err = SerialLink::open(Path::new("/dev/ttyNOPE9"), 9600)
            .err()
            .unwrap();
        assert!(err.to_string().contains("/dev/ttyNOPE9"), "{err}");
    }
}
