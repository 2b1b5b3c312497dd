//! The fatal alerts rustls 0.23 leaves unsent, sent: RFC 8446 wants the peer told why (§5.1,
//! §5.4, §6), and rustls 0.23 returns a few errors of the record layer without queueing their
//! alert (`ConnectionCommon::process_more_input` and `handle_deframe_error` in rustls's conn.rs;
//! rustls's main line sends one for every error since its pull request 2784).
//!
//! rustls has no public call to queue an alert other than close_notify, and only rustls holds the
//! record keys (in the keyless component, the host holds them under rustls's handle). So the
//! alert goes out as rustls's own close_notify, which it protects with the current keys and
//! sequence number, and the cipher suites' record protection, wrapped here, writes the alert's two
//! bytes as a fatal `unexpected_message` instead while [`send_fatal`] asks for it. Nothing else
//! passes through differently: every other record, and every close_notify sent otherwise, is
//! protected as the provider would.

use rustls::crypto::CryptoProvider;
use rustls::crypto::cipher::{
    AeadKey, Iv, MessageDecrypter, MessageEncrypter, OutboundChunks, OutboundOpaqueMessage,
    OutboundPlainMessage, Tls13AeadAlgorithm, UnsupportedOperationError,
};
use rustls::{
    AlertDescription, ConnectionTrafficSecrets, ContentType, PeerMisbehaved, ServerConnection,
    SupportedCipherSuite, Tls13CipherSuite,
};
use std::cell::Cell;

/// The alert RFC 8446 calls for after `error`, for the errors rustls 0.23 can return without
/// one. For an error rustls did send its alert for, [`send_fatal`] then sends nothing: rustls
/// sends no close_notify after a fatal alert.
pub fn unsent_alert(error: &rustls::Error) -> Option<AlertDescription> {
    match error {
        // A handshake message that cannot be joined (too large), found while joining records.
        rustls::Error::InvalidMessage(_) => Some(AlertDescription::DecodeError),
        // §5.4: a TLSInnerPlaintext with no non-zero octet (content type 0).
        rustls::Error::PeerMisbehaved(PeerMisbehaved::IllegalTlsInnerPlaintext)
        // §5.1: another record type between the records of one handshake message.
        | rustls::Error::PeerMisbehaved(PeerMisbehaved::MessageInterleavedWithHandshakeMessage)
        // §5.1 allows zero-length application data, not an endless run of it.
        | rustls::Error::PeerMisbehaved(PeerMisbehaved::TooManyEmptyFragments) => {
            Some(AlertDescription::UnexpectedMessage)
        }
        // Records that do not decrypt, after rejected early data, inside a handshake message.
        rustls::Error::PeerMisbehaved(
            PeerMisbehaved::RejectedEarlyDataInterleavedWithHandshakeMessage,
        )
        // More rejected early data than rustls's buffer holds (connection.rs, `absorb`): the
        // record it waits for would not decrypt either (§4.2.10, §5.2). rustls raises this error
        // itself only for early data it accepted, which ours never does.
        | rustls::Error::PeerMisbehaved(PeerMisbehaved::TooMuchEarlyDataReceived) => {
            Some(AlertDescription::BadRecordMac)
        }
        _ => None,
    }
}

/// Queues `alert` (fatal) on `tls` after an error rustls sent none for (see [`unsent_alert`]),
/// protected as rustls protects its own records. The connection must have been made with a
/// provider that went through [`sends_unsent_alerts`].
pub fn send_fatal(tls: &mut ServerConnection, alert: AlertDescription) {
    SEND_INSTEAD_OF_CLOSE_NOTIFY.set(Some(alert));
    // rustls protects the alert record right here, before it returns: the wrapped encrypter sees
    // the request on this thread, and nothing else can run in between.
    tls.send_close_notify();
    SEND_INSTEAD_OF_CLOSE_NOTIFY.set(None);
}

thread_local! {
    /// Set only for the duration of one `send_close_notify` call, by [`send_fatal`].
    static SEND_INSTEAD_OF_CLOSE_NOTIFY: Cell<Option<AlertDescription>> = const { Cell::new(None) };
}

/// `provider` with its TLS 1.3 suites' record protection wrapped so that [`send_fatal`] works.
/// The suites are made once per call and live as long as the program, as rustls wants them
/// (`&'static`): call it once per configuration, not per connection.
pub fn sends_unsent_alerts(mut provider: CryptoProvider) -> CryptoProvider {
    for suite in &mut provider.cipher_suites {
        // Irrefutable unless another crate of the build turns on rustls's `tls12` (the host's
        // test client does).
        #[allow(irrefutable_let_patterns)]
        if let SupportedCipherSuite::Tls13(tls13) = suite {
            let aead_alg: &'static FatalAlertAead =
                Box::leak(Box::new(FatalAlertAead(tls13.aead_alg)));
            let wrapped: &'static Tls13CipherSuite = Box::leak(Box::new(Tls13CipherSuite {
                common: rustls::CipherSuiteCommon {
                    suite: tls13.common.suite,
                    hash_provider: tls13.common.hash_provider,
                    confidentiality_limit: tls13.common.confidentiality_limit,
                },
                hkdf_provider: tls13.hkdf_provider,
                aead_alg,
                quic: tls13.quic,
            }));
            *suite = SupportedCipherSuite::Tls13(wrapped);
        }
    }
    provider
}

/// A suite's AEAD whose encrypters are [`FatalAlertEncrypter`]s; decryption as the provider's.
struct FatalAlertAead(&'static dyn Tls13AeadAlgorithm);

impl Tls13AeadAlgorithm for FatalAlertAead {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(FatalAlertEncrypter(self.0.encrypter(key, iv)))
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        self.0.decrypter(key, iv)
    }

    fn key_len(&self) -> usize {
        self.0.key_len()
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        self.0.extract_keys(key, iv)
    }

    fn fips(&self) -> bool {
        self.0.fips()
    }
}

/// The provider's encrypter, but a close_notify asked for by [`send_fatal`] becomes its alert.
struct FatalAlertEncrypter(Box<dyn MessageEncrypter>);

const CLOSE_NOTIFY: [u8; 2] = [1, 0];
const FATAL: u8 = 2;

impl MessageEncrypter for FatalAlertEncrypter {
    fn encrypt(
        &mut self,
        message: OutboundPlainMessage<'_>,
        sequence: u64,
    ) -> Result<OutboundOpaqueMessage, rustls::Error> {
        let instead = SEND_INSTEAD_OF_CLOSE_NOTIFY.get().filter(|_| {
            message.typ == ContentType::Alert && message.payload.to_vec() == CLOSE_NOTIFY
        });
        match instead {
            Some(alert) => {
                let fatal = [FATAL, u8::from(alert)];
                self.0.encrypt(
                    OutboundPlainMessage {
                        payload: OutboundChunks::Single(&fatal),
                        ..message
                    },
                    sequence,
                )
            }
            None => self.0.encrypt(message, sequence),
        }
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        self.0.encrypted_payload_len(payload_len)
    }
}
