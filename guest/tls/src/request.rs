//! What the client asked for, for the access log and the metrics only: its request line and
//! User-Agent, read from the plaintext it sends after the response has left. The response was
//! chosen by SNI before the request came, and nothing here can change that.
//!
//! The request head is kept as it arrives, up to [`REQUEST_HEAD_BYTES`], and parsed once, when the
//! connection's outcome is asked for, with `httparse`. Each field is at most [`FIELD_BYTES`], with
//! every byte outside printable ASCII, and `"` and `\`, written as `\xNN`, so that a field can be
//! quoted in a log line and never breaks it.

/// How much of the client's plaintext is kept to find its request line and User-Agent: the head
/// of a browser's request with its cookies fits (nginx's default header buffers are 1 and 8 KiB).
/// A User-Agent beyond it is not reported.
pub const REQUEST_HEAD_BYTES: usize = 8 * 1024;

/// The most bytes of a field reported, after escaping.
pub const FIELD_BYTES: usize = 256;

/// The most headers looked through for the User-Agent; a head with more reports none.
const MAX_HEADERS: usize = 64;

/// A client's HTTP request, as far as the log needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`...
    pub method: String,
    /// The request target: `/`, `/papers/x.pdf?download`, `*`...
    pub target: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// The User-Agent header's value, if it sent one.
    pub user_agent: Option<String>,
}

/// The client's plaintext, kept up to [`REQUEST_HEAD_BYTES`].
#[derive(Debug, Default)]
pub struct RequestHead(Vec<u8>);

impl RequestHead {
    /// Keeps what of `plaintext` still fits.
    pub fn keep(&mut self, plaintext: &[u8]) {
        let room = REQUEST_HEAD_BYTES - self.0.len();
        self.0
            .extend_from_slice(&plaintext[..plaintext.len().min(room)]);
    }

    /// Whether nothing more would be kept.
    pub fn is_full(&self) -> bool {
        self.0.len() == REQUEST_HEAD_BYTES
    }

    /// The request line it begins with, and the User-Agent if the head is whole; `None` if it is
    /// not an HTTP/1 request line (nothing sent, an HTTP/2 preface, garbage).
    pub fn parse(&self) -> Option<Request> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        // A head cut off by the bound, or with too many headers, still has its request line:
        // httparse fills the fields in as it reads them.
        let whole = matches!(request.parse(&self.0), Ok(httparse::Status::Complete(_)));
        let (method, target, version) = (request.method?, request.path?, request.version?);
        let user_agent = match whole {
            true => request
                .headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case("user-agent"))
                .map(|header| escaped(header.value)),
            false => None,
        };
        Some(Request {
            method: escaped(method.as_bytes()),
            target: escaped(target.as_bytes()),
            version: format!("HTTP/1.{version}"),
            user_agent,
        })
    }
}

/// A request as the access log writes it: `request="GET / HTTP/1.1" ua="curl/8.5.0"`, with `-`
/// for what the client did not send.
pub fn log_fields(request: Option<&Request>) -> String {
    match request {
        None => "request=- ua=-".to_owned(),
        Some(request) => format!(
            "request=\"{} {} {}\" ua={}",
            request.method,
            request.target,
            request.version,
            match &request.user_agent {
                Some(agent) => format!("\"{agent}\""),
                None => "-".to_owned(),
            }
        ),
    }
}

/// `bytes` with everything outside printable ASCII, and `"` and `\`, as `\xNN`; at most
/// [`FIELD_BYTES`] long, cut at a whole character.
pub fn escaped(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len().min(FIELD_BYTES));
    for &byte in bytes {
        let plain = (b' '..=b'~').contains(&byte) && byte != b'"' && byte != b'\\';
        let width = if plain { 1 } else { 4 };
        if text.len() + width > FIELD_BYTES {
            break;
        }
        match plain {
            true => text.push(char::from(byte)),
            false => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                text.push_str("\\x");
                text.push(char::from(HEX[usize::from(byte >> 4)]));
                text.push(char::from(HEX[usize::from(byte & 15)]));
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> RequestHead {
        let mut head = RequestHead::default();
        head.keep(bytes);
        head
    }

    #[test]
    fn a_request_line_and_its_user_agent_are_read() {
        let request =
            head(b"GET /papers/a.pdf?x=1 HTTP/1.1\r\nHost: a\r\nuser-AGENT: curl/8.5.0\r\n\r\n")
                .parse()
                .unwrap();
        assert_eq!(
            request,
            Request {
                method: "GET".into(),
                target: "/papers/a.pdf?x=1".into(),
                version: "HTTP/1.1".into(),
                user_agent: Some("curl/8.5.0".into()),
            }
        );
        let no_agent = head(b"HEAD / HTTP/1.0\r\n\r\n").parse().unwrap();
        assert_eq!(
            (no_agent.version.as_str(), no_agent.user_agent),
            ("HTTP/1.0", None)
        );
    }

    #[test]
    fn nothing_or_no_http_1_request_is_none() {
        assert_eq!(head(b"").parse(), None);
        assert_eq!(head(b"\x16\x03\x01garbage").parse(), None);
        assert_eq!(head(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").parse(), None);
        assert_eq!(head(b"GET /half").parse(), None);
    }

    #[test]
    fn a_head_cut_off_by_the_bound_keeps_its_request_line() {
        let mut bytes = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
        bytes.resize(REQUEST_HEAD_BYTES * 2, b'a');
        let mut head = head(&bytes);
        head.keep(b"\r\nUser-Agent: late\r\n\r\n");
        assert!(head.is_full());
        let request = head.parse().unwrap();
        assert_eq!((request.target.as_str(), request.user_agent), ("/", None));
    }

    #[test]
    fn fields_are_bounded_and_escaped() {
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'x', 1000));
        line.extend_from_slice(b" HTTP/1.1\r\nUser-Agent: a \"b\" \\ \xff\r\n\r\n");
        let request = head(&line).parse().unwrap();
        assert_eq!(request.target.len(), FIELD_BYTES);
        assert_eq!(
            request.user_agent.as_deref(),
            Some(r"a \x22b\x22 \x5c \xff")
        );
        assert_eq!(escaped(b"\x00\n\x7f"), r"\x00\x0a\x7f");
        // Cut before an escape that would not fit whole.
        let cut = escaped(
            &[b'a'; FIELD_BYTES - 2]
                .iter()
                .chain(b"\x00")
                .copied()
                .collect::<Vec<_>>(),
        );
        assert_eq!(cut.len(), FIELD_BYTES - 2);
    }
}
