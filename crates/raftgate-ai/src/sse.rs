//! Server-sent events, read incrementally and written.
//!
//! Providers stream with SSE (the WHATWG "event stream" format). Reads from the network split
//! events anywhere — inside a line, between `\r` and `\n` — so [`SseParser`] keeps the unfinished
//! tail and hands out each event as soon as its blank line arrives, never holding more than one
//! event. Comments (`:` lines, used as keep-alives) are dropped; several `data:` lines of one
//! event are joined with `\n`, as the format says.

use bytes::{BufMut, Bytes, BytesMut};

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any (Anthropic names its events; OpenAI and Gemini do not).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Longest line kept while waiting for its end, so a peer cannot grow memory without bound.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// Why a stream could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    /// A line longer than the limit arrived.
    #[error(
        "the provider sent a server-sent-event line longer than {MAX_LINE} bytes; it is not an event stream"
    )]
    LineTooLong,
}

/// Incremental parser: feed bytes as they arrive, take the events that completed.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet terminated.
    line: Vec<u8>,
    /// A `\r` ended the last line; a `\n` right after it belongs to the same terminator.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// An empty parser.
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Parses `bytes` and appends each event they complete to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(out),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(out);
                }
                _ => {
                    if self.line.len() >= MAX_LINE {
                        return Err(SseError::LineTooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(())
    }

    /// Bytes held for the event not yet complete (its line so far and its data), which the
    /// node's answer memory budget counts.
    pub fn buffered(&self) -> usize {
        self.line.len()
            + self.data.as_ref().map_or(0, String::len)
            + self.event.as_ref().map_or(0, String::len)
    }

    /// Ends the stream: an event whose blank line never came is dispatched too, since
    /// providers sometimes close right after the last `data:` line.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.line.is_empty() {
            self.end_line(out);
        }
        self.dispatch(out);
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        let line = String::from_utf8_lossy(&line);
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if let Some(data) = self.data.take() {
            out.push(SseEvent { event, data });
        }
    }
}

/// Encodes one event; `data` may hold newlines (each becomes its own `data:` line).
pub fn encode(event: Option<&str>, data: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + 32);
    if let Some(name) = event {
        buf.put_slice(b"event: ");
        buf.put_slice(name.as_bytes());
        buf.put_u8(b'\n');
    }
    for line in data.split('\n') {
        buf.put_slice(b"data: ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// The `data: [DONE]` event that ends an OpenAI stream.
pub fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            parser.feed(chunk, &mut out).unwrap();
        }
        parser.finish(&mut out);
        out
    }

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let input = b": keep-alive\r\nevent: message_start\r\ndata: {\"a\":1}\r\n\r\ndata: first\ndata: second\n\nevent: ping\ndata:{}\n\n";
        let expected = vec![
            SseEvent {
                event: Some("message_start".into()),
                data: "{\"a\":1}".into(),
            },
            SseEvent {
                event: None,
                data: "first\nsecond".into(),
            },
            SseEvent {
                event: Some("ping".into()),
                data: "{}".into(),
            },
        ];
        for piece in 1..input.len() {
            assert_eq!(parse_in_pieces(input, piece), expected, "pieces of {piece}");
        }
    }

    #[test]
    fn bare_cr_ends_lines_and_unterminated_last_event_is_kept() {
        let out = parse_in_pieces(b"data: a\r\rdata: b", 3);
        assert_eq!(
            out.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
    }

    #[test]
    fn comment_only_and_event_without_data_dispatch_nothing() {
        assert!(parse_in_pieces(b": ping\n\nevent: x\n\n", 4).is_empty());
    }

    #[test]
    fn encode_round_trips_multi_line_data() {
        let bytes = encode(Some("error"), "line1\nline2");
        assert_eq!(&bytes[..], b"event: error\ndata: line1\ndata: line2\n\n");
        let out = parse_in_pieces(&bytes, 5);
        assert_eq!(out[0].data, "line1\nline2");
        assert_eq!(out[0].event.as_deref(), Some("error"));
    }
}
