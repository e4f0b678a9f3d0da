//! The Redis protocol on the wire: reading requests. (Replies and how each
//! protocol writes them are `session::frame`, which the prompt shares.)
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

/// The largest request accepted, in bytes: room for the largest value
/// (`command::MAX_VALUE_LEN`) with its key and command, and the most one
/// connection may make us buffer.
pub const MAX_REQUEST_BYTES: usize = crate::command::MAX_VALUE_LEN + 1024 * 1024;
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
        // Four arguments of half the limit each: refused at the third
        // header, long before twice the limit would have to be buffered.
        let half = MAX_REQUEST_BYTES / 2;
        let mut input = b"*4\r\n".to_vec();
        for _ in 0..2 {
            input.extend_from_slice(format!("${half}\r\n").as_bytes());
            input.extend(std::iter::repeat_n(b'v', half));
            input.extend_from_slice(b"\r\n");
        }
        input.extend_from_slice(format!("${half}\r\n").as_bytes());
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

    /// Property tests (proptest) of the reader: arbitrary bytes, real requests
    /// in arbitrary pieces, pipelines of both request shapes.
    mod properties {
        use proptest::prelude::*;
        use proptest::sample::Index;

        use super::*;

        fn config(cases: u32) -> ProptestConfig {
            crate::fuzz::proptest_config(cases, 0x5e5b_0001)
        }

        /// A `*N` or `$N` header whose number sits near a limit, has leading
        /// zeros, a sign or blanks, or is longer than any header may be.
        fn edge_header() -> impl Strategy<Value = Vec<u8>> {
            let numbers = prop_oneof![
                Just(MAX_ARGS.to_string()),
                Just((MAX_ARGS + 1).to_string()),
                Just((MAX_REQUEST_BYTES - 2).to_string()),
                Just((MAX_REQUEST_BYTES - 1).to_string()),
                Just(MAX_REQUEST_BYTES.to_string()),
                Just((MAX_REQUEST_BYTES + 1).to_string()),
                Just(i64::MAX.to_string()),
                Just(i64::MIN.to_string()),
                Just(format!("{}0", u64::MAX)),
                Just("-0".to_string()),
                Just("+1".to_string()),
                Just(" 1".to_string()),
                Just("1 ".to_string()),
                Just(String::new()),
                (0usize..40).prop_map(|zeros| format!("{}1", "0".repeat(zeros))),
                (-3i64..40).prop_map(|n| n.to_string()),
            ];
            (prop::sample::select(&b"*$"[..]), numbers, any::<bool>()).prop_map(
                |(kind, number, crlf)| {
                    let mut out = vec![kind];
                    out.extend_from_slice(number.as_bytes());
                    out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                    out
                },
            )
        }

        /// One piece of RESP-like input.
        fn fragment() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                6 => prop::sample::select(FRAGMENTS).prop_map(|f| f.to_vec()),
                2 => edge_header(),
                1 => any::<i64>().prop_map(|n| n.to_string().into_bytes()),
                1 => prop::collection::vec(any::<u8>(), 0..8),
            ]
        }

        /// Bytes a client might send, by mistake or on purpose.
        fn garbage() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                3 => prop::collection::vec(fragment(), 0..32).prop_map(|parts| parts.concat()),
                1 => prop::collection::vec(any::<u8>(), 0..256),
                // One request that is valid so far, then noise.
                1 => (prop::collection::vec(arg(), 0..4), garbage_tail())
                    .prop_map(|(args, tail)| [encode(&args), tail].concat()),
            ]
        }

        fn garbage_tail() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(fragment(), 0..6).prop_map(|parts| parts.concat())
        }

        /// One argument: any bytes, often with RESP's own syntax inside.
        fn arg() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..40),
                prop::collection::vec(fragment(), 0..4).prop_map(|parts| parts.concat()),
            ]
        }

        /// Where to cut an input of any length into pieces.
        fn cuts() -> impl Strategy<Value = Vec<Index>> {
            prop::collection::vec(any::<Index>(), 0..6)
        }

        fn pieces<'a>(input: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            at.push(0);
            at.push(input.len());
            at.sort_unstable();
            at.windows(2).map(|w| &input[w[0]..w[1]]).collect()
        }

        /// What a connection made of the input: the requests read, and then
        /// either the bytes left waiting or the error that closed it.
        type Outcome = (Vec<Vec<Bytes>>, Result<usize, ProtocolError>);

        /// Feeds the pieces to one reader in turn, reading after each until
        /// it waits or refuses, and checks every call: a request takes bytes
        /// off the front, waiting or refusing takes none, and what is left is
        /// always exactly the unread rest of the input.
        fn feed(
            pieces: &[&[u8]],
            mut read: impl FnMut(&mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError>,
        ) -> Result<Outcome, TestCaseError> {
            let input: Vec<u8> = pieces.concat();
            let mut buf = BytesMut::new();
            let (mut fed, mut consumed) = (0, 0);
            let mut requests = Vec::new();
            for piece in pieces {
                buf.extend_from_slice(piece);
                fed += piece.len();
                // Each request consumes at least one byte: a bound, not a guess.
                let most_calls = buf.len() + 1;
                let mut calls = 0;
                loop {
                    calls += 1;
                    prop_assert!(calls <= most_calls, "no progress at {consumed}");
                    let before = buf.len();
                    match read(&mut buf) {
                        Ok(Some(request)) => {
                            prop_assert!(buf.len() < before, "a request took no bytes");
                            consumed += before - buf.len();
                            requests.push(request);
                        }
                        Ok(None) => {
                            prop_assert_eq!(buf.len(), before, "consumed while waiting");
                            break;
                        }
                        Err(e) => {
                            prop_assert_eq!(buf.len(), before, "consumed while refusing");
                            prop_assert_eq!(&buf[..], &input[consumed..fed]);
                            return Ok((requests, Err(e)));
                        }
                    }
                    prop_assert!(consumed <= fed);
                    prop_assert_eq!(&buf[..], &input[consumed..fed]);
                }
            }
            Ok((requests, Ok(buf.len())))
        }

        /// An inline request line: words without ASCII whitespace, separated
        /// and surrounded by runs of it, ended by `\n` or `\r\n`.
        fn inline_line() -> impl Strategy<Value = (Vec<u8>, Vec<Vec<u8>>)> {
            let word = prop::collection::vec(
                any::<u8>().prop_filter("not blank", |b| !b.is_ascii_whitespace()),
                1..12,
            );
            let blank = prop::collection::vec(prop::sample::select(&b" \t\r\x0c"[..]), 1..3);
            (
                prop::collection::vec((word, blank.clone()), 0..5),
                prop::option::of(blank),
                any::<bool>(),
            )
                .prop_map(|(words, leading, crlf)| {
                    let mut line = leading.unwrap_or_default();
                    for (word, blank) in &words {
                        line.extend_from_slice(word);
                        line.extend_from_slice(blank);
                    }
                    if line.first() == Some(&b'*') {
                        // That would make it a multibulk request.
                        line.insert(0, b' ');
                    }
                    line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                    (line, words.into_iter().map(|(word, _)| word).collect())
                })
        }

        proptest! {
            #![proptest_config(config(512))]

            /// Arbitrary bytes, whole or in pieces: never a panic, never a loop
            /// in place, nothing taken while waiting or refusing; and the pieces
            /// make no difference to what is read or refused.
            #[test]
            fn prop_garbage_is_read_or_refused_the_same_in_any_pieces(
                input in garbage(),
                cuts in cuts(),
            ) {
                let whole = feed(&[&input], read_request)?;
                let mut reader = RequestReader::default();
                let split = feed(&pieces(&input, &cuts), |buf| reader.read(buf))?;
                prop_assert_eq!(&split, &whole);
                // The same, one byte at a time.
                let bytes: Vec<&[u8]> = input.chunks(1).collect();
                let mut reader = RequestReader::default();
                prop_assert_eq!(feed(&bytes, |buf| reader.read(buf))?, whole);
            }
        }

        proptest! {
            #![proptest_config(config(256))]

            /// Any requests of any bytes, encoded as a client does and sent in
            /// one pipeline, cut anywhere: read back exactly, in order.
            #[test]
            fn prop_multibulk_requests_round_trip_in_any_pieces(
                requests in prop::collection::vec(prop::collection::vec(arg(), 0..6), 1..5),
                cuts in cuts(),
            ) {
                let wire: Vec<u8> = requests.iter().flat_map(|r| encode(r)).collect();
                let expected: Vec<Vec<Bytes>> = requests
                    .iter()
                    .map(|r| r.iter().map(|a| Bytes::copy_from_slice(a)).collect())
                    .collect();
                let mut reader = RequestReader::default();
                let read = feed(&pieces(&wire, &cuts), |buf| reader.read(buf))?;
                prop_assert_eq!(read, (expected.clone(), Ok(0)));
                // Every proper prefix of the first request waits, takes nothing.
                let first = encode(&requests[0]);
                for end in 0..first.len() {
                    let mut buf = BytesMut::from(&first[..end]);
                    prop_assert_eq!(read_request(&mut buf), Ok(None));
                    prop_assert_eq!(buf.len(), end);
                }
                // And a byte at a time into one reader.
                let bytes: Vec<&[u8]> = wire.chunks(1).collect();
                let mut reader = RequestReader::default();
                prop_assert_eq!(feed(&bytes, |buf| reader.read(buf))?, (expected, Ok(0)));
            }

            /// Inline lines and multibulk requests mixed in one pipeline, cut
            /// anywhere: each comes back as its words, in order.
            #[test]
            fn prop_mixed_pipelines_read_back_in_order(
                requests in prop::collection::vec(
                    prop_oneof![
                        inline_line(),
                        prop::collection::vec(arg(), 0..4).prop_map(|args| (encode(&args), args)),
                    ],
                    1..6,
                ),
                cuts in cuts(),
            ) {
                let wire: Vec<u8> = requests.iter().flat_map(|(bytes, _)| bytes.clone()).collect();
                let expected: Vec<Vec<Bytes>> = requests
                    .iter()
                    .map(|(_, words)| words.iter().map(|w| Bytes::copy_from_slice(w)).collect())
                    .collect();
                let mut reader = RequestReader::default();
                let read = feed(&pieces(&wire, &cuts), |buf| reader.read(buf))?;
                prop_assert_eq!(read, (expected, Ok(0)));
            }
        }
    }
}
