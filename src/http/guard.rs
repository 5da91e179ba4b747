//! What guards the admin surfaces besides the sessions (`service::sessions`, in the
//! database): the same-origin check of forms, the throttle on wrong admin tokens, and the
//! bearer scheme.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap, header};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Wrong admin tokens one client address may try per minute before it gets 429.
pub const FAILURES_PER_MINUTE: u32 = 10;
/// Wrong admin tokens all clients together may try per minute (many addresses, one attacker).
pub const GLOBAL_FAILURES_PER_MINUTE: u32 = 100;

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 9110 §11.1), so `bearer` and `BEARER` work too.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The client's address as the connection says (no proxy headers are trusted).
pub fn client_ip(extensions: &Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// Whether a form post comes from the dashboard's own pages: its `Origin` is the configured
/// public URL's origin; where the browser says `Origin: null` (it does for every form post
/// from a page whose referrer policy is `no-referrer`, as Squeeze's are) or nothing, its
/// `Sec-Fetch-Site` must say `same-origin` (or `none`: typed by the user). A client that
/// sends neither header is no browser, and no other site can make it post; the CSRF token
/// still has to match.
pub fn same_origin(headers: &HeaderMap, public_origin: &str) -> bool {
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("?"));
    if let Some(origin) = origin.filter(|o| *o != "null") {
        return origin.eq_ignore_ascii_case(public_origin);
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) => site == "same-origin" || site == "none",
        None => origin.is_none(),
    }
}

/// Counts wrong admin tokens (dashboard logins, bearer tokens) per client address and in
/// all; past either limit every attempt, right or wrong, is answered 429 until the limiter
/// lets one through again, so a correct guess cannot hide among refused ones.
pub struct Throttle {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    global: DefaultDirectRateLimiter,
    blocked: Mutex<Blocked>,
}

#[derive(Default)]
struct Blocked {
    per_ip: HashMap<IpAddr, Instant>,
    global: Option<Instant>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(
            NonZeroU32::new(FAILURES_PER_MINUTE).unwrap_or(NonZeroU32::MIN),
            NonZeroU32::new(GLOBAL_FAILURES_PER_MINUTE).unwrap_or(NonZeroU32::MIN),
        )
    }
}

fn seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

impl Throttle {
    pub fn new(per_ip: NonZeroU32, global: NonZeroU32) -> Self {
        Self {
            per_ip: RateLimiter::keyed(Quota::per_minute(per_ip)),
            global: RateLimiter::direct(Quota::per_minute(global)),
            blocked: Mutex::new(Blocked::default()),
        }
    }

    /// `Err(seconds to wait)` while `ip` (or everyone) is over the limit.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let until = [blocked.per_ip.get(&ip).copied(), blocked.global]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .max();
        match until {
            Some(t) => Err(seconds(t - now)),
            None => Ok(()),
        }
    }

    /// Records a wrong token from `ip`; `Err(seconds to wait)` when it is one too many.
    pub fn failed(&self, ip: IpAddr) -> Result<(), u64> {
        let clock = DefaultClock::default();
        let per_ip = self
            .per_ip
            .check_key(&ip)
            .map_err(|n| n.wait_time_from(clock.now()));
        let global = self
            .global
            .check()
            .map_err(|n| n.wait_time_from(clock.now()));
        if self.per_ip.len() > 10_000 {
            self.per_ip.retain_recent();
        }
        if per_ip.is_ok() && global.is_ok() {
            return Ok(());
        }
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        blocked.per_ip.retain(|_, t| *t > now);
        let mut wait = Duration::ZERO;
        if let Err(w) = per_ip {
            blocked.per_ip.insert(ip, now + w);
            wait = wait.max(w);
        }
        if let Err(w) = global {
            blocked.global = Some(now + w);
            wait = wait.max(w);
        }
        Err(seconds(wait))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for (value, expected) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearerabc", None),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&h), expected, "{value}");
        }
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn only_the_public_origin_may_post() {
        let origin = "https://news.example.com";
        let with = |name: &'static str, value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            h
        };
        assert!(same_origin(&with("origin", origin), origin));
        assert!(!same_origin(
            &with("origin", "https://news.example.com:8443"),
            origin
        ));
        assert!(!same_origin(&with("origin", "null"), origin));
        let mut null_same_origin = with("origin", "null");
        null_same_origin.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&null_same_origin, origin), "no-referrer pages");
        let mut null_cross = with("origin", "null");
        null_cross.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&null_cross, origin));
        assert!(same_origin(&with("sec-fetch-site", "same-origin"), origin));
        assert!(!same_origin(&with("sec-fetch-site", "same-site"), origin));
        assert!(!same_origin(&with("sec-fetch-site", "cross-site"), origin));
        assert!(same_origin(&HeaderMap::new(), origin), "not a browser");
    }

    #[test]
    fn the_eleventh_failure_in_a_minute_is_throttled_and_then_blocks_every_attempt() {
        let t = Throttle::default();
        let ip = IpAddr::from([192, 0, 2, 1]);
        for i in 0..FAILURES_PER_MINUTE {
            assert_eq!(t.check(ip), Ok(()), "attempt {i}");
            assert_eq!(t.failed(ip), Ok(()), "failure {i}");
        }
        let wait = t.failed(ip).expect_err("the 11th failure");
        assert!((1..=6).contains(&wait), "{wait}");
        assert!(t.check(ip).is_err(), "blocked, right token or not");
        assert_eq!(t.check(IpAddr::from([192, 0, 2, 2])), Ok(()), "others");
    }

    #[test]
    fn many_addresses_together_reach_the_global_ceiling() {
        let t = Throttle::new(
            NonZeroU32::new(10).expect("10"),
            NonZeroU32::new(5).expect("5"),
        );
        for i in 0..5u8 {
            assert_eq!(t.failed(IpAddr::from([198, 51, 100, i])), Ok(()));
        }
        assert!(t.failed(IpAddr::from([198, 51, 100, 9])).is_err());
        assert!(t.check(IpAddr::from([203, 0, 113, 1])).is_err(), "everyone");
    }
}
