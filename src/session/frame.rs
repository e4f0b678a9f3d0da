//! A reply in Redis's shapes, and how RESP2 and RESP3 write it.
//!
//! Both front ends answer with a [`Frame`]: the client port writes it on the
//! wire ([`Frame::write_to`]), the prompt prints it as redis-cli would.

use bytes::{Bytes, BytesMut};

/// Which protocol a connection's replies are written in: RESP2 until the
/// client says `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

/// A reply: the five shapes of RESP2, and the RESP3 shapes our commands use.
/// Each RESP3 shape has the RESP2 form Redis falls back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Simple(&'static str),
    /// A simple string made at run time (TYPE's answer).
    Status(String),
    /// An error: the first word is its kind (`ERR`, `WRONGTYPE`, ...).
    Error(String),
    Integer(i64),
    Bulk(Option<Bytes>),
    Array(Vec<Frame>),
    /// Nothing: `_` in RESP3; `$-1` in RESP2.
    Null,
    /// A missing array (EXEC aborted by WATCH): `_` in RESP3; `*-1` in RESP2.
    NullArray,
    /// A map (HELLO, CONFIG GET): `%` in RESP3; a flat array in RESP2.
    Map(Vec<(Frame, Frame)>),
    /// Text meant for people (INFO): `=` with its format in RESP3; bulk in RESP2.
    Verbatim(String),
}

impl Frame {
    pub fn ok() -> Frame {
        Frame::Simple("OK")
    }

    pub fn error(message: impl Into<String>) -> Frame {
        Frame::Error(message.into())
    }

    pub fn bulk(bytes: impl Into<Bytes>) -> Frame {
        Frame::Bulk(Some(bytes.into()))
    }

    /// Appends the frame's wire form in `protocol` to `out`.
    pub fn write_to(&self, out: &mut BytesMut, protocol: Protocol) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Frame::Simple(text) => simple(out, b'+', text),
            Frame::Status(text) => simple(out, b'+', text),
            Frame::Error(message) => simple(out, b'-', message),
            Frame::Integer(n) => {
                out.extend_from_slice(format!(":{n}\r\n").as_bytes());
            }
            Frame::Bulk(None) | Frame::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Frame::Bulk(None) | Frame::Null => out.extend_from_slice(b"$-1\r\n"),
            Frame::NullArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Frame::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Frame::Bulk(Some(bytes)) => bulk(out, b'$', b"", bytes),
            Frame::Verbatim(text) if resp3 => bulk(out, b'=', b"txt:", text.as_bytes()),
            Frame::Verbatim(text) => bulk(out, b'$', b"", text.as_bytes()),
            Frame::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for item in items {
                    item.write_to(out, protocol);
                }
            }
            Frame::Map(pairs) => {
                let len = if resp3 { pairs.len() } else { pairs.len() * 2 };
                let kind = if resp3 { '%' } else { '*' };
                out.extend_from_slice(format!("{kind}{len}\r\n").as_bytes());
                for (key, value) in pairs {
                    key.write_to(out, protocol);
                    value.write_to(out, protocol);
                }
            }
        }
    }
}

/// A one-line reply (`+` or `-`). A line break inside would end it early and
/// garble the stream, so it becomes a space.
fn simple(out: &mut BytesMut, kind: u8, text: &str) {
    out.extend_from_slice(&[kind]);
    out.extend(text.bytes().map(|byte| {
        if byte == b'\r' || byte == b'\n' {
            b' '
        } else {
            byte
        }
    }));
    out.extend_from_slice(b"\r\n");
}

/// A length-prefixed reply (`$` or `=`), its content after `head`.
fn bulk(out: &mut BytesMut, kind: u8, head: &[u8], content: &[u8]) {
    out.extend_from_slice(&[kind]);
    out.extend_from_slice(format!("{}\r\n", head.len() + content.len()).as_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(content);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_have_their_wire_form() {
        let mut out = BytesMut::new();
        let reply = Frame::Array(vec![
            Frame::ok(),
            Frame::error("ERR bad\r\nthing"),
            Frame::Integer(-3),
            Frame::Bulk(None),
            Frame::bulk(&b"v"[..]),
        ]);
        reply.write_to(&mut out, Protocol::Resp2);
        assert_eq!(
            &out[..],
            b"*5\r\n+OK\r\n-ERR bad  thing\r\n:-3\r\n$-1\r\n$1\r\nv\r\n"
        );
        out.clear();
        reply.write_to(&mut out, Protocol::Resp3);
        assert_eq!(
            &out[..],
            b"*5\r\n+OK\r\n-ERR bad  thing\r\n:-3\r\n_\r\n$1\r\nv\r\n"
        );
    }

    #[test]
    fn resp3_shapes_fall_back_to_their_resp2_forms() {
        let reply = Frame::Array(vec![
            Frame::Map(vec![(Frame::bulk("proto"), Frame::Integer(3))]),
            Frame::NullArray,
            Frame::Verbatim("# Server".into()),
        ]);
        let mut out = BytesMut::new();
        reply.write_to(&mut out, Protocol::Resp3);
        assert_eq!(
            &out[..],
            b"*3\r\n%1\r\n$5\r\nproto\r\n:3\r\n_\r\n=12\r\ntxt:# Server\r\n"
        );
        out.clear();
        reply.write_to(&mut out, Protocol::Resp2);
        assert_eq!(
            &out[..],
            b"*3\r\n*2\r\n$5\r\nproto\r\n:3\r\n*-1\r\n$8\r\n# Server\r\n"
        );
    }
}
