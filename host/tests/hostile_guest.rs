//! A hostile component in the real host: host/tests/hostile_guest, built by host/build.rs, loops on
//! the host's crypto imports as a guest whose TLS code a client has taken over could. Each such
//! connection must trap at one of the host's bounds (host/shared/src/crypto_bounds.rs) with an access-log
//! line that names it, the host's memory must stay bounded, and other clients must be served
//! meanwhile.

use std::path::PathBuf;
use std::time::Duration;
use tls_site::metrics::resident_memory;
use tls_site::sandbox::Outcome;
use tls_site::{ServeOptions, Server, certs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOSTILE_COMPONENT: &str = env!("TLS_SITE_HOSTILE_COMPONENT");

/// Each attack (the first byte its client sends) and what its trap must say (the access log writes
/// `https PEER trapped: WHY`).
const ATTACKS: [(u8, &str); 5] = [
    (b'h', "more than 16 live hash contexts"),
    (b'f', "more than 16 live hash contexts"),
    (b'k', "more than 8 live record keys"),
    (b's', "more than 1 signature on one connection"),
    (b'c', "more than 65536 crypto calls on one connection"),
];

/// Connections of each attack, all at once.
const CONNECTIONS_PER_ATTACK: usize = 8;

/// Far beyond what the bounds take to trip, so that only they can end an attack. Unbounded, the
/// first attack would hold millions of hash contexts by then.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(20);

/// How much the host's resident memory may grow over all the attacks: instances and their
/// stacks, which the pool keeps, not what the guests asked the host to hold.
const RESIDENT_GROWTH: u64 = 64 << 20;

#[test]
fn a_hostile_guest_traps_at_the_hosts_bounds_and_other_clients_are_served_meanwhile() {
    let dir = std::env::temp_dir().join(format!("tls-site-hostile-guest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    certs::dev_certs(&dir, &["tls-site.localhost".into()]).unwrap();
    let mut options = ServeOptions::new(PathBuf::from(HOSTILE_COMPONENT), dir.clone());
    options.https = ([127, 0, 0, 1], 0).into();
    options.no_http = true;
    options.connection_deadline = CONNECTION_DEADLINE;
    let timeouts = options.timeouts();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(Server::start(&options)).unwrap();
    let sandbox = server.sandbox();
    let resident_before = resident_memory().unwrap();

    let outcomes = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut attacks = tokio::task::JoinSet::new();
        for (attack, _) in ATTACKS {
            for _ in 0..CONNECTIONS_PER_ATTACK {
                let mut client = TcpStream::connect(addr).await.unwrap();
                client.write_all(&[attack]).await.unwrap();
                let (stream, _) = listener.accept().await.unwrap();
                let sandbox = sandbox.clone();
                attacks.spawn(async move {
                    let report = sandbox.serve_connection(stream, timeouts).await;
                    drop(client);
                    (attack, report.outcome)
                });
            }
        }
        // Meanwhile, benign clients through the server's own listener and threads.
        for _ in 0..CONNECTIONS_PER_ATTACK {
            assert_eq!(pong(server.https_addr()).await, b"pong");
        }
        attacks.join_all().await
    });

    for (attack, outcome) in &outcomes {
        let (_, bound) = ATTACKS.iter().find(|(a, _)| a == attack).unwrap();
        assert!(
            matches!(outcome, Outcome::Trapped(why) if why.contains(bound)),
            "attack {:?}: {outcome:?}",
            *attack as char
        );
    }
    let resident_after = resident_memory().unwrap();
    assert!(
        resident_after < resident_before + RESIDENT_GROWTH,
        "the host's resident memory grew from {} to {} MiB",
        resident_before >> 20,
        resident_after >> 20
    );
    // And the server still serves, after them all.
    assert_eq!(runtime.block_on(pong(server.https_addr())), b"pong");
    runtime.block_on(server.shutdown());
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the hostile component answers a client that attacks nothing.
async fn pong(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"p").await.unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    answer
}
