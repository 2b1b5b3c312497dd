//! Tests of `access_log.rs`.

use super::*;

#[test]
fn a_served_line_names_the_key_exchange_and_a_client_that_was_cut_off() {
    let served = |ending| {
        let served = Served {
            server_name: Some("tls-site.localhost".into()),
            resource: "tls-site.localhost".into(),
            bytes: 3119,
            client_finished: true,
            key_exchange: Some("X25519MLKEM768".into()),
            ending,
            request: Some(Request {
                method: "GET".into(),
                target: "/".into(),
                version: "HTTP/1.1".into(),
                user_agent: Some("curl/8.5.0".into()),
            }),
        };
        Outcome::Served(served)
    };
    let peer = SocketAddr::from(([127, 0, 0, 1], 5000));
    let timeouts = Timeouts {
        handshake: Duration::from_secs(3),
        stall: Duration::from_secs(5),
        connection: Duration::from_secs(10),
    };
    let clean = https_line(peer, &timeouts, &served(Ending::Clean));
    assert_eq!(
        clean,
        "https 127.0.0.1:5000 sni=tls-site.localhost resource=tls-site.localhost bytes=3119 kx=X25519MLKEM768 request=\"GET / HTTP/1.1\" ua=\"curl/8.5.0\" ok"
    );
    let cut_off = https_line(peer, &timeouts, &served(Ending::CutOff));
    assert!(cut_off.contains(" ok (client cut off: "), "{cut_off}");
    let Outcome::Served(mut silent) = served(Ending::Clean) else {
        unreachable!()
    };
    silent.request = None;
    let line = https_line(peer, &timeouts, &Outcome::Served(silent));
    assert!(line.contains(" request=- ua=- ok"), "{line}");
}
