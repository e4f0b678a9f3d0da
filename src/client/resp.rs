//! The Redis protocol (RESP2) on the wire: reading requests, writing replies.
//!
//! A client sends each command as an array of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), or, typed by hand into telnet or nc, as
//! one "inline" line of words (`GET k\r\n`). That narrow shape is all a server
//! has to read, and reading only that shape is what keeps this reader safe on
//! untrusted input:
//!
//! - Nothing nests. A general RESP decoder (we tried the `redis-protocol`
//!   crate, 6.0) recurses into nested arrays, and about 40 KB of `*1\r\n`
//!   repeated overflowed a 2 MiB thread stack and aborted the process. Here a
//!   nested array is a protocol error, as it is in Redis.
//! - Every length is checked against a limit before a byte of its content is
//!   awaited, so a client cannot make the server buffer more than
//!   [`MAX_REQUEST_BYTES`] for one request.
//! - A length prefix that is not a plain decimal number, a missing `\r\n`, or
//!   a request over the limit cannot be resynchronised: the caller answers
//!   with the error and closes that connection (Redis does the same).

use bytes::{Buf, Bytes, BytesMut};

/// The largest request accepted, in bytes: room for `MSET` of several
/// largest values (1 MiB each), and the most one connection may make us buffer.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// The most arguments one request may have.
pub const MAX_ARGS: usize = 1024 * 1024;
/// The longest inline request line (Redis allows 64 KiB too).
const MAX_INLINE_BYTES: usize = 64 * 1024;
/// A `*N` or `$N` header line is never longer than this (without its CRLF).
const MAX_HEADER_BYTES: usize = 32;

/// A request that cannot be read; the connection must close after saying so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

/// Reads the requests of one connection. It remembers how far it got into a
/// request that has not fully arrived, so a large request that trickles in
/// (an 8 MiB MSET in 1-byte pieces, say) costs time in proportion to its size,
/// not to its size squared.
#[derive(Debug, Default)]
pub struct RequestReader {
    /// A multibulk request under way: its argument count and where each
    /// argument found so far lies in the buffer (nothing is consumed until
    /// the whole request is there, so these stay valid).
    multibulk: Option<(usize, Vec<(usize, usize)>)>,
    /// Bytes of an inline request already searched for its end.
    inline_scanned: usize,
}

impl RequestReader {
    /// Takes one whole request off the front of `buf`: `Ok(None)` when more
    /// bytes are needed. An empty request (a blank inline line, `*0`) comes
    /// back as an empty list, which the caller ignores, as Redis does.
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let result = match buf.first() {
            None => Ok(None),
            Some(b'*') => self.read_multibulk(buf),
            Some(_) => self.read_inline(buf),
        };
        if !matches!(result, Ok(None)) {
            *self = RequestReader::default();
        }
        result
    }
}

/// A reader with no memory, for the tests of single requests.
#[cfg(test)]
pub fn read_request(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    RequestReader::default().read(buf)
}

/// Where the line starting at `from` ends (the index of its `\r`), if its
/// `\r\n` has arrived; errors if the line is longer than `max`.
fn line_end(
    buf: &[u8],
    from: usize,
    max: usize,
    what: &str,
) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[from..buf.len().min(from + max + 2)];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(at) => Ok(Some(from + at)),
        None if window.len() >= max + 2 => Err(ProtocolError(format!("{what} is too long"))),
        None => Ok(None),
    }
}

/// Parses the decimal number of a `*N` or `$N` header (after the type byte).
fn header_number(digits: &[u8], what: &str) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .filter(|text| !text.is_empty() && !text.starts_with('+'))
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or_else(|| ProtocolError(format!("invalid {what}")))
}

impl RequestReader {
    fn read_multibulk(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let (count, mut spans) = match self.multibulk.take() {
            Some(progress) => progress,
            None => {
                let Some(header_end) = line_end(buf, 0, MAX_HEADER_BYTES, "the multibulk length")?
                else {
                    return Ok(None);
                };
                let count = header_number(&buf[1..header_end], "multibulk length")?;
                if count > MAX_ARGS as i64 {
                    return Err(ProtocolError("invalid multibulk length".into()));
                }
                if count <= 0 {
                    buf.advance(header_end + 2);
                    return Ok(Some(Vec::new()));
                }
                let mut spans = Vec::with_capacity((count as usize).min(1024));
                // The first argument starts after the header: a zero-length
                // placeholder span marks where.
                spans.push((header_end + 2, header_end));
                (count as usize, spans)
            }
        };
        // Find every argument's place without copying; take them only once the
        // whole request has arrived.
        while spans.len() <= count {
            let at = spans.last().map_or(0, |&(_, end)| end + 2);
            let Some(&kind) = buf.get(at) else {
                self.multibulk = Some((count, spans));
                return Ok(None);
            };
            if kind != b'$' {
                return Err(ProtocolError(format!(
                    "expected '$', got '{}'",
                    char::from(kind).escape_default()
                )));
            }
            let Some(len_end) = line_end(buf, at, MAX_HEADER_BYTES, "a bulk length")? else {
                self.multibulk = Some((count, spans));
                return Ok(None);
            };
            let len = header_number(&buf[at + 1..len_end], "bulk length")?;
            if len < 0 || len as usize > MAX_REQUEST_BYTES {
                return Err(ProtocolError("invalid bulk length".into()));
            }
            let start = len_end + 2;
            let end = start + len as usize;
            if end + 2 > MAX_REQUEST_BYTES {
                return Err(ProtocolError(format!(
                    "the request is over the limit of {MAX_REQUEST_BYTES} bytes"
                )));
            }
            if buf.len() < end + 2 {
                buf.reserve(end + 2 - buf.len());
                self.multibulk = Some((count, spans));
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("a bulk string does not end in CRLF".into()));
            }
            spans.push((start, end));
        }
        let total = spans.last().map_or(0, |&(_, end)| end + 2);
        let request = buf.split_to(total).freeze();
        Ok(Some(
            spans[1..]
                .iter()
                .map(|&(start, end)| request.slice(start..end))
                .collect(),
        ))
    }

    fn read_inline(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let window = &buf[..buf.len().min(MAX_INLINE_BYTES + 1)];
        let from = self.inline_scanned.min(window.len());
        let Some(newline) = window[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| from + i)
        else {
            if window.len() > MAX_INLINE_BYTES {
                return Err(ProtocolError("too big inline request".into()));
            }
            self.inline_scanned = window.len();
            return Ok(None);
        };
        let line = buf.split_to(newline + 1).freeze();
        let text = line.slice(..newline);
        let mut words = Vec::new();
        let mut start = None;
        for (i, byte) in text.iter().enumerate() {
            let blank = byte.is_ascii_whitespace();
            match (start, blank) {
                (None, false) => start = Some(i),
                (Some(from), true) => {
                    words.push(text.slice(from..i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(from) = start {
            words.push(text.slice(from..));
        }
        Ok(Some(words))
    }
}

/// A reply, in the five shapes RESP2 has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Simple(&'static str),
    /// An error: the first word is its kind (`ERR`, `WRONGTYPE`, ...).
    Error(String),
    Integer(i64),
    Bulk(Option<Bytes>),
    Array(Vec<Frame>),
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

    /// Appends the frame's wire form to `out`.
    pub fn write_to(&self, out: &mut BytesMut) {
        match self {
            Frame::Simple(text) => {
                out.extend_from_slice(b"+");
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Frame::Error(message) => {
                out.extend_from_slice(b"-");
                // A line break inside would end the error early and garble the stream.
                for byte in message.bytes() {
                    out.extend_from_slice(&[if byte == b'\r' || byte == b'\n' {
                        b' '
                    } else {
                        byte
                    }]);
                }
                out.extend_from_slice(b"\r\n");
            }
            Frame::Integer(n) => {
                out.extend_from_slice(format!(":{n}\r\n").as_bytes());
            }
            Frame::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Frame::Bulk(Some(bytes)) => {
                out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for item in items {
                    item.write_to(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> (Vec<Vec<Bytes>>, Result<usize, ProtocolError>) {
        let mut buf = BytesMut::from(input);
        let mut requests = Vec::new();
        loop {
            match read_request(&mut buf) {
                Ok(Some(request)) => requests.push(request),
                Ok(None) => return (requests, Ok(buf.len())),
                Err(e) => return (requests, Err(e)),
            }
        }
    }

    fn words(list: &[&str]) -> Vec<Bytes> {
        list.iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn reads_pipelined_multibulk_and_inline_requests() {
        let (requests, rest) =
            read_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n  set  a   b \n*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$0\r\n\r\n");
        assert_eq!(rest, Ok(0));
        assert_eq!(
            requests,
            vec![
                words(&["GET", "k"]),
                words(&["PING"]),
                words(&["set", "a", "b"]),
                words(&["SET", "x", ""]),
            ]
        );
    }

    #[test]
    fn a_request_split_anywhere_waits_for_the_rest() {
        let whole = b"*3\r\n$3\r\nSET\r\n$5\r\nkey\r\n\r\n$2\r\nv1\r\n";
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(read_request(&mut buf), Ok(None), "cut at {cut}");
            assert_eq!(
                buf.len(),
                cut,
                "nothing is consumed before the request is whole"
            );
        }
        let (requests, _) = read_all(whole);
        assert_eq!(requests, vec![words(&["SET", "key\r\n", "v1"])]);
    }

    #[test]
    fn binary_values_pass_through() {
        let (requests, _) = read_all(b"*2\r\n$3\r\nGET\r\n$3\r\n\x00\xff\n\r\n");
        assert_eq!(requests[0][1].as_ref(), b"\x00\xff\n");
    }

    #[test]
    fn empty_requests_are_empty() {
        let (requests, rest) = read_all(b"*0\r\n\r\n*-1\r\n");
        assert_eq!(rest, Ok(0));
        assert_eq!(requests, vec![Vec::<Bytes>::new(); 3]);
    }

    #[test]
    fn malformed_frames_are_protocol_errors() {
        for (input, says) in [
            (&b"*x\r\n"[..], "invalid multibulk length"),
            (b"*2\r\n+OK\r\n", "expected '$', got '+'"),
            (b"*1\r\n*1\r\n$1\r\na\r\n", "expected '$', got '*'"),
            (b"*1\r\n$abc\r\n", "invalid bulk length"),
            (b"*1\r\n$-5\r\n", "invalid bulk length"),
            (b"*1\r\n$1\r\nab\r\n", "does not end in CRLF"),
            (b"*99999999999\r\n", "invalid multibulk length"),
            (b"*1\r\n$999999999\r\n", "invalid bulk length"),
            (b"*1111111111111111111111111111111111111", "too long"),
        ] {
            let (_, result) = read_all(input);
            let error = result.expect_err(&String::from_utf8_lossy(input));
            assert!(error.0.contains(says), "{input:?} gave {error}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let mut input = b"*1\r\n".repeat(100_000);
        input.extend_from_slice(b"$1\r\na\r\n");
        let (_, result) = read_all(&input);
        assert!(result.is_err());
    }

    #[test]
    fn an_oversized_request_is_refused_from_its_headers() {
        // Four arguments of 4 MiB each: refused at the third header, long
        // before 16 MiB would have to be buffered.
        let mut input = b"*4\r\n".to_vec();
        for _ in 0..2 {
            input.extend_from_slice(format!("${}\r\n", 4 << 20).as_bytes());
            input.extend(std::iter::repeat_n(b'v', 4 << 20));
            input.extend_from_slice(b"\r\n");
        }
        input.extend_from_slice(format!("${}\r\n", 4 << 20).as_bytes());
        let (_, result) = read_all(&input);
        assert!(result.unwrap_err().0.contains("over the limit"));
        let (_, result) = read_all(&vec![b'a'; MAX_INLINE_BYTES + 10]);
        assert!(result.unwrap_err().0.contains("too big inline"));
    }

    /// Pieces of RESP and inline requests, for the fuzz tests.
    const FRAGMENTS: &[&[u8]] = &[
        b"*",
        b"$",
        b"\r\n",
        b"\n",
        b"\r",
        b"0",
        b"1",
        b"2",
        b"3",
        b"-1",
        b"-",
        b"+",
        b":",
        b"99999999999",
        b"8388608",
        b"*2\r\n",
        b"$3\r\nGET\r\n",
        b"$1\r\nk\r\n",
        b"SET k v\r\n",
        b"PING",
        b" ",
        b"\x00",
        b"\xff",
    ];

    #[test]
    fn garbage_never_panics_and_never_over_consumes() {
        let mut rng = crate::fuzz::Rng(0x5eed_1234_5678_9abc);
        for _ in 0..20_000 {
            let input = rng.bytes_from(FRAGMENTS, 24);
            // Fed in two pieces, so the reader resumes from where it stopped.
            let cut = rng.below(input.len() + 1);
            let mut buf = BytesMut::from(&input[..cut]);
            let mut reader = RequestReader::default();
            let mut fed_all = false;
            // Each call either takes a whole request off the front, waits
            // without consuming, or refuses; it never loops in place.
            for _ in 0..=input.len() + 1 {
                let before = buf.len();
                match reader.read(&mut buf) {
                    Ok(Some(_)) => assert!(buf.len() < before, "{input:?}: no progress"),
                    Ok(None) if !fed_all => {
                        assert_eq!(buf.len(), before, "{input:?}: consumed while waiting");
                        buf.extend_from_slice(&input[cut..]);
                        fed_all = true;
                    }
                    Ok(None) => {
                        assert_eq!(buf.len(), before, "{input:?}: consumed while waiting");
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }

    /// A request as a client library writes it.
    fn encode(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn any_arguments_round_trip_whatever_the_splits() {
        let mut rng = crate::fuzz::Rng(0xfeed_beef_0bad_cafe);
        for _ in 0..2_000 {
            let requests: Vec<Vec<Vec<u8>>> = (0..1 + rng.below(4))
                .map(|_| {
                    (0..1 + rng.below(5))
                        .map(|_| rng.bytes_from(FRAGMENTS, 6))
                        .collect()
                })
                .collect();
            let wire: Vec<u8> = requests.iter().flat_map(|r| encode(r)).collect();
            // Arrive in random pieces, as TCP may deliver them.
            let mut buf = BytesMut::new();
            let mut decoded = Vec::new();
            let mut at = 0;
            let mut reader = RequestReader::default();
            while at < wire.len() {
                let piece = 1 + rng.below(wire.len() - at);
                buf.extend_from_slice(&wire[at..at + piece]);
                at += piece;
                while let Some(request) = reader.read(&mut buf).expect("a valid request") {
                    decoded.push(request.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
                }
            }
            assert_eq!(decoded, requests);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn a_large_request_trickling_in_costs_linear_time() {
        // 200,000 arguments, about 1.6 MB, arriving a byte at a time.
        let args: Vec<Vec<u8>> = (0..200_000)
            .map(|i| (i % 10).to_string().into_bytes())
            .collect();
        let wire = encode(&args);
        let started = std::time::Instant::now();
        let mut reader = RequestReader::default();
        let mut buf = BytesMut::new();
        let mut decoded = None;
        for byte in &wire {
            buf.extend_from_slice(&[*byte]);
            if let Some(request) = reader.read(&mut buf).expect("a valid request") {
                decoded = Some(request);
            }
        }
        assert_eq!(decoded.map(|r| r.len()), Some(args.len()));
        // Re-scanning from the start on every byte would take minutes here.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
        // The same for an inline request growing to its limit.
        let mut buf = BytesMut::new();
        let mut reader = RequestReader::default();
        for _ in 0..MAX_INLINE_BYTES - 2 {
            buf.extend_from_slice(b"a");
            assert_eq!(reader.read(&mut buf), Ok(None));
        }
        buf.extend_from_slice(b"\r\n");
        assert_eq!(reader.read(&mut buf).unwrap().map(|w| w.len()), Some(1));
    }

    #[test]
    fn replies_have_their_wire_form() {
        let mut out = BytesMut::new();
        Frame::Array(vec![
            Frame::ok(),
            Frame::error("ERR bad\r\nthing"),
            Frame::Integer(-3),
            Frame::Bulk(None),
            Frame::bulk(&b"v"[..]),
        ])
        .write_to(&mut out);
        assert_eq!(
            &out[..],
            b"*5\r\n+OK\r\n-ERR bad  thing\r\n:-3\r\n$-1\r\n$1\r\nv\r\n"
        );
    }
}
