//! The server's metrics: one Prometheus registry, whose metrics are this module's fields, recorded
//! through the methods below from wherever the events happen, and encoded as the Prometheus
//! (OpenMetrics) text format for `/metrics` (`metrics_endpoint.rs`).
//!
//! A connection's cost stays a few atomic operations: counters and gauges are atomics, the
//! histograms are [`DurationHistogram`]s (an atomic per bucket, where `prometheus-client`'s own
//! takes a lock per observation), and the one labelled counter on the connection path,
//! `tls_site_connections_total`, finds its series under a read lock (its key is a copy of the
//! served resource's name, static strings otherwise). What only a scrape needs (the process's
//! resident memory) is read when a scrape comes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod histogram;
pub use histogram::DurationHistogram;

/// Upper bounds, in seconds, of the time histograms' buckets: from half a millisecond (a resumed
/// handshake on an idle machine) to the default connection deadline.
const SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Key-exchange groups as the `kx` label writes them: the guest's names, or `-` for none.
const KNOWN_GROUPS: [&str; 4] = ["X25519MLKEM768", "X25519", "secp256r1", "secp384r1"];

/// `tls_site_connections_total`'s labels: how the connection ended (the access log's outcome
/// names), the resource served (its first host name) and the key-exchange group, `-` where
/// there was none.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    outcome: &'static str,
    resource: Cow<'static, str>,
    kx: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    /// The leaf's first DNS name.
    name: String,
    /// Every name it covers, comma-separated.
    names: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: &'static str,
    component_sha256: String,
}

/// Every metric of one server. Shared as an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Family<ConnectionLabels, Counter>,
    handshake: DurationHistogram,
    first_byte: DurationHistogram,
    connection: DurationHistogram,
    sent_bytes: Counter,
    instance_waits: Counter,
    open_connections: Gauge,
    instances_in_use: Gauge,
    guest_memory_peak: Gauge,
    resident_memory: Gauge,
    certificate_not_after: Family<CertificateLabels, Gauge>,
    acme_renewals: Family<ResultLabels, Counter>,
    ticket_key_rotations: Counter,
    reloads: Family<ResultLabels, Counter>,
    info: Family<InfoLabels, Gauge>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tls_site");
        let connections = Family::default();
        registry.register(
            "connections",
            "Connections by how they ended (the access log's outcome), the resource served and the key-exchange group",
            connections.clone(),
        );
        let (handshake, first_byte, connection) = (
            DurationHistogram::default(),
            DurationHistogram::default(),
            DurationHistogram::default(),
        );
        registry.register_with_unit(
            "handshake",
            "From accept to the client's Finished, for served connections whose client finished (read once the response has left: a response larger than one write is in it)",
            Unit::Seconds,
            handshake.clone(),
        );
        registry.register_with_unit(
            "first_byte",
            "From accept to the write that carries the response (served connections)",
            Unit::Seconds,
            first_byte.clone(),
        );
        registry.register_with_unit(
            "connection",
            "HTTPS connections from accept to close, however they ended",
            Unit::Seconds,
            connection.clone(),
        );
        let sent_bytes = Counter::default();
        registry.register_with_unit(
            "sent",
            "Response bytes (head and body, before TLS) of served connections",
            Unit::Bytes,
            sent_bytes.clone(),
        );
        let instance_waits = Counter::default();
        registry.register(
            "instance_waits",
            "Connections that waited for a guest instance (--max-instances, --guest-memory)",
            instance_waits.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "HTTPS connections open now, from accept to close",
            open_connections.clone(),
        );
        let instances_in_use = Gauge::default();
        registry.register(
            "instances_in_use",
            "Guest instances at work now",
            instances_in_use.clone(),
        );
        let guest_memory_peak = Gauge::default();
        registry.register_with_unit(
            "guest_memory_peak",
            "The most linear memory one guest instance has used",
            Unit::Bytes,
            guest_memory_peak.clone(),
        );
        let resident_memory = Gauge::default();
        registry.register_with_unit(
            "resident_memory",
            "The host process's resident memory, at the scrape",
            Unit::Bytes,
            resident_memory.clone(),
        );
        let certificate_not_after = Family::default();
        registry.register_with_unit(
            "certificate_not_after",
            "When each certificate served expires (its notAfter), in seconds since the Unix epoch",
            Unit::Seconds,
            certificate_not_after.clone(),
        );
        let acme_renewals: Family<ResultLabels, Counter> = Family::default();
        registry.register(
            "acme_renewals",
            "ACME certificate orders, by result",
            acme_renewals.clone(),
        );
        let ticket_key_rotations = Counter::default();
        registry.register(
            "ticket_key_rotations",
            "Session-ticket keys replaced",
            ticket_key_rotations.clone(),
        );
        let reloads: Family<ResultLabels, Counter> = Family::default();
        registry.register(
            "reloads",
            "Reloads of the site (certificates, component), by result",
            reloads.clone(),
        );
        let info = Family::default();
        registry.register(
            "build_info",
            "1, labelled with this host's version and the SHA-256 of the component it serves",
            info.clone(),
        );
        // Both results from the start, at 0: an alert on `increase(...{result="failed"}[1h])`
        // then has a series to read before the first failure.
        for result in ["ok", "failed"] {
            acme_renewals
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
            reloads.get_or_create(&ResultLabels { result }).inc_by(0);
        }
        Metrics {
            registry,
            connections,
            handshake,
            first_byte,
            connection,
            sent_bytes,
            instance_waits,
            open_connections,
            instances_in_use,
            guest_memory_peak,
            resident_memory,
            certificate_not_after,
            acme_renewals,
            ticket_key_rotations,
            reloads,
            info,
            ready: AtomicBool::new(false),
        }
    }

    /// A connection ended as `outcome` (the access log's name for it, `access_log::Event`);
    /// `served` is the resource and key-exchange group of a served one. Takes the resource's
    /// name, which becomes the series' key.
    pub fn connection_ended(&self, outcome: &'static str, served: Option<(String, Option<&str>)>) {
        let (resource, kx) = match served {
            Some((resource, kx)) => (Cow::Owned(resource), kx_label(kx)),
            None => (Cow::Borrowed("-"), "-"),
        };
        let labels = ConnectionLabels {
            outcome,
            resource,
            kx,
        };
        self.connections.get_or_create(&labels).inc();
    }

    /// An HTTPS connection's times: from accept to close, and, for a served one, from accept to
    /// the write that carried the response and to the client's Finished.
    pub fn observe_times(
        &self,
        connection: Duration,
        first_byte: Option<Duration>,
        handshake: Option<Duration>,
    ) {
        self.connection.observe(connection);
        if let Some(first_byte) = first_byte {
            self.first_byte.observe(first_byte);
        }
        if let Some(handshake) = handshake {
            self.handshake.observe(handshake);
        }
    }

    /// `bytes` of a response were sent.
    pub fn sent(&self, bytes: u64) {
        self.sent_bytes.inc_by(bytes);
    }

    /// A guest instance used `bytes` of linear memory at most.
    pub fn guest_memory_used(&self, bytes: usize) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.guest_memory_peak
            .inner()
            .fetch_max(bytes, Ordering::Relaxed);
    }

    /// An HTTPS connection is open until the guard is dropped.
    pub fn connection_opened(&self) -> InUse {
        InUse::of(&self.open_connections)
    }

    /// A guest instance is at work until the guard is dropped.
    pub fn instance_taken(&self) -> InUse {
        InUse::of(&self.instances_in_use)
    }

    /// A connection had to wait for an instance.
    pub fn waited_for_instance(&self) {
        self.instance_waits.inc();
    }

    /// The component with SHA-256 `component_sha256` and `certificates` are what is served now,
    /// replacing those before. `Server` calls it whenever a sandbox is installed (at start, after
    /// an ACME renewal or a reload), with the sandbox's.
    pub fn serving(&self, component_sha256: &str, certificates: &[CertificateExpiry]) {
        self.info.clear();
        let labels = InfoLabels {
            version: env!("CARGO_PKG_VERSION"),
            component_sha256: component_sha256.to_owned(),
        };
        self.info.get_or_create(&labels).set(1);
        self.certificate_not_after.clear();
        for certificate in certificates {
            let Some(not_after) = certificate.not_after else {
                continue;
            };
            let labels = CertificateLabels {
                name: certificate.names.first().cloned().unwrap_or_default(),
                names: certificate.names.join(","),
            };
            self.certificate_not_after
                .get_or_create(&labels)
                .set(not_after);
        }
    }

    /// An ACME order ended: a certificate installed, or not.
    pub fn acme_renewal(&self, installed: bool) {
        let result = if installed { "ok" } else { "failed" };
        self.acme_renewals
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// A reload of the site ended: the new one serves, or the old one still does.
    pub fn reload(&self, succeeded: bool) {
        let result = if succeeded { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// Whether the server serves: its snapshot built and its listeners open (`/readyz`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Every metric, in the OpenMetrics text format (which Prometheus reads).
    pub fn encode(&self) -> String {
        // Rotations happen inside rustls's rotator, which tickets.rs counts; brought up to date here.
        let rotations = crate::tickets::rotations();
        let counted = self.ticket_key_rotations.get();
        if rotations > counted {
            self.ticket_key_rotations.inc_by(rotations - counted);
        }
        if let Some(bytes) = resident_memory() {
            self.resident_memory
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// The `kx` label for a group name the guest reported: one of the names it has (a static string,
/// so that the series' key costs nothing), `other` for a name it should not have sent.
fn kx_label(group: Option<&str>) -> &'static str {
    match group {
        None => "-",
        Some(group) => KNOWN_GROUPS
            .into_iter()
            .find(|known| *known == group)
            .unwrap_or("other"),
    }
}

/// A certificate served, as the metrics show it: its names and when it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateExpiry {
    /// The names its leaf covers (subjectAltName).
    pub names: Vec<String>,
    /// Its leaf's notAfter, in seconds since the Unix epoch; `None` if the leaf does not parse.
    pub not_after: Option<i64>,
}

impl CertificateExpiry {
    /// For a certificate with `names` and `chain` (DER, leaf first).
    pub fn of(names: &[String], chain: &[Vec<u8>]) -> CertificateExpiry {
        let not_after = chain.first().and_then(|leaf| {
            let validity = cert_dir::validity(&leaf.as_slice().into()).ok()?;
            let seconds = validity
                .not_after
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs();
            i64::try_from(seconds).ok()
        });
        CertificateExpiry {
            names: names.to_vec(),
            not_after,
        }
    }
}

/// The host process's resident memory, from /proc (Linux).
pub fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A gauge counted up while this lives.
#[must_use = "the gauge goes down again when this is dropped"]
#[derive(Debug)]
pub struct InUse(Gauge);

impl InUse {
    fn of(gauge: &Gauge) -> InUse {
        gauge.inc();
        InUse(gauge.clone())
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests;
