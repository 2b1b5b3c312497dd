//! Keyless means the private key is nowhere in the guest's linear memory. A component does not
//! export its memory to the host, so these tests read it as wizer does for a snapshot: wizer
//! instruments the (already initialised) component with exports that return each memory's
//! contents, the instrumented instance serves real connections, and wizer's snapshot of it then
//! holds that memory as data segments, which are searched for the key.

use super::*;
use crate::bindings::TlsSite;
use client::{Trust, config_for_groups, fetch};
use wasmtime::component::Component;
use wasmtime_wizer::{WasmtimeWizerComponent, Wizer};

/// Development certificates for the hosts of `component_path`, made in a directory of their
/// own for `label` (its CA is `certs::DEV_CA_FILE` there).
async fn dev_certificates(component_path: &Path, label: &str) -> (PathBuf, Vec<Certificate>) {
    let dir = std::env::temp_dir().join(format!("tls-site-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let hosts = crate::inspect::hosts_default_first(
        &crate::inspect::site_resources(component_path, Limits::default())
            .await
            .unwrap(),
    );
    crate::certs::dev_certs(&dir, &hosts).unwrap();
    let certificates = crate::certs::load_dir(&dir).unwrap();
    (dir, certificates)
}

/// The component initialised with `certificates` (its snapshot, as `Sandbox::new` makes it),
/// and what its instances are served with.
struct Initialised {
    snapshot: Vec<u8>,
    engine: Engine,
    linker: Linker<GuestState>,
    keys: Arc<Keys>,
    tickets: Arc<TicketKeys>,
    limits: Limits,
}

impl Initialised {
    async fn new(
        component_path: &Path,
        certificates: &[Certificate],
        limits: Limits,
    ) -> Initialised {
        let engine = engine::engine(&limits).unwrap();
        let linker = linker(&engine).unwrap();
        let keys = Arc::new(Keys::load(certificates).unwrap());
        let tickets = Arc::new(TicketKeys::new(TICKET_KEY_ROTATION));
        let state = GuestState::initialising(
            limits.memory_bytes,
            certificates,
            keys.clone(),
            tickets.clone(),
        );
        let snapshot = snapshot::snapshot(&linker, &std::fs::read(component_path).unwrap(), state)
            .await
            .unwrap();
        Initialised {
            snapshot,
            engine,
            linker,
            keys,
            tickets,
            limits,
        }
    }

    fn store(&self) -> Store<GuestState> {
        new_store(
            &self.engine,
            GuestState::serving(
                self.limits.memory_bytes,
                self.keys.clone(),
                self.tickets.clone(),
            ),
        )
    }
}

/// A real client on a thread of its own, fetching the default page over a new connection
/// (trusting the development CA in `dir`, offering `groups`): the connection, accepted, and
/// the client, to be joined with `fetched`.
async fn client_connection(
    dir: &Path,
    groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
) -> (
    TcpStream,
    std::thread::JoinHandle<Result<client::Fetched, String>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ca = dir.join(crate::certs::DEV_CA_FILE);
    let client = std::thread::spawn(move || {
        fetch(
            addr,
            "tls-site.localhost",
            true,
            config_for_groups(Trust::Ca(&ca), groups),
        )
    });
    (listener.accept().await.unwrap().0, client)
}

/// What the client of `client_connection` fetched; it must have succeeded.
async fn fetched(
    client: std::thread::JoinHandle<Result<client::Fetched, String>>,
) -> client::Fetched {
    tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap()
        .unwrap()
}

fn timeouts(seconds: u64) -> Timeouts {
    let each = Duration::from_secs(seconds);
    Timeouts {
        handshake: each,
        stall: each,
        connection: each,
    }
}

/// The component's memory (as a snapshot component) after serving `connections`, and the
/// private scalar of the P-256 key it served with.
async fn memory_after_connections(component_path: &Path, connections: usize) -> (Vec<u8>, Vec<u8>) {
    let name = component_path.file_stem().unwrap().to_string_lossy();
    let (dir, certificates) = dev_certificates(component_path, &format!("memory-{name}")).await;
    let scalar = p256_scalar(&certificates[0].private_key);

    let initialised = Initialised::new(component_path, &certificates, Limits::default()).await;
    let wizer = Wizer::new();
    let (context, instrumented) = wizer.instrument_component(&initialised.snapshot).unwrap();
    let component = Component::new(&initialised.engine, &instrumented).unwrap();
    let mut store = initialised.store();
    let instance = initialised
        .linker
        .instantiate_async(&mut store, &component)
        .await
        .unwrap();
    let site = TlsSite::new(&mut store, &instance).unwrap();
    for _ in 0..connections {
        // The hybrid group first, as browsers offer it: its secrets pass through the guest too.
        let (stream, client) = client_connection(
            &dir,
            vec![
                client::X25519MLKEM768,
                rustls::crypto::ring::kx_group::X25519,
            ],
        )
        .await;
        let served = drive(
            &site,
            &mut store,
            Accepted {
                stream,
                first_bytes: Vec::new(),
            },
            timeouts(60),
            &mut Milestones::default(),
        )
        .await
        .unwrap();
        assert!(served.is_ok(), "{served:?}");
        assert_eq!(fetched(client).await.status_line, "HTTP/1.1 200 OK");
    }
    let memory = wizer
        .snapshot_component(
            &context,
            &mut WasmtimeWizerComponent {
                store: &mut store,
                instance,
            },
        )
        .await
        .unwrap();
    (memory, scalar)
}

/// Instances are reset by hand where the kernel can say which pages were written (engine.rs):
/// the next instance in a slot must still start from the snapshot, with nothing of the
/// connection served before it. One slot, so each instance takes the one before's.
#[test]
fn the_next_instance_in_a_slot_starts_from_the_snapshot() {
    runtime().block_on(async {
        let (dir, certificates) =
            dev_certificates(Path::new(crate::BUILT_COMPONENT), "reset").await;
        let limits = Limits {
            instances: 1,
            ..Limits::default()
        };
        let initialised =
            Initialised::new(Path::new(crate::BUILT_COMPONENT), &certificates, limits).await;
        let wizer = Wizer::new();
        let (context, instrumented) = wizer.instrument_component(&initialised.snapshot).unwrap();
        let component = Component::new(&initialised.engine, &instrumented).unwrap();
        let memory_of_a_new_instance = async || {
            let mut store = initialised.store();
            let instance = initialised
                .linker
                .instantiate_async(&mut store, &component)
                .await
                .unwrap();
            wizer
                .snapshot_component(
                    &context,
                    &mut WasmtimeWizerComponent {
                        store: &mut store,
                        instance,
                    },
                )
                .await
                .unwrap()
        };

        let pristine = memory_of_a_new_instance().await;
        {
            let mut store = initialised.store();
            let instance = initialised
                .linker
                .instantiate_async(&mut store, &component)
                .await
                .unwrap();
            let site = TlsSite::new(&mut store, &instance).unwrap();
            let (stream, client) =
                client_connection(&dir, vec![rustls::crypto::ring::kx_group::X25519]).await;
            assert!(
                drive(
                    &site,
                    &mut store,
                    Accepted {
                        stream,
                        first_bytes: Vec::new(),
                    },
                    timeouts(60),
                    &mut Milestones::default()
                )
                .await
                .unwrap()
                .is_ok()
            );
            fetched(client).await;
            assert_ne!(
                wizer
                    .snapshot_component(
                        &context,
                        &mut WasmtimeWizerComponent {
                            store: &mut store,
                            instance
                        }
                    )
                    .await
                    .unwrap(),
                pristine,
                "serving changed the instance's memory"
            );
        }
        assert!(
            memory_of_a_new_instance().await == pristine,
            "the next instance in the slot kept something of the connection before it"
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A guest that runs through epoch ticks yields and goes on (`cpu_deadline`): only the
/// connection's deadline in wall-clock time cuts it off, not how many ticks passed. The
/// epoch here races ahead (the 10 s deadline is 1000 ticks, gone in about a millisecond), so
/// the guest meets a passed tick at nearly every check and yields each time.
#[test]
fn a_guest_yields_at_epoch_ticks_and_is_cut_off_only_by_its_deadline() {
    runtime().block_on(async {
        let (dir, certificates) =
            dev_certificates(Path::new(crate::BUILT_COMPONENT), "yield").await;
        let sandbox = Sandbox::new(
            Path::new(crate::BUILT_COMPONENT),
            &certificates,
            Limits::default(),
        )
        .await
        .unwrap();
        let racing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let epoch = {
            let (engine, racing) = (sandbox.engine.clone(), racing.clone());
            std::thread::spawn(move || {
                while racing.load(std::sync::atomic::Ordering::Relaxed) {
                    engine.increment_epoch();
                    for _ in 0..10 {
                        std::hint::spin_loop();
                    }
                }
            })
        };
        let (stream, client) =
            client_connection(&dir, vec![rustls::crypto::ring::kx_group::X25519]).await;
        let report = sandbox.serve_connection(stream, timeouts(10)).await;
        racing.store(false, std::sync::atomic::Ordering::Relaxed);
        epoch.join().unwrap();
        assert!(
            matches!(report.outcome, Outcome::Served(_)),
            "{:?}",
            report.outcome
        );
        assert_eq!(fetched(client).await.status_line, "HTTP/1.1 200 OK");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// The 32-byte private scalar in a P-256 PKCS#8 key: the OCTET STRING after ECPrivateKey's
/// version 1 (RFC 5915).
fn p256_scalar(pkcs8: &[u8]) -> Vec<u8> {
    let at = pkcs8
        .windows(5)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
        .expect("an ECPrivateKey");
    pkcs8[at + 5..at + 37].to_vec()
}

/// Whether any 16 consecutive bytes of `secret` are in `memory`, in the key's byte order or
/// reversed (little-endian limbs).
fn holds_part_of(memory: &[u8], secret: &[u8]) -> bool {
    let reversed: Vec<u8> = secret.iter().rev().copied().collect();
    [secret, &reversed[..]].iter().any(|bytes| {
        bytes
            .windows(16)
            .any(|part| memory.windows(16).any(|w| w == part))
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn the_keyless_component_never_holds_the_private_key() {
    let (memory, scalar) = runtime().block_on(memory_after_connections(
        Path::new(crate::BUILT_COMPONENT),
        3,
    ));
    assert!(
        memory.len() > 1 << 19,
        "the snapshot holds the site's bytes: {}",
        memory.len()
    );
    assert!(
        !holds_part_of(&memory, &scalar),
        "the private key is in the keyless component's memory"
    );
}

/// The check above can fail: the portable component parses the key itself, and it is found.
#[test]
fn the_portable_component_does_hold_the_private_key() {
    let (memory, scalar) = runtime().block_on(memory_after_connections(
        Path::new(crate::BUILT_PORTABLE_COMPONENT),
        3,
    ));
    assert!(
        holds_part_of(&memory, &scalar),
        "the portable component's memory should hold its key"
    );
}
