//! The host's log: every line goes through `tracing` to stderr, as text (`--log-format text`, the
//! default: the UTC time, then the line) or as one JSON object a line (`--log-format json`:
//! `time`, `level`, `message` and the event's fields), filtered by `TLS_SITE_LOG` (or `RUST_LOG`)
//! in `tracing`'s `target=level` form, by default `warn,tls_site=info`. The access log, the
//! limits, ACME and start-up all write through it.
//!
//! An event's message is its whole text line, and its fields are the same facts for machines:
//! tls-site's events (the access log's, target [`ACCESS`], among them) are written in text as
//! their message alone.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// One line, at level info: the text line is `line`, and the JSON object has it as `message`.
pub fn log(line: std::fmt::Arguments<'_>) {
    tracing::info!("{line}");
}

/// The target of the access log's events: one per connection.
pub const ACCESS: &str = "tls_site::access";

/// What the log shows when neither variable is set.
const DEFAULT_FILTER: &str = "warn,tls_site=info";

/// How the log is written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event: its time and its message.
    #[default]
    Text,
    /// One JSON object per line: `time`, `level`, `message` and the event's fields.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "{variable}={value:?}: not a log filter ({source}); write it as `tracing` does, e.g. `info` or `warn,tls_site=debug`"
    )]
    BadFilter {
        variable: &'static str,
        value: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("the log is set up already: {0}")]
    AlreadySet(#[from] tracing_subscriber::util::TryInitError),
}

/// Writes this process's log to stderr in `format`, from now on.
pub fn init(format: LogFormat) -> Result<(), LogError> {
    let filter = filter_from(|name| std::env::var(name).ok())?;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .event_format(Lines(format))
                .with_writer(std::io::stderr),
        )
        .try_init()?;
    Ok(())
}

/// The filter `TLS_SITE_LOG`, else `RUST_LOG`, asks for, else the default.
fn filter_from(variable: impl Fn(&str) -> Option<String>) -> Result<Targets, LogError> {
    let (variable, value) = match ["TLS_SITE_LOG", "RUST_LOG"]
        .into_iter()
        .find_map(|name| Some((name, variable(name)?)))
    {
        Some(set) => set,
        None => ("the default", DEFAULT_FILTER.to_owned()),
    };
    value.parse().map_err(|source| LogError::BadFilter {
        variable,
        value,
        source,
    })
}

/// The events as `LogFormat` says.
struct Lines(LogFormat);

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let time = humantime::format_rfc3339_millis(SystemTime::now());
        match self.0 {
            LogFormat::Text => {
                let mut fields = TextFields::default();
                event.record(&mut fields);
                // Ours say it all in their message; other crates' events may say it in fields.
                let rest = match event.metadata().target().starts_with("tls_site") {
                    true => "",
                    false => &fields.rest,
                };
                writeln!(writer, "{time} {}{rest}", fields.message)
            }
            LogFormat::Json => {
                let mut fields = JsonFields::default();
                fields.0.insert("time".into(), time.to_string().into());
                fields.0.insert(
                    "level".into(),
                    event
                        .metadata()
                        .level()
                        .as_str()
                        .to_ascii_lowercase()
                        .into(),
                );
                event.record(&mut fields);
                writeln!(writer, "{}", serde_json::Value::Object(fields.0))
            }
        }
    }
}

/// The message, and the other fields as ` name=value`.
#[derive(Default)]
struct TextFields {
    message: String,
    rest: String,
}

impl Visit for TextFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}

/// The fields as a JSON object's members.
#[derive(Default)]
struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// Something that may happen once per connection, logged at most once per interval: counts each
/// time it happens and says when a line is due, with how many times it happened since the last.
#[derive(Debug)]
pub struct Throttled {
    every: Duration,
    started: Instant,
    /// Nanoseconds after `started` when the next line may be written.
    next_line: AtomicU64,
    since_last_line: AtomicU64,
}

impl Throttled {
    pub fn new(every: Duration) -> Throttled {
        Throttled {
            every,
            started: Instant::now(),
            next_line: AtomicU64::new(0),
            since_last_line: AtomicU64::new(0),
        }
    }

    /// It happened once more. `Some(n)` when a line is due now: it happened `n` times since the
    /// last line (this time included). Only one of many threads asking at once gets it.
    pub fn happened(&self) -> Option<u64> {
        self.since_last_line.fetch_add(1, Ordering::Relaxed);
        let now = nanos(self.started.elapsed());
        let next = self.next_line.load(Ordering::Relaxed);
        if now < next {
            return None;
        }
        self.next_line
            .compare_exchange(
                next,
                now + nanos(self.every),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .ok()?;
        Some(self.since_last_line.swap(0, Ordering::Relaxed))
    }

    pub fn every(&self) -> Duration {
        self.every
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_comes_from_tls_site_log_then_rust_log_then_the_default() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_string())
            }
        };
        let both = filter_from(env(&[("TLS_SITE_LOG", "debug"), ("RUST_LOG", "error")])).unwrap();
        assert!(both.would_enable("tls_site", &tracing::Level::DEBUG));
        let rust_log = filter_from(env(&[("RUST_LOG", "error")])).unwrap();
        assert!(!rust_log.would_enable("tls_site", &tracing::Level::WARN));
        let default = filter_from(env(&[])).unwrap();
        assert!(default.would_enable(ACCESS, &tracing::Level::INFO));
        assert!(!default.would_enable("hyper", &tracing::Level::INFO));
        let error = filter_from(env(&[("TLS_SITE_LOG", "tls_site=loud")]))
            .err()
            .unwrap();
        assert!(
            error
                .to_string()
                .starts_with("TLS_SITE_LOG=\"tls_site=loud\": not a log filter"),
            "{error}"
        );
    }

    #[test]
    fn a_throttled_line_is_due_once_per_interval_with_the_count_since_the_last() {
        let throttled = Throttled::new(Duration::from_secs(3600));
        assert_eq!(throttled.happened(), Some(1), "the first time, at once");
        assert_eq!(throttled.happened(), None);
        assert_eq!(throttled.happened(), None);
        let every_time = Throttled::new(Duration::ZERO);
        assert_eq!(every_time.happened(), Some(1));
        assert_eq!(every_time.happened(), Some(1));
        // The count carries over to the next line that is due.
        throttled.next_line.store(0, Ordering::Relaxed);
        assert_eq!(throttled.happened(), Some(3));
    }
}
