//! Length-prefixed framing for the request-response protocols.
//!
//! A request is one frame: a 4-byte big-endian length followed by that many bytes (the SSZ
//! envelope). A frame longer than the codec's limit is refused as soon as its length prefix is
//! read, so the stream is dropped without buffering the body. A response is a single [`Ack`]
//! byte.
//!
//! A codec made with [`FrameCodec::counted`] counts the request bytes it writes (a whole frame,
//! once written and flushed) and reads (every byte read, frames later rejected included) into
//! the protocol's `p2p_message_bytes_sent_total` / `p2p_message_bytes_received_total`. Acks,
//! multistream-select, noise and yamux framing are not counted.

use std::io;

use async_trait::async_trait;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{request_response, StreamProtocol};
use prometheus_client::metrics::counter::Counter;

/// Bytes of a request frame's big-endian length prefix.
const LEN_PREFIX: usize = 4;

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
/// Clones (libp2p clones the codec for every stream) share the byte counters.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max_frame: usize,
    bytes_sent: Counter,
    bytes_received: Counter,
}

impl FrameCodec {
    /// A codec accepting request frames of at most `max_frame` bytes, counting into counters
    /// of its own (see [`counted`](Self::counted)).
    pub fn new(max_frame: usize) -> Self {
        FrameCodec::counted(max_frame, Counter::default(), Counter::default())
    }

    /// A codec accepting request frames of at most `max_frame` bytes that adds the bytes of
    /// every request frame it writes to `bytes_sent` and every request byte it reads to
    /// `bytes_received`.
    pub fn counted(max_frame: usize, bytes_sent: Counter, bytes_received: Counter) -> Self {
        FrameCodec {
            max_frame,
            bytes_sent,
            bytes_received,
        }
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
        let mut len = [0u8; LEN_PREFIX];
        if let Err(e) = io.read_exact(&mut len).await {
            return Ok(Frame::Invalid(FrameError::Truncated(e)));
        }
        self.bytes_received.inc_by(LEN_PREFIX as u64);
        let len = u64::from(u32::from_be_bytes(len));
        if len > self.max_frame as u64 {
            return Ok(Frame::Invalid(FrameError::Oversized {
                len,
                max: self.max_frame,
            }));
        }
        // Read through `take` so memory grows with bytes actually received, not with the claim.
        let mut body = Vec::new();
        let read = io.take(len).read_to_end(&mut body).await;
        // What was read before an error is in `body` too.
        self.bytes_received.inc_by(body.len() as u64);
        if let Err(e) = read {
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
        io.flush().await?;
        self.bytes_sent.inc_by((LEN_PREFIX + req.len()) as u64);
        Ok(())
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
    fn frames_written_and_read_are_counted_on_the_wire() {
        let (sent, received) = (Counter::default(), Counter::default());
        let mut codec = FrameCodec::counted(16, sent.clone(), received.clone());
        let mut out = Cursor::new(Vec::new());
        for body in [&b"abc"[..], &[9u8; 16][..]] {
            futures::executor::block_on(codec.write_request(
                &proto(),
                &mut out,
                Frame::Body(body.to_vec()),
            ))
            .unwrap();
        }
        let wire = out.into_inner();
        assert_eq!((wire.len(), sent.get()), (27, 27));
        // A failed write (oversized) is not counted.
        assert!(futures::executor::block_on(codec.write_request(
            &proto(),
            &mut Cursor::new(Vec::new()),
            Frame::Body(vec![0; 17])
        ))
        .is_err());
        assert_eq!(sent.get(), 27);

        // The clone libp2p makes per stream shares the counters.
        let mut reader = codec.clone();
        let mut input = Cursor::new(wire);
        for _ in 0..2 {
            let frame =
                futures::executor::block_on(reader.read_request(&proto(), &mut input)).unwrap();
            assert!(matches!(frame, Frame::Body(_)));
        }
        assert_eq!(received.get(), 27);
        // Oversized: only the prefix is read. Truncated: what arrived.
        assert_eq!(
            read(&mut reader, [0, 0, 0, 17, 1, 2].to_vec()),
            Err("oversized")
        );
        assert_eq!(received.get(), 31);
        assert_eq!(
            read(&mut reader, [0, 0, 0, 5, 1, 2].to_vec()),
            Err("truncated")
        );
        assert_eq!(received.get(), 37);
        assert_eq!(sent.get(), 27);
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
