//! RFC 8446 at the record layer, against the real host and component on loopback: a real rustls
//! client whose second flight is rewritten into malformed records (protected with its own
//! handshake keys, taken from its key log) must get the alert the RFC names, not a bare close
//! (§5.1, §5.4, §6).

#[path = "../../tests/client.rs"]
mod client;

mod support;

use client::{Trust, config};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CipherSuite, ClientConnection, KeyLog};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tls_site::{BUILT_COMPONENT, ServeOptions, Server, certs};

/// How long a client waits for the server's answer before calling it a failure.
const CLIENT_PATIENCE: Duration = Duration::from_secs(60);

const CHANGE_CIPHER_SPEC: u8 = 20;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

struct Shared {
    https: SocketAddr,
    ca: PathBuf,
    /// The site's default host name: its certificate covers it.
    host: String,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = support::temp_dir("conformance");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let hosts = support::site_hosts();
        certs::dev_certs(&dir, &hosts).unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut options = ServeOptions::new(BUILT_COMPONENT.into(), dir.clone());
            options.https = ([127, 0, 0, 1], 0).into();
            options.no_http = true;
            let server = runtime.block_on(Server::start(&options)).unwrap();
            sender
                .send(Shared {
                    https: server.https_addr(),
                    ca: dir.join(certs::DEV_CA_FILE),
                    host: hosts[0].clone(),
                })
                .unwrap();
            runtime.block_on(std::future::pending::<()>());
        });
        receiver.recv().unwrap()
    })
}

/// The traffic secrets a client logs (SSLKEYLOGFILE's), by label.
#[derive(Debug, Default)]
struct Secrets(Mutex<Vec<(String, Vec<u8>)>>);

impl KeyLog for Secrets {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .push((label.to_owned(), secret.to_vec()));
    }

    fn will_log(&self, _label: &str) -> bool {
        true
    }
}

impl Secrets {
    fn get(&self, label: &str) -> Vec<u8> {
        let secrets = self.0.lock().unwrap();
        let found = secrets.iter().find(|(name, _)| name == label);
        found
            .unwrap_or_else(|| panic!("no {label} logged"))
            .1
            .clone()
    }
}

/// One direction's record protection with TLS_AES_128_GCM_SHA256 (RFC 8446 §5.2, §7.3): what the
/// client's rustls would do, so that records it would never send can be sent in its name.
struct Protection {
    key: LessSafeKey,
    iv: [u8; 12],
    sequence: u64,
}

impl Protection {
    fn new(traffic_secret: &[u8]) -> Protection {
        let key = expand_label(traffic_secret, "key", 16);
        let iv = expand_label(traffic_secret, "iv", 12);
        Protection {
            key: LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).unwrap()),
            iv: iv.try_into().unwrap(),
            sequence: 0,
        }
    }

    fn nonce(&mut self) -> Nonce {
        let mut nonce = self.iv;
        for (byte, sequence) in nonce[4..].iter_mut().zip(self.sequence.to_be_bytes()) {
            *byte ^= sequence;
        }
        self.sequence += 1;
        Nonce::assume_unique_for_key(nonce)
    }

    /// A whole record: `content` with `inner_type` (TLSInnerPlaintext), sealed.
    fn seal(&mut self, content: &[u8], inner_type: u8) -> Vec<u8> {
        let mut payload = [content, &[inner_type]].concat();
        let length = (payload.len() + AES_128_GCM.tag_len()) as u16;
        let header = [APPLICATION_DATA, 3, 3, (length >> 8) as u8, length as u8];
        let nonce = self.nonce();
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(header), &mut payload)
            .unwrap();
        [&header[..], &payload].concat()
    }

    /// The content of a protected record (header and payload), its padding and type removed.
    fn open(&mut self, record: &[u8]) -> Vec<u8> {
        let (header, payload) = record.split_at(5);
        let mut payload = payload.to_vec();
        let nonce = self.nonce();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(header), &mut payload)
            .unwrap();
        let end = plaintext.iter().rposition(|&byte| byte != 0).unwrap();
        plaintext[..end].to_vec()
    }
}

/// HKDF-Expand-Label with SHA-256 and an empty context (RFC 8446 §7.1).
fn expand_label(secret: &[u8], label: &str, length: usize) -> Vec<u8> {
    struct Length(usize);
    impl ring::hkdf::KeyType for Length {
        fn len(&self) -> usize {
            self.0
        }
    }
    let label = format!("tls13 {label}");
    let info = [
        &(length as u16).to_be_bytes()[..],
        &[label.len() as u8],
        label.as_bytes(),
        &[0],
    ];
    let mut out = vec![0; length];
    ring::hkdf::Prk::new_less_safe(ring::hkdf::HKDF_SHA256, secret)
        .expand(&info, Length(length))
        .unwrap()
        .fill(&mut out)
        .unwrap();
    out
}

/// The records in `bytes`, whole (header and payload).
fn records(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut records = Vec::new();
    while bytes.len() >= 5 {
        let length = 5 + u16::from_be_bytes([bytes[3], bytes[4]]) as usize;
        let (record, rest) = bytes.split_at(length);
        records.push(record);
        bytes = rest;
    }
    records
}

fn connect(client_config: rustls::ClientConfig) -> (ClientConnection, TcpStream) {
    let shared = shared();
    let name = ServerName::try_from(shared.host.clone()).unwrap();
    let client = ClientConnection::new(Arc::new(client_config), name).unwrap();
    let socket = TcpStream::connect(shared.https).unwrap();
    socket.set_read_timeout(Some(CLIENT_PATIENCE)).unwrap();
    (client, socket)
}

/// Hands the client what the server sends until `until` says stop: the alert it received, if
/// any, or how the connection ended without one.
fn receive(
    client: &mut ClientConnection,
    socket: &mut TcpStream,
    until: impl Fn(&ClientConnection) -> bool,
) -> Result<(), String> {
    let mut plaintext = vec![0; 64 * 1024];
    while !until(client) {
        match client.read_tls(socket) {
            Ok(0) => return Err("the server closed without an alert".into()),
            Ok(_) => {}
            Err(error) => return Err(format!("the connection broke without an alert: {error}")),
        }
        match client.process_new_packets() {
            Err(rustls::Error::AlertReceived(alert)) => return Err(format!("alert {alert:?}")),
            Err(error) => return Err(format!("the client failed: {error}")),
            Ok(state) if state.peer_has_closed() => return Err("close_notify".into()),
            Ok(_) => while matches!(client.reader().read(&mut plaintext), Ok(n) if n > 0) {},
        }
    }
    Ok(())
}

/// A handshake up to the client's second flight; then, instead of its Finished, the records
/// `rewrite` makes of it (the Finished message, and the client's handshake protection). Returns
/// how the server answered: `Err("alert ...")`, or how it ended without one.
fn second_flight(rewrite: impl FnOnce(&[u8], &mut Protection) -> Vec<Vec<u8>>) -> String {
    let secrets = Arc::new(Secrets::default());
    let mut client_config = config(Trust::Ca(&shared().ca), &[b"http/1.1"]);
    client_config.key_log = secrets.clone();
    let (mut client, mut socket) = connect(client_config);
    while client.wants_write() {
        client.write_tls(&mut socket).unwrap();
    }
    // The server's flight, to its Finished: then the client's own Finished is ready to go.
    receive(&mut client, &mut socket, |client| !client.is_handshaking()).unwrap();
    assert_eq!(
        client.negotiated_cipher_suite().map(|suite| suite.suite()),
        Some(CipherSuite::TLS13_AES_128_GCM_SHA256),
        "the server's first choice, which `Protection` speaks"
    );
    let mut flight = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut flight).unwrap();
    }
    let secret = secrets.get("CLIENT_HANDSHAKE_TRAFFIC_SECRET");
    let mut rewritten = Vec::new();
    let mut rewrite = Some(rewrite);
    for record in records(&flight) {
        match record[0] {
            CHANGE_CIPHER_SPEC => rewritten.extend_from_slice(record),
            APPLICATION_DATA => {
                let finished = Protection::new(&secret).open(record);
                assert_eq!(finished[0], 20, "a Finished message");
                let rewrite = rewrite.take().expect("one encrypted record: the Finished");
                for record in rewrite(&finished, &mut Protection::new(&secret)) {
                    rewritten.extend(record);
                }
            }
            other => panic!("a record of type {other} in the client's second flight"),
        }
    }
    socket.write_all(&rewritten).unwrap();
    match receive(&mut client, &mut socket, |_| false) {
        Ok(()) => unreachable!(),
        Err(answer) => answer,
    }
}

/// The control: the client's Finished, sealed again as its rustls sealed it, is accepted, and
/// the connection ends as a served one does, with close_notify.
#[test]
fn a_well_formed_second_flight_resealed_is_served() {
    let answer = second_flight(|finished, protection| vec![protection.seal(finished, HANDSHAKE)]);
    assert_eq!(answer, "close_notify");
}

/// RFC 8446 §5.4: a TLSInnerPlaintext with no non-zero octet (a record of content type 0).
#[test]
fn a_record_of_content_type_zero_in_the_second_flight_gets_unexpected_message() {
    let answer = second_flight(|finished, protection| {
        vec![
            protection.seal(&[0; 8], 0),
            protection.seal(finished, HANDSHAKE),
        ]
    });
    assert_eq!(
        answer,
        format!("alert {:?}", AlertDescription::UnexpectedMessage)
    );
}

/// RFC 8446 §5.1, §6: application data, even empty, before the client's Finished.
#[test]
fn zero_length_application_data_before_the_finished_gets_unexpected_message() {
    let answer = second_flight(|finished, protection| {
        vec![
            protection.seal(&[], APPLICATION_DATA),
            protection.seal(finished, HANDSHAKE),
        ]
    });
    assert_eq!(
        answer,
        format!("alert {:?}", AlertDescription::UnexpectedMessage)
    );
}

/// RFC 8446 §5.1: "Handshake messages MUST NOT be interleaved with other record types."
#[test]
fn application_data_inside_the_split_finished_gets_unexpected_message() {
    let answer = second_flight(|finished, protection| {
        let (first, second) = finished.split_at(finished.len() / 2);
        vec![
            protection.seal(first, HANDSHAKE),
            protection.seal(b"x", APPLICATION_DATA),
            protection.seal(second, HANDSHAKE),
        ]
    });
    assert_eq!(
        answer,
        format!("alert {:?}", AlertDescription::UnexpectedMessage)
    );
}
