//! Pacing: one global rate shared by every sender of the process, optional per-domain rates,
//! and a cool-down for domains that answer "slow down" (`Verdict::Throttle`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

pub struct Limits {
    /// Replaced, not mutated, when the process's share of the global rate changes.
    global: RwLock<Arc<DefaultDirectRateLimiter>>,
    rate: std::sync::atomic::AtomicU32,
    burst: NonZeroU32,
    domains: HashMap<String, DefaultDirectRateLimiter>,
    cooldown: Duration,
    cooling: Mutex<HashMap<String, Instant>>,
}

impl Limits {
    pub fn new(
        rate: NonZeroU32,
        burst: NonZeroU32,
        domain_rates: &[(String, NonZeroU32)],
        cooldown: Duration,
    ) -> Self {
        let domains = domain_rates
            .iter()
            .map(|(d, r)| {
                // Paced evenly: a relay's per-domain limit is rarely a burst allowance.
                let quota = Quota::per_second(*r).allow_burst(NonZeroU32::MIN);
                (d.clone(), RateLimiter::direct(quota))
            })
            .collect();
        Self {
            global: RwLock::new(Arc::new(global_limiter(rate, burst))),
            rate: std::sync::atomic::AtomicU32::new(rate.get()),
            burst,
            domains,
            cooldown,
            cooling: Mutex::new(HashMap::new()),
        }
    }

    /// Changes the global rate (e.g. this worker's share of a cluster-wide rate).
    pub fn set_rate(&self, rate: NonZeroU32) {
        self.rate
            .store(rate.get(), std::sync::atomic::Ordering::Relaxed);
        let limiter = Arc::new(global_limiter(rate, self.burst.min(rate)));
        *self.global.write().unwrap_or_else(|e| e.into_inner()) = limiter;
    }

    /// The global rate in force, messages per second.
    pub fn rate(&self) -> u32 {
        self.rate.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits for the global limiter, then the recipient domain's: a throttled message waits,
    /// it is never dropped.
    pub async fn wait(&self, domain: &str) {
        let global = self
            .global
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        global.until_ready().await;
        if let Some(limiter) = self.domains.get(domain) {
            limiter.until_ready().await;
        }
    }

    /// Starts (or extends) the cool-down of a domain that asked us to slow down.
    pub fn throttled(&self, domain: &str) {
        let until = Instant::now() + self.cooldown;
        self.cooling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(domain.to_owned(), until);
    }

    /// How long a domain is still cooling down, if it is.
    pub fn cooling(&self, domain: &str) -> Option<Duration> {
        let mut map = self.cooling.lock().unwrap_or_else(|e| e.into_inner());
        let until = *map.get(domain)?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            map.remove(domain);
            None
        } else {
            Some(left)
        }
    }
}

fn global_limiter(rate: NonZeroU32, burst: NonZeroU32) -> DefaultDirectRateLimiter {
    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_throttled_domain_cools_down_and_recovers() {
        let n = NonZeroU32::new(1000).expect("nonzero");
        let limits = Limits::new(n, n, &[], Duration::from_millis(50));
        assert_eq!(limits.cooling("slow.example"), None);
        limits.throttled("slow.example");
        assert!(limits.cooling("slow.example").is_some());
        assert_eq!(limits.cooling("other.example"), None);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(limits.cooling("slow.example"), None);
    }

    /// Break (b): every domain paced at the slow domain's limit. A domain without a limit of
    /// its own goes at the global rate, however slow another domain is held.
    #[tokio::test]
    async fn a_fast_domain_is_not_held_to_a_slow_domains_rate() {
        let n = NonZeroU32::new(10_000).expect("nonzero");
        let slow_rate = NonZeroU32::new(5).expect("nonzero");
        let limits = Limits::new(
            n,
            n,
            &[("slow.example".to_owned(), slow_rate)],
            Duration::from_secs(60),
        );
        // The slow domain is paced: its second message waits about 200 ms.
        let started = std::time::Instant::now();
        limits.wait("slow.example").await;
        limits.wait("slow.example").await;
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "slow.example is held to 5/s: {:?}",
            started.elapsed()
        );
        // Twenty to a fast domain right after: at 5/s they would take four seconds.
        let started = std::time::Instant::now();
        for _ in 0..20 {
            limits.wait("fast.example").await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "fast.example was held to the slow domain's rate: {:?}",
            started.elapsed()
        );
    }
}
