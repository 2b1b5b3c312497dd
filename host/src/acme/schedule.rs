//! When to order: a certificate's validity, the time its renewal is due (with jitter), and the
//! doubling wait after a failed order.

use super::AcmeError;
use crate::certs::Certificate;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

/// Renewal starts when less than 1/RENEW_WHEN_LEFT of a certificate's lifetime is left, and up to
/// 1/JITTER of it earlier, so that servers started together do not all ask at once.
const RENEW_WHEN_LEFT: u32 = 3;
const JITTER: u32 = 9;
/// After a failure the wait doubles from `AcmeOptions::first_retry_wait` up to this; with the
/// default first wait of 5 minutes that is at most 4 orders in the first hour (Let's Encrypt
/// allows 5 failed validations per name per hour).
const LONGEST_RETRY_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A certificate's validity period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    pub fn of(certificate: &Certificate) -> Result<Validity, AcmeError> {
        let bad = |message: String| AcmeError::BadState {
            path: certificate.source.clone(),
            message,
        };
        let leaf = certificate
            .chain
            .first()
            .ok_or_else(|| bad("no certificate".into()))?;
        let validity = cert_dir::validity(&leaf.as_slice().into())
            .map_err(|error| bad(format!("unreadable leaf: {error}")))?;
        Ok(Validity {
            not_before: validity.not_before,
            not_after: validity.not_after,
        })
    }

    /// When to renew: once less than a third of the lifetime is left, up to a ninth of the
    /// lifetime earlier by `jitter` (0 to 1). A 90-day certificate: between day 50 and day 60.
    pub fn renewal_time(&self, jitter: f64) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        let early = (lifetime / JITTER).mul_f64(jitter.clamp(0.0, 1.0));
        self.not_after - lifetime / RENEW_WHEN_LEFT - early
    }
}

/// The wait before retry number `failures` (1 after the first failure): doubling, bounded.
pub fn retry_wait(first: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    first.saturating_mul(1 << doublings).min(LONGEST_RETRY_WAIT)
}

/// A number in [0, 1) for jitter. std's hasher keys are seeded from the OS's randomness, which
/// is all jitter needs (nothing secret rests on it).
pub(super) fn jitter() -> f64 {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (random >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * 24 * 3600)
    }

    #[test]
    fn a_90_day_certificate_is_renewed_between_day_50_and_day_60() {
        let not_before = SystemTime::UNIX_EPOCH + days(1000);
        let validity = Validity {
            not_before,
            not_after: not_before + days(90),
        };
        assert_eq!(validity.renewal_time(0.0), not_before + days(60));
        assert_eq!(validity.renewal_time(1.0), not_before + days(50));
        let middle = validity.renewal_time(0.5);
        assert!(middle > not_before + days(50) && middle < not_before + days(60));
    }

    #[test]
    fn jitter_stays_in_its_range_and_varies() {
        let draws: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(
            draws.iter().any(|j| *j != draws[0]),
            "64 equal draws: {draws:?}"
        );
    }

    #[test]
    fn retries_wait_twice_as_long_each_time_up_to_a_day() {
        let first = Duration::from_secs(300);
        let waits: Vec<u64> = (1..=4).map(|n| retry_wait(first, n).as_secs()).collect();
        assert_eq!(waits, [300, 600, 1200, 2400]);
        assert_eq!(retry_wait(first, 20), LONGEST_RETRY_WAIT);
        assert_eq!(retry_wait(first, u32::MAX), LONGEST_RETRY_WAIT);
    }
}
