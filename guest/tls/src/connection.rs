//! One connection: the TLS handshake over a [`Transport`], the response its SNI name picks,
//! close_notify, and a bounded drain of what the client still sends.
//!
//! The component's transport is the pair of `wasi:io` streams the host hands it
//! (`component.rs`); `examples/native.rs` gives the same code a `std::net` socket, so the cost of
//! the sandbox can be measured against the same TLS code run natively; the tests script a rustls
//! client in memory.

use crate::config::{Entry, SniTable};
use rustls::server::{AcceptedAlert, Acceptor};
use rustls::ServerConnection;
use site::Response;
use std::io::{IoSlice, Write as _};

/// How much of the client's trailing bytes (its Finished, request, close_notify) are read and
/// thrown away before closing, and for how long at most. Enough for any sane request; a client
/// that sends more or stalls is cut off, at the cost of a possible reset on its side only.
pub const DRAIN_BYTES: usize = 64 * 1024;
pub const DRAIN_NANOS: u64 = 1_000_000_000;

/// The largest single read asked of the host.
pub const READ_CHUNK: u64 = 16 * 1024;

/// The connection's bytes, as the TLS code needs them.
pub trait Transport {
    /// Blocks for the client's next bytes (at most `READ_CHUNK`); `None` when it has closed.
    fn read(&mut self) -> Result<Option<Vec<u8>>, Failure>;
    /// Writes `bytes` whole and waits until they have left.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Failure>;
    /// Reads and hands to `each` what the client sends, until `each` returns false, the client
    /// closes or an error, `max_bytes` or `max_nanos` from now, whichever comes first.
    fn drain(&mut self, max_bytes: usize, max_nanos: u64, each: &mut dyn FnMut(&[u8]) -> bool);
}

/// What a served connection amounted to, for the access log.
#[derive(Debug)]
pub struct Served {
    /// The SNI name the client sent, if any.
    pub server_name: Option<String>,
    /// The first host name of the response that was served.
    pub resource: &'static str,
    /// Plaintext bytes of the response written (head and body).
    pub bytes: u64,
    /// Whether the client finished its side of the handshake before the connection ended.
    pub client_finished: bool,
}

/// Why a connection was not served. None of these is the server's fault; the deadlines are
/// the transport's.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("the client's bytes are not acceptable TLS: {0}; rustls answered with an alert, there is nothing to fix here")]
    Tls(rustls::Error),
    #[error("the connection ended or broke before the response was written: {0}")]
    Io(String),
    #[error("the client did not send its whole ClientHello within the handshake deadline; raise it if real clients on slow links hit this")]
    HandshakeTimeout,
    #[error("the client stopped taking the response for longer than the stall deadline; raise it if real clients on slow links hit this")]
    Stalled,
}

/// Serves one connection: reads the ClientHello, looks its SNI name up in `table` once (which
/// decides both certificate and response), then handshakes and writes the response.
pub fn serve(table: &SniTable, transport: &mut dyn Transport) -> Result<Served, Failure> {
    let mut wire = Wire { transport, outgoing: Vec::with_capacity(READ_CHUNK as usize) };
    let (mut tls, entry) = wire.accept(table)?;
    let config = &entry.config;
    let mut pending = Pending { response: entry.response, written: 0 };

    loop {
        pending.queue(&mut tls);
        if tls.wants_write() {
            wire.flush(&mut tls)?;
            continue;
        }
        if pending.done() {
            break;
        }
        // rustls waits for the client: the rest of its handshake, or room to queue more.
        match wire.read()? {
            Some(bytes) => wire.feed(&mut tls, &bytes)?,
            None => return Err(Failure::Io("closed before the response was sent".into())),
        }
    }

    // The whole response has left. rustls issues session tickets once the client's Finished is
    // in, and they must precede close_notify, so wait for it (bounded, like the drain). A client
    // that hangs up as soon as it has the body (curl does) was served all the same; it just
    // misses its ticket or our close_notify.
    if config.send_tls13_tickets > 0 && config.ticketer.enabled() {
        wire.await_client_finished(&mut tls);
    }
    tls.send_close_notify();
    let client_finished = match wire.flush(&mut tls) {
        Ok(()) => wire.drain(&mut tls),
        Err(_) => !tls.is_handshaking(),
    };
    let response = pending.response;
    Ok(Served {
        server_name: tls.server_name().map(str::to_owned),
        resource: response.hosts()[0],
        bytes: (response.head().len() + response.body().len()) as u64,
        client_finished,
    })
}

/// The response being queued into rustls: head and body, from `written` on.
struct Pending {
    response: &'static Response,
    written: usize,
}

impl Pending {
    fn total(&self) -> usize {
        self.response.head().len() + self.response.body().len()
    }

    fn done(&self) -> bool {
        self.written == self.total()
    }

    /// Hands rustls as much as it will take. Its buffers are bounded, so a large file goes out in
    /// pieces as the client reads, not all at once in memory.
    fn queue(&mut self, tls: &mut ServerConnection) {
        while !self.done() {
            let (head, body) = (self.response.head(), self.response.body());
            let slices = if self.written < head.len() {
                [IoSlice::new(&head[self.written..]), IoSlice::new(body)]
            } else {
                [IoSlice::new(&[]), IoSlice::new(&body[self.written - head.len()..])]
            };
            match tls.writer().write_vectored(&slices) {
                Ok(0) | Err(_) => return,
                Ok(n) => self.written += n,
            }
        }
    }
}

/// The connection, and a buffer in which each TLS flight is gathered so that it reaches the host
/// (and the socket) as one write.
struct Wire<'a> {
    transport: &'a mut dyn Transport,
    outgoing: Vec<u8>,
}

impl Wire<'_> {
    /// Reads until the client's ClientHello is whole, and starts the handshake with the entry
    /// its SNI name selects. On a TLS error the alert rustls queued is still sent.
    fn accept<'t>(&mut self, table: &'t SniTable) -> Result<(ServerConnection, &'t Entry), Failure> {
        let mut acceptor = Acceptor::default();
        loop {
            let Some(bytes) = self.read()? else { return Err(Failure::Io("closed before a ClientHello".into())) };
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                acceptor.read_tls(&mut rest).map_err(|e| Failure::Io(e.to_string()))?;
                let accepted = match acceptor.accept() {
                    Ok(None) => continue,
                    Ok(Some(accepted)) => accepted,
                    Err((error, alert)) => return Err(self.alert(error, alert)),
                };
                let entry = table.lookup(accepted.client_hello().server_name());
                let mut tls = match accepted.into_connection(entry.config.clone()) {
                    Ok(tls) => tls,
                    Err((error, alert)) => return Err(self.alert(error, alert)),
                };
                // What came with the ClientHello (the acceptor's buffer, the rest of this read)
                // is the connection's now.
                if let Err(error) = tls.process_new_packets() {
                    let _ = self.flush(&mut tls);
                    return Err(Failure::Tls(error));
                }
                self.feed(&mut tls, rest)?;
                return Ok((tls, entry));
            }
        }
    }

    /// Sends the alert rustls chose for `error`, as far as the client takes it.
    fn alert(&mut self, error: rustls::Error, mut alert: AcceptedAlert) -> Failure {
        self.outgoing.clear();
        if alert.write_all(&mut self.outgoing).is_ok() {
            let _ = self.transport.write_all(&self.outgoing);
        }
        Failure::Tls(error)
    }

    /// Blocks for the client's next bytes; `None` when it has closed.
    fn read(&mut self) -> Result<Option<Vec<u8>>, Failure> {
        self.transport.read()
    }

    /// Gives rustls the client's bytes. On a TLS error the alert rustls queued is still sent.
    fn feed(&mut self, tls: &mut ServerConnection, mut bytes: &[u8]) -> Result<(), Failure> {
        while !bytes.is_empty() {
            let fed = tls.read_tls(&mut bytes).map(|_| ()).map_err(|e| Failure::Io(e.to_string()));
            let processed = fed.and_then(|()| tls.process_new_packets().map(|_| ()).map_err(Failure::Tls));
            if let Err(failure) = processed {
                let _ = self.flush(tls);
                return Err(failure);
            }
        }
        Ok(())
    }

    /// Writes everything rustls has queued, as one buffer, and waits until it has left.
    fn flush(&mut self, tls: &mut ServerConnection) -> Result<(), Failure> {
        self.outgoing.clear();
        while tls.wants_write() {
            tls.write_tls(&mut self.outgoing).map_err(|e| Failure::Io(e.to_string()))?;
        }
        self.transport.write_all(&self.outgoing)
    }

    /// Reads and discards what the client sends after the response, until it closes or a bound is
    /// reached, so that its unread bytes do not turn our close into a reset that cuts off the end
    /// of the body on its side. Returns whether its handshake finished.
    fn drain(&mut self, tls: &mut ServerConnection) -> bool {
        // After an error rustls's state is spent: feeding it more is a misuse (found by the
        // fuzzer, host/fuzz), so a client whose trailing bytes are bad is just drained.
        let mut broken = false;
        self.transport.drain(DRAIN_BYTES, DRAIN_NANOS, &mut |bytes| {
            if tls.is_handshaking() && !broken {
                broken = !matches!(tls.read_tls(&mut &bytes[..]).map(|_| tls.process_new_packets()), Ok(Ok(_)));
            }
            true
        });
        !tls.is_handshaking()
    }

    /// Reads the client's bytes into rustls until its handshake is finished, it closes, or the
    /// drain's bounds are reached. A client that never finishes just gets no ticket.
    fn await_client_finished(&mut self, tls: &mut ServerConnection) {
        if !tls.is_handshaking() {
            return;
        }
        self.transport.drain(DRAIN_BYTES, DRAIN_NANOS, &mut |mut bytes| {
            while !bytes.is_empty() && tls.is_handshaking() {
                let fed = tls.read_tls(&mut bytes).map_err(|_| ());
                if fed.and_then(|_| tls.process_new_packets().map_err(|_| ())).is_err() {
                    return false;
                }
            }
            tls.is_handshaking()
        });
    }
}


/// A real rustls client in memory against `serve`: every test is one connection, scripted by the
/// transport, with no sockets and no clocks.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{dev_table, site_hosts};
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};
    use site::SITE;
    use std::io::Read as _;
    use std::sync::Arc;

    /// Verifies the server's certificate as a browser would, but for `name`: the default host's
    /// certificate is what a client without SNI, or with an unknown name, must get.
    #[derive(Debug)]
    struct CertificateFor {
        name: ServerName<'static>,
        webpki: Arc<WebPkiServerVerifier>,
    }

    impl ServerCertVerifier for CertificateFor {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            _sni: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            self.webpki.verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.webpki.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.webpki.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.webpki.supported_verify_schemes()
        }
    }

    /// The client's side of the connection, as `serve` sees it through [`Transport`].
    struct Client {
        tls: ClientConnection,
        /// Its TLS bytes not yet read by the server.
        outgoing: Vec<u8>,
        /// The plaintext it has received.
        received: Vec<u8>,
        got_close_notify: bool,
        /// What it made of the server's bytes, if it failed.
        error: Option<rustls::Error>,
        /// Once its handshake is done it sends application data for ever.
        keeps_sending: bool,
        /// It hangs up once it has received this many bytes of plaintext.
        hang_up_after: Option<usize>,
        closed: bool,
        /// The bounds `serve` asked `drain` for, and how many bytes the drain read.
        drain_asked: Option<(usize, u64)>,
        drained: usize,
    }

    impl Client {
        /// A client that sends `sni` (none if `None`) and accepts only a certificate for
        /// `certificate_for`, from the development CA (certs/dev-ca.pem).
        fn new(sni: Option<&str>, certificate_for: &str, alpn: &[&[u8]]) -> Client {
            let provider = Arc::new(crate::portable::provider());
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(include_bytes!("../../../certs/dev-ca.pem")) {
                roots.add(ca.unwrap()).unwrap();
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
            let name = ServerName::try_from(certificate_for.to_owned()).unwrap();
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(CertificateFor { name: name.clone(), webpki }))
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
            config.enable_sni = sni.is_some();
            let sni = sni.map_or(name, |sni| ServerName::try_from(sni.to_owned()).unwrap());
            Client {
                tls: ClientConnection::new(Arc::new(config), sni).unwrap(),
                outgoing: Vec::new(),
                received: Vec::new(),
                got_close_notify: false,
                error: None,
                keeps_sending: false,
                hang_up_after: None,
                closed: false,
                drain_asked: None,
                drained: 0,
            }
        }
    }

    impl Transport for Client {
        fn read(&mut self) -> Result<Option<Vec<u8>>, Failure> {
            if self.closed {
                return Ok(None);
            }
            if self.keeps_sending && !self.tls.is_handshaking() {
                let _ = self.tls.writer().write(&[b'x'; READ_CHUNK as usize]);
            }
            while self.tls.wants_write() {
                self.tls.write_tls(&mut self.outgoing).unwrap();
            }
            // All it had to say is said: from the server's side, it has closed.
            if self.outgoing.is_empty() {
                return Ok(None);
            }
            let now = self.outgoing.len().min(READ_CHUNK as usize);
            Ok(Some(self.outgoing.drain(..now).collect()))
        }

        fn write_all(&mut self, mut bytes: &[u8]) -> Result<(), Failure> {
            if self.closed {
                return Err(Failure::Io("the client hung up".into()));
            }
            while !bytes.is_empty() && self.error.is_none() {
                self.tls.read_tls(&mut bytes).unwrap();
                if let Err(error) = self.tls.process_new_packets() {
                    self.error = Some(error);
                }
            }
            let mut plaintext = [0; 4096];
            loop {
                match self.tls.reader().read(&mut plaintext) {
                    Ok(0) => break self.got_close_notify = true,
                    Ok(n) => self.received.extend_from_slice(&plaintext[..n]),
                    Err(_) => break,
                }
            }
            self.closed = self.hang_up_after.is_some_and(|bytes| self.received.len() >= bytes);
            Ok(())
        }

        fn drain(&mut self, max_bytes: usize, max_nanos: u64, each: &mut dyn FnMut(&[u8]) -> bool) {
            // As the component's and the native transports do, with no clock: the client never
            // makes us wait.
            self.drain_asked = Some((max_bytes, max_nanos));
            while self.drained < max_bytes {
                match self.read() {
                    Ok(Some(bytes)) => {
                        self.drained += bytes.len();
                        if !each(&bytes) {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
    }

    /// A peer that sends `script`, one read at a time, and keeps what it is sent.
    struct Raw {
        script: Vec<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Transport for Raw {
        fn read(&mut self) -> Result<Option<Vec<u8>>, Failure> {
            Ok((!self.script.is_empty()).then(|| self.script.remove(0)))
        }

        fn write_all(&mut self, bytes: &[u8]) -> Result<(), Failure> {
            self.written.extend_from_slice(bytes);
            Ok(())
        }

        fn drain(&mut self, _: usize, _: u64, _: &mut dyn FnMut(&[u8]) -> bool) {}
    }

    fn response_bytes(response: &Response) -> Vec<u8> {
        [response.head(), response.body()].concat()
    }

    const HTTP_1_1: &[&[u8]] = &[b"http/1.1"];

    #[test]
    fn one_connection_gets_the_response_for_its_sni() {
        let table = dev_table();
        let paper = SITE.responses().iter().find(|response| !response.is_default()).unwrap();
        let host = paper.hosts()[0];
        let mut client = Client::new(Some(host), host, HTTP_1_1);

        let served = serve(&table, &mut client).unwrap();

        assert_eq!(client.error, None);
        assert!(client.received == response_bytes(paper), "the client got other bytes than {host}'s response");
        assert!(client.got_close_notify);
        assert_eq!(served.server_name.as_deref(), Some(host));
        assert_eq!(served.resource, host);
        assert_eq!(served.bytes, response_bytes(paper).len() as u64);
        assert!(served.client_finished);
    }

    #[test]
    fn every_host_name_gets_its_response() {
        let table = dev_table();
        for host in site_hosts() {
            let mut client = Client::new(Some(host), host, HTTP_1_1);
            let served = serve(&table, &mut client).unwrap();
            let response = SITE.lookup(host).unwrap();
            assert!(client.received == response_bytes(response), "{host} got other bytes than its response");
            assert_eq!(served.resource, response.hosts()[0], "{host}");
        }
    }

    #[test]
    fn no_sni_and_unknown_names_get_the_default_certificate_and_response() {
        let table = dev_table();
        let default = SITE.default_response();
        for sni in [None, Some("unknown.example")] {
            let mut client = Client::new(sni, default.hosts()[0], HTTP_1_1);
            let served = serve(&table, &mut client).unwrap();
            assert_eq!(client.error, None, "{sni:?}");
            assert!(client.received == response_bytes(default), "{sni:?} got other bytes than the default response");
            assert_eq!(served.server_name.as_deref(), sni);
            assert_eq!(served.resource, default.hosts()[0]);
        }
    }

    #[test]
    fn a_client_that_keeps_sending_is_cut_off_at_the_drain_bound() {
        let table = dev_table();
        let host = site_hosts()[0];
        let mut client = Client::new(Some(host), host, HTTP_1_1);
        client.keeps_sending = true;

        let served = serve(&table, &mut client).unwrap();

        assert_eq!(client.drain_asked, Some((DRAIN_BYTES, DRAIN_NANOS)));
        assert_eq!(DRAIN_BYTES, 64 * 1024);
        assert!(client.drained >= DRAIN_BYTES, "drained only {} bytes", client.drained);
        assert!(client.drained < DRAIN_BYTES + READ_CHUNK as usize, "drained {} bytes", client.drained);
        assert!(client.received == response_bytes(SITE.lookup(host).unwrap()));
        assert!(served.client_finished);
    }

    #[test]
    fn a_client_that_hangs_up_right_after_the_body_was_served() {
        let table = dev_table();
        let host = site_hosts()[0];
        let response = response_bytes(SITE.lookup(host).unwrap());
        let mut client = Client::new(Some(host), host, HTTP_1_1);
        client.hang_up_after = Some(response.len());

        let served = serve(&table, &mut client).unwrap();

        assert!(client.received == response);
        assert!(!client.got_close_notify, "it hung up before our close_notify");
        assert_eq!(served.bytes, response.len() as u64);
        assert_eq!(client.drain_asked, None, "nothing is drained from a closed connection");
    }

    #[test]
    fn garbage_is_a_tls_failure_and_is_answered_with_an_alert() {
        let table = dev_table();
        let mut peer = Raw { script: vec![b"GET / HTTP/1.1\r\nHost: tls-site.localhost\r\n\r\n".to_vec()], written: Vec::new() };

        let failure = serve(&table, &mut peer).unwrap_err();

        assert!(matches!(failure, Failure::Tls(_)), "{failure:?}");
        // One TLS alert record (content type 21), fatal (level 2).
        assert_eq!(peer.written.len(), 7, "{:?}", peer.written);
        assert_eq!((peer.written[0], peer.written[5]), (21, 2), "{:?}", peer.written);
    }

    #[test]
    fn a_client_hello_the_policy_refuses_is_a_tls_failure_and_the_client_gets_the_alert() {
        let table = dev_table();
        let host = site_hosts()[0];
        // The site speaks only HTTP/1.1: rustls refuses a client that offers only h2.
        let mut client = Client::new(Some(host), host, &[b"h2"]);

        let failure = serve(&table, &mut client).unwrap_err();

        assert!(matches!(failure, Failure::Tls(rustls::Error::NoApplicationProtocol)), "{failure:?}");
        assert_eq!(
            client.error,
            Some(rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol))
        );
        assert!(client.received.is_empty());
    }

    #[test]
    fn a_client_that_closes_before_its_client_hello_is_an_io_failure() {
        let table = dev_table();
        let mut peer = Raw { script: vec![vec![22, 3, 1]], written: Vec::new() };
        let failure = serve(&table, &mut peer).unwrap_err();
        assert!(matches!(&failure, Failure::Io(why) if why.contains("before a ClientHello")), "{failure:?}");
        assert!(peer.written.is_empty());
    }
}
