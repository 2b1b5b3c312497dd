//! Port 80: every request gets `301 Moved Permanently` to the https URL of the host it asked for
//! (if the site serves that name) or of the default host. Requests are read bounded in size and
//! time and parsed with `httparse`; anything malformed gets a 400 (the answer is host/shared's,
//! the unikernel's too). The one exception: while an ACME order is open, its HTTP-01 tokens are
//! answered (see acme.rs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where ACME's HTTP-01 validation asks for a token.
pub const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// The HTTP-01 answers the port-80 side gives while an order is open: token -> key authorization.
#[derive(Clone, Debug, Default)]
pub struct Challenges(Arc<Mutex<HashMap<String, String>>>);

impl Challenges {
    /// The key authorization for a request path `/.well-known/acme-challenge/TOKEN`, if open.
    pub fn response(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(CHALLENGE_PATH)?;
        self.tokens().get(token).cloned()
    }

    pub(crate) fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub use tls_site_shared::redirect::{MAX_REQUEST_HEAD, RedirectOutcome};

/// Where the redirects point (the site's names and the port clients reach HTTPS on), and the
/// ACME tokens to answer, if any. The redirect itself is shared with the unikernel.
#[derive(Clone, Debug)]
pub struct RedirectTable {
    table: tls_site_shared::redirect::RedirectTable,
    challenges: Option<Challenges>,
}

impl RedirectTable {
    pub fn new(hosts: Vec<String>, default_host: String, https_port: u16) -> RedirectTable {
        RedirectTable {
            table: tls_site_shared::redirect::RedirectTable::new(hosts, default_host, https_port),
            challenges: None,
        }
    }

    /// Also answers `/.well-known/acme-challenge/TOKEN` for the tokens of open ACME orders.
    pub fn answering_challenges(self, challenges: Challenges) -> RedirectTable {
        RedirectTable {
            challenges: Some(challenges),
            ..self
        }
    }

    /// `https://host[:port]/` for the Host header given, or for the default host.
    pub fn location(&self, host_header: Option<&[u8]>) -> String {
        self.table.location(host_header)
    }
}

/// The answer to a request head: an open ACME token's key authorization, a 301, a 400 if it is
/// malformed or too large, `None` if more bytes are needed.
pub fn answer(table: &RedirectTable, head: &[u8]) -> Option<(Vec<u8>, RedirectOutcome)> {
    tls_site_shared::redirect::answer(&table.table, head, |path| {
        table.challenges.as_ref()?.response(path)
    })
}

/// Reads one request head (bounded by `MAX_REQUEST_HEAD` and `deadline`) and answers it.
pub async fn serve_connection(
    table: &RedirectTable,
    mut stream: TcpStream,
    deadline: Duration,
) -> RedirectOutcome {
    let _ = stream.set_nodelay(true);
    let exchange = async {
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        loop {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return RedirectOutcome::Closed;
            }
            let room = MAX_REQUEST_HEAD - head.len();
            head.extend_from_slice(&chunk[..n.min(room)]);
            if let Some((response, outcome)) = answer(table, &head) {
                let _ = stream.write_all(&response).await;
                let _ = stream.shutdown().await;
                return outcome;
            }
        }
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .unwrap_or(RedirectOutcome::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(https_port: u16) -> RedirectTable {
        let hosts = vec!["a.test".to_owned(), "paper.a.test".to_owned()];
        RedirectTable::new(hosts, "a.test".to_owned(), https_port)
    }

    #[test]
    fn a_known_host_is_redirected_to_itself() {
        let (response, outcome) = answer(
            &table(8443),
            b"GET /x HTTP/1.1\r\nHost: paper.a.test\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            outcome,
            RedirectOutcome::Redirected("https://paper.a.test:8443/".into())
        );
        let text = String::from_utf8(response).unwrap();
        assert!(text.starts_with("HTTP/1.1 301 Moved Permanently\r\n"));
        assert!(text.contains("\r\nLocation: https://paper.a.test:8443/\r\n"));
    }

    #[test]
    fn the_port_443_is_left_out_and_host_ports_ignored() {
        let (_, outcome) = answer(
            &table(443),
            b"GET / HTTP/1.1\r\nHost: PAPER.a.test:80\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            outcome,
            RedirectOutcome::Redirected("https://paper.a.test/".into())
        );
    }

    #[test]
    fn unknown_or_missing_hosts_go_to_the_default() {
        let (_, unknown) =
            answer(&table(443), b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n").unwrap();
        assert_eq!(
            unknown,
            RedirectOutcome::Redirected("https://a.test/".into())
        );
        let (_, missing) = answer(&table(443), b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(
            missing,
            RedirectOutcome::Redirected("https://a.test/".into())
        );
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(answer(&table(443), b"GET / HTTP/1.1\r\nHost: a.te").is_none());
    }

    #[test]
    fn malformed_and_oversized_heads_get_400() {
        let (response, outcome) = answer(&table(443), b"\x16\x03\x01garbage\r\n\r\n").unwrap();
        assert!(response.starts_with(b"HTTP/1.1 400 "));
        assert_eq!(outcome, RedirectOutcome::BadRequest("malformed request"));
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_REQUEST_HEAD, b'a');
        assert_eq!(
            answer(&table(443), &huge).unwrap().1,
            RedirectOutcome::BadRequest("request head too large")
        );
    }
}
