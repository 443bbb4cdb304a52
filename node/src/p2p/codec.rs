//! Length-prefixed framing for the request-response protocols.
//!
//! A request is one frame: a 4-byte big-endian length followed by that many bytes (the SSZ
//! envelope). A frame longer than the codec's limit is refused as soon as its length prefix is
//! read, so the stream is dropped without buffering the body. A response is a single [`Ack`]
//! byte.

use std::io;

use async_trait::async_trait;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{request_response, StreamProtocol};

/// Response to a request: whether the receiver accepted (verified and delivered) the envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// The envelope was verified and delivered.
    Accepted,
    /// The envelope was rejected (see the receiver's `p2p_dropped_messages_total`).
    Rejected,
}

impl Ack {
    fn to_byte(self) -> u8 {
        match self {
            Ack::Accepted => 0,
            Ack::Rejected => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Ack> {
        match b {
            0 => Some(Ack::Accepted),
            1 => Some(Ack::Rejected),
            _ => None,
        }
    }
}

/// Why a request frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds the protocol's limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// Announced frame length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The stream ended or failed before a whole frame was read.
    #[error("truncated frame: {0}")]
    Truncated(io::Error),
}

impl FrameError {
    /// Metric label of the failure.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Oversized { .. } => "oversized",
            FrameError::Truncated(_) => "truncated",
        }
    }
}

/// A request as read from a stream. Unreadable frames are surfaced as [`Frame::Invalid`]
/// instead of a codec error so that the network sees them together with the sending peer
/// (request-response swallows codec read errors). The body of an oversized frame is never
/// read; the stream is closed after the `Rejected` ack.
#[derive(Debug)]
pub enum Frame {
    /// A complete frame body.
    Body(Vec<u8>),
    /// A frame that could not be read.
    Invalid(FrameError),
}

/// Request-response codec for one protocol: requests are frames of at most `max_frame` bytes.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    /// A codec accepting request frames of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameCodec { max_frame }
    }
}

#[async_trait]
impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = Ack;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut len = [0u8; 4];
        if let Err(e) = io.read_exact(&mut len).await {
            return Ok(Frame::Invalid(FrameError::Truncated(e)));
        }
        let len = u64::from(u32::from_be_bytes(len));
        if len > self.max_frame as u64 {
            return Ok(Frame::Invalid(FrameError::Oversized {
                len,
                max: self.max_frame,
            }));
        }
        // Read through `take` so memory grows with bytes actually received, not with the claim.
        let mut body = Vec::new();
        if let Err(e) = io.take(len).read_to_end(&mut body).await {
            return Ok(Frame::Invalid(FrameError::Truncated(e)));
        }
        if body.len() as u64 != len {
            return Ok(Frame::Invalid(FrameError::Truncated(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("expected {len} bytes, stream ended after {}", body.len()),
            ))));
        }
        Ok(Frame::Body(body))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Ack>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        Ack::from_byte(b[0]).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("invalid ack byte {:#04x}", b[0]),
            )
        })
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Frame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let Frame::Body(req) = req else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot send an invalid frame",
            ));
        };
        if req.len() > self.max_frame {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame of {} bytes exceeds the {}-byte limit",
                    req.len(),
                    self.max_frame
                ),
            ));
        }
        // The limit is at most u32::MAX by construction of the network limits.
        let len = u32::try_from(req.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
        io.write_all(&len.to_be_bytes()).await?;
        io.write_all(&req).await?;
        io.flush().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Ack,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[res.to_byte()]).await?;
        io.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use request_response::Codec;

    fn proto() -> StreamProtocol {
        StreamProtocol::new("/dvlab/qbft/1.0.0")
    }

    fn read(codec: &mut FrameCodec, bytes: Vec<u8>) -> Result<Vec<u8>, &'static str> {
        match futures::executor::block_on(codec.read_request(&proto(), &mut Cursor::new(bytes)))
            .expect("reading a request never fails")
        {
            Frame::Body(b) => Ok(b),
            Frame::Invalid(e) => Err(e.reason()),
        }
    }

    #[test]
    fn frame_roundtrip() {
        let mut codec = FrameCodec::new(16);
        let mut out = Cursor::new(Vec::new());
        futures::executor::block_on(codec.write_request(
            &proto(),
            &mut out,
            Frame::Body(b"abc".to_vec()),
        ))
        .unwrap();
        let wire = out.into_inner();
        assert_eq!(wire, [0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(read(&mut codec, wire), Ok(b"abc".to_vec()));
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut codec = FrameCodec::new(16);
        assert_eq!(read(&mut codec, [0, 0, 0, 17].to_vec()), Err("oversized"));
        assert_eq!(
            read(&mut codec, [0xff, 0xff, 0xff, 0xff, 1, 2].to_vec()),
            Err("oversized")
        );
        assert_eq!(
            read(&mut codec, [0, 0, 0, 5, 1, 2].to_vec()),
            Err("truncated")
        );
        assert_eq!(read(&mut codec, [0, 0].to_vec()), Err("truncated"));
        // Exactly at the limit is fine.
        let mut frame = vec![0, 0, 0, 16];
        frame.extend([7u8; 16]);
        assert_eq!(read(&mut codec, frame), Ok(vec![7u8; 16]));
        // Writing an oversized request fails locally.
        let mut out = Cursor::new(Vec::new());
        assert!(futures::executor::block_on(codec.write_request(
            &proto(),
            &mut out,
            Frame::Body(vec![0; 17])
        ))
        .is_err());
    }

    #[test]
    fn ack_roundtrip_and_garbage() {
        let mut codec = FrameCodec::new(16);
        for ack in [Ack::Accepted, Ack::Rejected] {
            let mut out = Cursor::new(Vec::new());
            futures::executor::block_on(codec.write_response(&proto(), &mut out, ack)).unwrap();
            let got = futures::executor::block_on(
                codec.read_response(&proto(), &mut Cursor::new(out.into_inner())),
            )
            .unwrap();
            assert_eq!(got, ack);
        }
        assert!(futures::executor::block_on(
            codec.read_response(&proto(), &mut Cursor::new(vec![9]))
        )
        .is_err());
    }
}
