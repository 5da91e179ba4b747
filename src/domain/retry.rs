//! When to try a transient failure again.

use std::time::Duration;

/// Capped exponential backoff with jitter: attempt `n` (1-based) waits
/// `min(initial * factor^(n-1), max)`, then scaled by a random factor in `[1 - jitter, 1]` so
/// that a relay outage does not bring every retry back in the same second.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    initial: Duration,
    factor: f64,
    max: Duration,
    jitter: f64,
}

impl Default for RetryPolicy {
    /// 30 s, doubling, capped at 30 min, up to 25% jitter.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(30),
            factor: 2.0,
            max: Duration::from_secs(30 * 60),
            jitter: 0.25,
        }
    }
}

impl RetryPolicy {
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder(Self::default())
    }

    /// The wait before the next try, after `attempt` tries have failed. `unit` is a uniform
    /// random number in `[0, 1)`, passed in so tests are deterministic.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self.factor.powi(attempt.saturating_sub(1).min(64) as i32);
        let raw = self.initial.as_secs_f64() * exp;
        let capped = raw.min(self.max.as_secs_f64());
        let scale = 1.0 - self.jitter * unit.clamp(0.0, 1.0);
        Duration::from_secs_f64(capped * scale)
    }
}

/// Builder by value; each setter documents its default on [`RetryPolicy::default`].
pub struct RetryPolicyBuilder(RetryPolicy);

impl RetryPolicyBuilder {
    pub fn initial(mut self, d: Duration) -> Self {
        self.0.initial = d;
        self
    }
    pub fn factor(mut self, f: f64) -> Self {
        self.0.factor = f.max(1.0);
        self
    }
    pub fn max(mut self, d: Duration) -> Self {
        self.0.max = d;
        self
    }
    pub fn jitter(mut self, j: f64) -> Self {
        self.0.jitter = j.clamp(0.0, 1.0);
        self
    }
    pub fn build(self) -> RetryPolicy {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_then_caps() {
        let p = RetryPolicy::builder().jitter(0.0).build();
        assert_eq!(p.delay(1, 0.5), Duration::from_secs(30));
        assert_eq!(p.delay(2, 0.5), Duration::from_secs(60));
        assert_eq!(p.delay(4, 0.5), Duration::from_secs(240));
        assert_eq!(p.delay(30, 0.5), Duration::from_secs(1800));
        assert_eq!(p.delay(u32::MAX, 0.5), Duration::from_secs(1800));
    }

    #[test]
    fn jitter_only_shortens_within_its_bound() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, 0.0), Duration::from_secs(30));
        assert_eq!(p.delay(1, 1.0), Duration::from_secs_f64(22.5));
        let mid = p.delay(1, 0.5);
        assert!(mid > Duration::from_secs(22) && mid < Duration::from_secs(30));
    }
}
