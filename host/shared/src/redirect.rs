//! Port 80's answer to a request head: `301 Moved Permanently` to the https URL of the host it
//! asked for (if the site serves that name) or of the default host; a 400 for anything malformed
//! or too large. The host adds ACME's HTTP-01 tokens in front of it (host/src/redirect.rs).

use alloc::borrow::ToOwned as _;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// A request head larger than this is refused: a redirect needs only the Host header.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;

/// Where the redirects point: the site's names and the port clients reach HTTPS on.
#[derive(Clone, Debug)]
pub struct RedirectTable {
    hosts: Vec<String>,
    default_host: String,
    https_port: u16,
}

/// What happened on one port-80 connection, for the access log.
#[derive(Debug, PartialEq, Eq)]
pub enum RedirectOutcome {
    Redirected(String),
    /// An ACME HTTP-01 token, answered with its key authorization.
    AcmeChallenge(String),
    BadRequest(&'static str),
    TimedOut,
    Closed,
}

impl RedirectOutcome {
    /// The access log's line for it (without the time): `http PEER 301 LOCATION`, ...
    pub fn log_line(&self, peer: impl core::fmt::Display) -> String {
        match self {
            RedirectOutcome::Redirected(location) => format!("http {peer} 301 {location}"),
            RedirectOutcome::AcmeChallenge(token) => {
                format!("http {peer} 200 acme-challenge {token}")
            }
            RedirectOutcome::BadRequest(why) => format!("http {peer} 400 {why}"),
            RedirectOutcome::TimedOut => format!("http {peer} timed out"),
            RedirectOutcome::Closed => format!("http {peer} closed without a request"),
        }
    }
}

impl RedirectTable {
    pub fn new(hosts: Vec<String>, default_host: String, https_port: u16) -> RedirectTable {
        RedirectTable {
            hosts,
            default_host,
            https_port,
        }
    }

    /// `https://host[:port]/` for the Host header given, or for the default host.
    pub fn location(&self, host_header: Option<&[u8]>) -> String {
        let requested = host_header
            .and_then(|value| core::str::from_utf8(value).ok())
            .map(|value| {
                value
                    .trim()
                    .split_once(':')
                    .map_or(value.trim(), |(name, _port)| name)
            })
            .map(|name| name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase());
        let host = requested
            .as_deref()
            .and_then(|name| self.hosts.iter().find(|known| known.as_str() == name))
            .unwrap_or(&self.default_host);
        match self.https_port {
            443 => format!("https://{host}/"),
            port => format!("https://{host}:{port}/"),
        }
    }
}

/// The answer to a request head: `challenge`'s answer for its path if it has one (ACME's key
/// authorization), else a 301; a 400 if it is malformed or too large; `None` if more bytes are
/// needed.
pub fn answer(
    table: &RedirectTable,
    head: &[u8],
    challenge: impl FnOnce(&str) -> Option<String>,
) -> Option<(Vec<u8>, RedirectOutcome)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {
            if let Some((path, key_authorization)) =
                request.path.and_then(|path| Some((path, challenge(path)?)))
            {
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{key_authorization}",
                    key_authorization.len()
                );
                return Some((
                    response.into_bytes(),
                    RedirectOutcome::AcmeChallenge(path.to_owned()),
                ));
            }
            let host = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"));
            let location = table.location(host.map(|h| h.value));
            let response = format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            );
            Some((response.into_bytes(), RedirectOutcome::Redirected(location)))
        }
        Ok(httparse::Status::Partial) if head.len() < MAX_REQUEST_HEAD => None,
        Ok(httparse::Status::Partial) => Some(bad_request("request head too large")),
        Err(_) => Some(bad_request("malformed request")),
    }
}

fn bad_request(why: &'static str) -> (Vec<u8>, RedirectOutcome) {
    let response = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    (response.to_vec(), RedirectOutcome::BadRequest(why))
}
